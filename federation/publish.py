"""Publishing a prior artifact to the registry, and choosing the next version number.

Shared by ``twinstream federation publish`` and the ServerApp (which publishes every
aggregated prior). A refused publish raises :class:`PublishError` with the registry's
status and reason: a round whose prior is not published must fail loudly, never
pretend it reached the twins.

>>> next_version(["1", "2", "x7"], floor="2")
'3'
>>> next_version([], floor="2")
'3'
"""

from __future__ import annotations

import base64
from pathlib import Path

import httpx

from twinstream.schemas.prior import MANIFEST_FILE, PriorManifest


class PublishError(RuntimeError):
    """The registry did not accept a prior (HTTP status and reason in the message)."""


def next_version(existing: list[str], floor: str = "0") -> str:
    """One more than the highest integer version among ``existing`` and ``floor`` (non-integers ignored)."""
    numbers = [int(v) for v in [*existing, floor] if v.isdigit()]
    return str(max(numbers, default=0) + 1)


def registry_versions(url: str, family: str, timeout_s: float = 30.0, http: httpx.Client | None = None) -> list[str]:
    """The family's published versions (oldest first); [] if none. Raises :class:`PublishError` if unreachable.

    ``http``: the client to use (tests pass one bound to an in-process app); default a fresh one.
    """
    try:
        response = (http or httpx).get(f"{url.rstrip('/')}/v1/priors/{family}", timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise PublishError(f"registry {url} unreachable: {type(exc).__name__}: {exc}") from None
    if response.status_code == 404:
        return []
    if response.status_code != 200:
        raise PublishError(f"GET {url}/v1/priors/{family}: HTTP {response.status_code} {response.text[:200]}")
    return [str(v) for v in response.json().get("versions", [])]


def check_publish_access(url: str, family: str, token: str, timeout_s: float = 30.0, http: httpx.Client | None = None) -> None:
    """Fail before any training when the registry would refuse this token (or is unreachable).

    Sends a publish request with an empty body: the registry checks the bearer token
    before it reads the body, so a bad token gets 401 and a good one 422 (invalid
    upload); nothing can be stored either way.
    """
    if not token:
        raise PublishError("no publish token (TWINSTREAM_REGISTRY_PUBLISH_TOKEN) in the ServerApp's (SuperLink's) environment")
    target = f"{url.rstrip('/')}/v1/priors/{family}/publish-access-check"
    try:
        response = (http or httpx).put(target, json={}, headers={"Authorization": f"Bearer {token}"}, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise PublishError(f"registry {url} unreachable: {type(exc).__name__}: {exc}") from None
    if response.status_code != 422:
        raise PublishError(f"publish access check PUT {target}: HTTP {response.status_code} {response.text[:300]}")


def publish_artifact(artifact: Path, url: str, token: str, version: str | None = None, timeout_s: float = 60.0,
                     http: httpx.Client | None = None) -> dict:
    """PUT the artifact in ``artifact`` (``manifest.json`` + weights) as ``family/version``; returns the registry's answer."""
    manifest = PriorManifest.model_validate_json((Path(artifact) / MANIFEST_FILE).read_bytes())
    if version is not None:
        manifest = manifest.model_copy(update={"version": version})
    weights = (Path(artifact) / manifest.weights_file).read_bytes()
    body = {"manifest": manifest.model_dump(mode="json"), "weights_base64": base64.b64encode(weights).decode()}
    target = f"{url.rstrip('/')}/v1/priors/{manifest.family}/{manifest.version}"
    try:
        response = (http or httpx).put(target, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise PublishError(f"PUT {target}: {type(exc).__name__}: {exc}") from None
    if response.status_code != 201:
        raise PublishError(f"PUT {target}: HTTP {response.status_code} {response.text[:300]}")
    return dict(response.json())
