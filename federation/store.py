"""The registry's storage: a directory tree that survives restarts, versions immutable.

Layout::

    <root>/<family>/<version>/manifest.json   # the exact bytes that are signed and served
    <root>/<family>/<version>/<weights_file>  # as uploaded; sha256 = manifest.weights_sha256
    <root>/<family>/<version>/signature.json  # {"algorithm", "signature", "public_key", "sequence", "published"}

A version is written to a temporary directory inside ``<root>`` and renamed into place:
a reader never sees half a version, and a second publish of the same version fails
(:class:`VersionExists`) whatever its content. "Latest" is the version published last
(highest ``sequence``), not the highest version string.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from twinstream.federation.signing import ALGORITHM, public_key_b64, sign
from twinstream.models.prior import PriorMismatchError, load_prior, sha256_file
from twinstream.schemas.prior import MANIFEST_FILE, PriorManifest

SIGNATURE_FILE = "signature.json"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class VersionExists(Exception):
    """The version was published before; versions are immutable."""


class InvalidPrior(ValueError):
    """An upload is not a usable prior (names, digest, weights)."""


@dataclass(frozen=True)
class StoredPrior:
    family: str
    version: str
    directory: Path
    manifest_bytes: bytes
    signature: dict[str, object]

    @property
    def manifest(self) -> PriorManifest:
        return PriorManifest.model_validate_json(self.manifest_bytes)

    @property
    def weights_path(self) -> Path:
        return self.directory / self.manifest.weights_file


def check_name(kind: str, value: str) -> str:
    if not NAME_PATTERN.match(value) or value in (".", "..") or (kind == "version" and value == "latest"):
        raise InvalidPrior(f"{kind} {value!r} must match {NAME_PATTERN.pattern}")
    return value


class PriorStore:
    """Published priors under ``root``, each signed with ``key`` when published."""

    def __init__(self, root: Path, key: Ed25519PrivateKey) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.key = key
        self.public_key = public_key_b64(key)
        self._lock = threading.Lock()

    def publish(self, manifest: PriorManifest, weights: bytes) -> StoredPrior:
        """Verify, sign and store a new version; :class:`VersionExists` if it was published before."""
        family, version = check_name("family", manifest.family), check_name("version", manifest.version)
        final = self.root / family / version
        if final.exists():
            raise VersionExists(f"{family} version {version} already published; versions are immutable")
        manifest_bytes = manifest.model_dump_json(indent=2).encode()
        staging = Path(tempfile.mkdtemp(prefix=".upload-", dir=self.root))
        try:
            (staging / manifest.weights_file).write_bytes(weights)
            (staging / MANIFEST_FILE).write_bytes(manifest_bytes)
            actual = sha256_file(staging / manifest.weights_file)
            if actual != manifest.weights_sha256:
                raise InvalidPrior(f"weights sha256 is {actual}, manifest says {manifest.weights_sha256}")
            try:
                load_prior(staging, cache=False)  # the weights must load as a prior of the manifest's shape
            except (PriorMismatchError, ValueError, OSError, KeyError) as exc:
                raise InvalidPrior(f"weights do not load as a prior: {exc}") from None
            with self._lock:
                if final.exists():
                    raise VersionExists(f"{family} version {version} already published; versions are immutable")
                signature = {
                    "algorithm": ALGORITHM,
                    "signature": sign(self.key, manifest_bytes),
                    "public_key": self.public_key,
                    "sequence": self._next_sequence(family),
                    "published": datetime.now(UTC).isoformat(),
                }
                (staging / SIGNATURE_FILE).write_text(json.dumps(signature, indent=2) + "\n")
                final.parent.mkdir(parents=True, exist_ok=True)
                staging.rename(final)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return self.get(family, version)

    def _next_sequence(self, family: str) -> int:
        return max((int(p.signature["sequence"]) for p in self.versions(family)), default=0) + 1

    def get(self, family: str, version: str) -> StoredPrior | None:
        try:
            directory = self.root / check_name("family", family) / check_name("version", version)
        except InvalidPrior:
            return None
        manifest_path, signature_path = directory / MANIFEST_FILE, directory / SIGNATURE_FILE
        if not (manifest_path.is_file() and signature_path.is_file()):
            return None
        return StoredPrior(family, version, directory, manifest_path.read_bytes(), json.loads(signature_path.read_text()))

    def versions(self, family: str) -> list[StoredPrior]:
        """Every published version of ``family``, oldest first."""
        try:
            base = self.root / check_name("family", family)
        except InvalidPrior:
            return []
        if not base.is_dir():
            return []
        found = [p for p in (self.get(family, d.name) for d in base.iterdir() if d.is_dir()) if p is not None]
        return sorted(found, key=lambda p: int(p.signature["sequence"]))

    def latest(self, family: str) -> StoredPrior | None:
        versions = self.versions(family)
        return versions[-1] if versions else None

