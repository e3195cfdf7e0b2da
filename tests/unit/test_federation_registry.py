"""The prior registry over FastAPI's TestClient: auth, immutability, persistence, signatures."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from federation_support import publish_body, variant

from twinstream.federation.client import Download, PriorRejected, RegistryClient, verify_and_install
from twinstream.federation.registry import SIGNATURE_HEADER, create_registry_app
from twinstream.federation.signing import generate_private_key, load_or_create_private_key, public_key_b64, verify
from twinstream.federation.store import PriorStore
from twinstream.models.features import RulFeatures
from twinstream.schemas.prior import PriorManifest

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def registry(root: Path) -> TestClient:
    key = load_or_create_private_key(root / ".signing-key")
    return TestClient(create_registry_app(PriorStore(root, key), TOKEN))


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    return registry(tmp_path / "registry")


def test_publish_requires_a_valid_bearer_token(client: TestClient, tmp_path: Path) -> None:
    body = publish_body(*variant("10"))
    assert client.put("/v1/priors/rul-mlp/10", json=body).status_code == 401
    assert client.put("/v1/priors/rul-mlp/10", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.post("/v1/priors/rul-mlp", json=body).status_code == 401
    assert client.get("/v1/priors/rul-mlp/latest").status_code == 404  # nothing was stored
    # a registry started without a token refuses every publish, even one with an empty bearer
    no_token = TestClient(create_registry_app(PriorStore(tmp_path / "other", generate_private_key()), None))
    assert no_token.put("/v1/priors/rul-mlp/10", json=body, headers={"Authorization": "Bearer "}).status_code == 401
    assert no_token.put("/v1/priors/rul-mlp/10", json=body).status_code == 401


def test_publish_then_read_manifest_weights_and_signature(client: TestClient) -> None:
    manifest, weights = variant("10", shift=1.0)
    created = client.put("/v1/priors/rul-mlp/10", json=publish_body(manifest, weights), headers=AUTH)
    assert created.status_code == 201, created.text
    assert created.json()["prior_version"] == "rul-mlp-v10"
    latest = client.get("/v1/priors/rul-mlp/latest")
    assert latest.status_code == 200
    assert PriorManifest.model_validate_json(latest.content).weights_sha256 == manifest.weights_sha256
    assert client.get("/v1/priors/rul-mlp/10").content == latest.content
    assert client.get("/v1/priors/rul-mlp/10/weights").content == weights
    public = client.get("/v1/public-key").json()["public_key"]
    signature = client.get("/v1/priors/rul-mlp/10/signature").json()["signature"]
    assert latest.headers[SIGNATURE_HEADER] == signature
    verify(public, latest.content, signature)  # raises if it does not verify
    # POST takes the version from the manifest
    assert client.post("/v1/priors/rul-mlp", json=publish_body(*variant("11")), headers=AUTH).status_code == 201
    assert PriorManifest.model_validate_json(client.get("/v1/priors/rul-mlp/latest").content).version == "11"
    assert client.get("/v1/priors/rul-mlp").json()["versions"] == ["10", "11"]


def test_versions_are_immutable(client: TestClient) -> None:
    assert client.put("/v1/priors/rul-mlp/10", json=publish_body(*variant("10")), headers=AUTH).status_code == 201
    before = client.get("/v1/priors/rul-mlp/10/weights").content
    again = client.put("/v1/priors/rul-mlp/10", json=publish_body(*variant("10", shift=3.0)), headers=AUTH)
    assert again.status_code == 409
    assert client.get("/v1/priors/rul-mlp/10/weights").content == before


def test_invalid_uploads_are_refused(client: TestClient) -> None:
    manifest, weights = variant("12")
    body = publish_body(manifest, weights)
    assert client.put("/v1/priors/rul-mlp/13", json=body, headers=AUTH).status_code == 422  # URL vs manifest
    bad = dict(body, weights_base64=base64.b64encode(weights[:-10]).decode())
    assert client.put("/v1/priors/rul-mlp/12", json=bad, headers=AUTH).status_code == 422  # sha256 mismatch
    assert client.get("/v1/priors/rul-mlp/12").status_code == 404


def test_storage_survives_a_restart(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    first = registry(root)
    first.put("/v1/priors/rul-mlp/10", json=publish_body(*variant("10")), headers=AUTH)
    first.put("/v1/priors/rul-mlp/9", json=publish_body(*variant("9")), headers=AUTH)  # published last = latest
    public = first.get("/v1/public-key").json()["public_key"]
    second = registry(root)  # a new process over the same directory
    assert second.get("/v1/public-key").json()["public_key"] == public  # same signing key
    latest = second.get("/v1/priors/rul-mlp/latest")
    assert PriorManifest.model_validate_json(latest.content).version == "9"
    verify(public, latest.content, second.get("/v1/priors/rul-mlp/9/signature").json()["signature"])
    assert second.put("/v1/priors/rul-mlp/10", json=publish_body(*variant("10")), headers=AUTH).status_code == 409


def test_openapi_is_served(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/priors/{family}/latest", "/v1/priors/{family}/{version}", "/v1/priors/{family}/{version}/weights"} <= set(paths)


def download_via(client: TestClient, version: str) -> Download:
    api = RegistryClient("http://registry", transport=client._transport)
    return api.download("rul-mlp", version)


def test_twin_side_verification_accepts_good_and_refuses_tampered(client: TestClient, tmp_path: Path) -> None:
    schema = RulFeatures().schema()
    public = client.get("/v1/public-key").json()["public_key"]
    client.put("/v1/priors/rul-mlp/10", json=publish_body(*variant("10", shift=2.0)), headers=AUTH)
    good = download_via(client, "10")
    prior = verify_and_install(good, public, "rul-mlp", schema, tmp_path / "cache", "10")
    assert prior.manifest.prior_version == "rul-mlp-v10"

    tampered_weights = Download(good.manifest_bytes, good.signature, good.weights[:-1] + bytes([good.weights[-1] ^ 1]))
    with pytest.raises(PriorRejected, match="sha256 mismatch"):
        verify_and_install(tampered_weights, public, "rul-mlp", schema, tmp_path / "cache2", "10")
    raw = base64.b64decode(good.signature)
    tampered_signature = Download(good.manifest_bytes, base64.b64encode(bytes([raw[0] ^ 1]) + raw[1:]).decode(), good.weights)
    with pytest.raises(PriorRejected, match="signature"):
        verify_and_install(tampered_signature, public, "rul-mlp", schema, tmp_path / "cache3", "10")
    doc = json.loads(good.manifest_bytes)
    doc["weights_sha256"] = "0" * 64
    with pytest.raises(PriorRejected, match="signature"):
        verify_and_install(Download(json.dumps(doc).encode(), good.signature, good.weights), public, "rul-mlp", schema,
                           tmp_path / "cache4", "10")
    other_key = public_key_b64(generate_private_key())
    with pytest.raises(PriorRejected, match="signature"):
        verify_and_install(good, other_key, "rul-mlp", schema, tmp_path / "cache5", "10")
    with pytest.raises(PriorRejected, match="feature schema mismatch"):
        verify_and_install(good, public, "rul-mlp", RulFeatures(fast_span=3).schema(), tmp_path / "cache6", "10")
    assert not (tmp_path / "cache2" / "rul-mlp" / "10").exists()  # nothing rejected is left in the cache


def test_tampered_weights_on_the_registry_disk_are_detected(client: TestClient, tmp_path: Path) -> None:
    public = client.get("/v1/public-key").json()["public_key"]
    client.put("/v1/priors/rul-mlp/10", json=publish_body(*variant("10")), headers=AUTH)
    stored = next((tmp_path / "registry" / "rul-mlp" / "10").glob("*.npz"))
    data = stored.read_bytes()
    stored.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    with pytest.raises(PriorRejected, match="sha256 mismatch"):
        verify_and_install(download_via(client, "10"), public, "rul-mlp", RulFeatures().schema(), tmp_path / "cache", "10")
