"""Fetch a prior from the registry and verify it before anything uses it.

Order of checks (each failure raises :class:`PriorRejected` with the reason):

1. the manifest bytes carry a valid Ed25519 signature under the *configured* public key
   (never a key fetched from the registry);
2. the manifest names the family (and version) asked for;
3. the weights' sha256 equals the signed manifest's ``weights_sha256``;
4. :func:`~twinstream.models.prior.load_prior` accepts the artifact against the
   learner's feature schema (schema, array names and shapes).

Only then is the artifact written to its final place in the local cache
(``<cache>/<family>/<version>/``), so a half-downloaded or rejected prior is never
found there. Network I/O (:class:`RegistryClient`) is separate from the checks
(:func:`verify_and_install`), which tests drive with bytes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx

from twinstream.federation.signing import SignatureError, verify
from twinstream.models.prior import FleetPrior, PriorMismatchError, load_prior
from twinstream.schemas.prior import MANIFEST_FILE, FeatureSchema, PriorManifest


class PriorRejected(Exception):
    """A downloaded prior failed verification; the caller keeps its current prior."""


class RegistryUnavailable(Exception):
    """The registry could not be reached or answered with an error."""


@dataclass(frozen=True)
class Download:
    manifest_bytes: bytes
    signature: str
    weights: bytes


def verify_and_install(
    download: Download,
    public_key: str,
    family: str,
    expected_schema: FeatureSchema | None,
    cache_dir: Path,
    version: str | None = None,
) -> FleetPrior:
    """Verify a downloaded prior, place it in ``cache_dir`` and return it loaded."""
    try:
        verify(public_key, download.manifest_bytes, download.signature)
    except SignatureError as exc:
        raise PriorRejected(f"signature check failed: {exc}") from None
    try:
        manifest = PriorManifest.model_validate_json(download.manifest_bytes)
    except ValueError as exc:
        raise PriorRejected(f"manifest is not a PriorManifest: {exc}") from None
    if manifest.family != family or (version is not None and manifest.version != version):
        raise PriorRejected(f"manifest is {manifest.family}/{manifest.version}, asked for {family}/{version or 'latest'}")
    actual = hashlib.sha256(download.weights).hexdigest()
    if actual != manifest.weights_sha256:
        raise PriorRejected(f"weights sha256 mismatch: downloaded {actual}, signed manifest says {manifest.weights_sha256}")
    final = Path(cache_dir) / manifest.family / manifest.version
    if not (final / MANIFEST_FILE).is_file() or (final / MANIFEST_FILE).read_bytes() != download.manifest_bytes:
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".download-", dir=final.parent))
        try:
            (staging / manifest.weights_file).write_bytes(download.weights)
            (staging / MANIFEST_FILE).write_bytes(download.manifest_bytes)
            (staging / "signature.json").write_text(json.dumps({"algorithm": "ed25519", "signature": download.signature}) + "\n")
            try:
                load_prior(staging, expected_schema, cache=False)
            except (PriorMismatchError, ValueError, OSError, KeyError) as exc:
                raise PriorRejected(str(exc).replace(str(staging.resolve()), f"{manifest.family}/{manifest.version}")) from None
            if final.exists():
                shutil.rmtree(final)
            staging.rename(final)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    try:
        return load_prior(final, expected_schema)
    except (PriorMismatchError, ValueError, OSError, KeyError) as exc:
        raise PriorRejected(str(exc)) from None


class RegistryClient:
    """Reads priors from a registry over HTTP (``httpx``); errors become :class:`RegistryUnavailable`."""

    def __init__(self, base_url: str, timeout_s: float = 5.0, transport: httpx.BaseTransport | None = None) -> None:
        self.http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_s, transport=transport)

    def close(self) -> None:
        self.http.close()

    def _get(self, path: str, missing_ok: bool = False) -> httpx.Response | None:
        try:
            response = self.http.get(path)
        except httpx.HTTPError as exc:
            raise RegistryUnavailable(f"GET {self.http.base_url}{path}: {type(exc).__name__}: {exc}") from None
        if missing_ok and response.status_code == 404:
            return None
        if response.status_code != 200:
            raise RegistryUnavailable(f"GET {self.http.base_url}{path}: HTTP {response.status_code} {response.text[:200]}")
        return response

    def latest_manifest(self, family: str) -> tuple[bytes, PriorManifest] | None:
        """The latest manifest's bytes (unverified: used only to decide whether to download); None if none is published."""
        response = self._get(f"/v1/priors/{family}/latest", missing_ok=True)
        if response is None:
            return None
        raw = response.content
        try:
            return raw, PriorManifest.model_validate_json(raw)
        except ValueError as exc:
            raise PriorRejected(f"latest manifest of {family} is not a PriorManifest: {exc}") from None

    def _content(self, path: str) -> httpx.Response:
        response = self._get(path)
        assert response is not None
        return response

    def download(self, family: str, version: str) -> Download:
        manifest = self._content(f"/v1/priors/{family}/{version}").content
        signature = self._content(f"/v1/priors/{family}/{version}/signature").json().get("signature", "")
        weights = self._content(f"/v1/priors/{family}/{version}/weights").content
        return Download(manifest, str(signature), weights)
