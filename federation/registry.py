"""The prior registry (FastAPI): twins read priors, publishers with a token add versions.

Endpoints (OpenAPI at ``/openapi.json``, docs at ``/docs``):

* ``GET  /v1/priors/{family}/latest`` — manifest of the version published last
* ``GET  /v1/priors/{family}/{version}`` — manifest
* ``GET  /v1/priors/{family}/{version}/weights`` — the weights file
* ``GET  /v1/priors/{family}/{version}/signature`` — ``{"algorithm", "signature", "public_key", ...}``
* ``GET  /v1/priors/{family}`` — versions, oldest first
* ``GET  /v1/public-key`` — the registry's Ed25519 public key (for operators; twins
  must be configured with it out of band, trusting a key fetched from the server
  would prove nothing)
* ``POST /v1/priors/{family}`` and ``PUT /v1/priors/{family}/{version}`` — publish
  (``Authorization: Bearer <token>``; 401 without a valid token, 409 for a version
  that exists, 422 for an invalid upload)

Manifest responses are the exact stored bytes that were signed; the signature is also
sent in the ``X-Prior-Signature`` header.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from fastapi import Depends, FastAPI, HTTPException, Response, status
from fastapi.responses import FileResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from twinstream.federation.store import InvalidPrior, PriorStore, StoredPrior, VersionExists
from twinstream.schemas.prior import PriorManifest

SIGNATURE_HEADER = "X-Prior-Signature"


class PublishRequest(BaseModel):
    """A prior to publish: its manifest and the weights file's bytes in base64."""

    manifest: PriorManifest
    weights_base64: str = Field(description="Base64 of the weights file named by manifest.weights_file.")


class PublishResponse(BaseModel):
    family: str
    version: str
    prior_version: str
    signature: str
    sequence: int


def create_registry_app(store: PriorStore, publish_token: str | None, max_upload_bytes: int = 64 * 1024 * 1024) -> FastAPI:
    """The registry app over ``store``; publishing is refused (401) for everyone when ``publish_token`` is empty."""
    app = FastAPI(title="twinstream prior registry", version="1")
    bearer = HTTPBearer(auto_error=False)

    def require_token(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:  # noqa: B008
        given = credentials.credentials if credentials is not None else ""
        if not publish_token or not given or not hmac.compare_digest(given.encode(), publish_token.encode()):
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "a valid bearer token is required to publish",
                                headers={"WWW-Authenticate": "Bearer"})

    def found(prior: StoredPrior | None, family: str, version: str) -> StoredPrior:
        if prior is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no prior {family} version {version}")
        return prior

    def manifest_response(prior: StoredPrior) -> Response:
        return Response(prior.manifest_bytes, media_type="application/json",
                        headers={SIGNATURE_HEADER: str(prior.signature["signature"])})

    def publish(family: str, version: str | None, body: PublishRequest) -> PublishResponse:
        if body.manifest.family != family or (version is not None and body.manifest.version != version):
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                                f"manifest says {body.manifest.family}/{body.manifest.version}, the URL says {family}/{version or '*'}")
        try:
            weights = base64.b64decode(body.weights_base64, validate=True)
        except (binascii.Error, ValueError):
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "weights_base64 is not base64") from None
        if len(weights) > max_upload_bytes:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"weights larger than {max_upload_bytes} bytes")
        try:
            stored = store.publish(body.manifest, weights)
        except VersionExists as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
        except InvalidPrior as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
        manifest = stored.manifest
        return PublishResponse(family=manifest.family, version=manifest.version, prior_version=manifest.prior_version,
                               signature=str(stored.signature["signature"]), sequence=int(stored.signature["sequence"]))

    @app.get("/v1/public-key")
    def public_key() -> dict[str, str]:
        return {"algorithm": "ed25519", "public_key": store.public_key}

    @app.get("/v1/priors/{family}")
    def list_versions(family: str) -> dict[str, object]:
        return {"family": family, "versions": [p.version for p in store.versions(family)]}

    @app.get("/v1/priors/{family}/latest", response_class=Response,
             responses={200: {"content": {"application/json": {}}, "description": "The manifest (signed bytes)."}})
    def latest(family: str) -> Response:
        return manifest_response(found(store.latest(family), family, "latest"))

    @app.get("/v1/priors/{family}/{version}", response_class=Response,
             responses={200: {"content": {"application/json": {}}, "description": "The manifest (signed bytes)."}})
    def manifest(family: str, version: str) -> Response:
        return manifest_response(found(store.get(family, version), family, version))

    @app.get("/v1/priors/{family}/{version}/signature")
    def signature(family: str, version: str) -> dict[str, object]:
        return found(store.get(family, version), family, version).signature

    @app.get("/v1/priors/{family}/{version}/weights", response_class=FileResponse)
    def weights(family: str, version: str) -> FileResponse:
        prior = found(store.get(family, version), family, version)
        return FileResponse(prior.weights_path, media_type="application/octet-stream", filename=prior.weights_path.name)

    @app.post("/v1/priors/{family}", status_code=status.HTTP_201_CREATED, dependencies=[Depends(require_token)])
    def publish_post(family: str, body: PublishRequest) -> PublishResponse:
        return publish(family, None, body)

    @app.put("/v1/priors/{family}/{version}", status_code=status.HTTP_201_CREATED, dependencies=[Depends(require_token)])
    def publish_put(family: str, version: str, body: PublishRequest) -> PublishResponse:
        return publish(family, version, body)

    return app
