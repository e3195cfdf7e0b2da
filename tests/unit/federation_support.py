"""Helpers for the federation tests: prior variants built from the bundled prior."""

from __future__ import annotations

import base64
import hashlib
import io
from pathlib import Path

import numpy as np

from twinstream.models.prior import bundled_prior_dir
from twinstream.schemas.prior import MANIFEST_FILE, PriorManifest


def variant(version: str, shift: float = 0.0) -> tuple[PriorManifest, bytes]:
    """The bundled prior as ``version``, its prior head's output bias shifted by ``shift``."""
    source = bundled_prior_dir()
    manifest = PriorManifest.model_validate_json((source / MANIFEST_FILE).read_bytes())
    with np.load(source / manifest.weights_file, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["prior_b2"] = arrays["prior_b2"] + shift
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    weights = buffer.getvalue()
    manifest = manifest.model_copy(update={"version": version, "weights_sha256": hashlib.sha256(weights).hexdigest()})
    return manifest, weights


def publish_body(manifest: PriorManifest, weights: bytes) -> dict:
    return {"manifest": manifest.model_dump(mode="json"), "weights_base64": base64.b64encode(weights).decode()}


def write_artifact(directory: Path, manifest: PriorManifest, weights: bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MANIFEST_FILE).write_text(manifest.model_dump_json())
    (directory / manifest.weights_file).write_bytes(weights)
    return directory
