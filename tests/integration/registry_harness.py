"""The prior registry under uvicorn in a thread, and telemetry for one engine: shared by the prior-pull tests."""

from __future__ import annotations

import base64
import json
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import uvicorn
from worker_harness import wait_until

from twinstream.broker import free_port
from twinstream.federation.registry import create_registry_app
from twinstream.federation.signing import generate_private_key
from twinstream.federation.store import PriorStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))  # shared prior-variant helper
from federation_support import variant  # noqa: E402

TOKEN = "integration-token"


class RegistryThread:
    def __init__(self, root: Path, token: str = TOKEN) -> None:
        self.key = generate_private_key()
        self.port = free_port()
        app = create_registry_app(PriorStore(root, self.key), token)
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> RegistryThread:
        self.thread.start()
        wait_until(lambda: self.server.started, 15, "the registry to listen")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def publish(self, version: str, shift: float) -> None:
        manifest, weights = variant(version, shift=shift)
        body = {"manifest": manifest.model_dump(mode="json"), "weights_base64": base64.b64encode(weights).decode()}
        response = httpx.put(f"{self.url}/v1/priors/rul-mlp/{version}", json=body,
                             headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        assert response.status_code == 201, response.text

    def versions(self, family: str = "rul-mlp") -> list[str]:
        response = httpx.get(f"{self.url}/v1/priors/{family}", timeout=10)
        return list(response.json()["versions"]) if response.status_code == 200 else []


def telemetry(seq: int, entity: str = "engine-1") -> bytes:
    return json.dumps({
        "entity_id": entity,
        "event_time": (datetime.now(UTC) - timedelta(seconds=5)).isoformat(),
        "seq": seq,
        "metrics": {"s2": 642.0 + 0.01 * seq, "s3": 1590.0 + 0.1 * seq, "s4": 1405.0 + 0.1 * seq},
    }).encode()


def assert_swapped_v2_to_v3(values: list[dict]) -> None:
    """Predictions of seqs 0-9 of one entity, prior swapped after seq 4: versions switch, twin state carries on."""
    assert [v["seq"] for v in values] == list(range(10))
    assert {v["prior_version"] for v in values[:5]} == {"rul-mlp-v2"}
    assert {v["prior_version"] for v in values[5:]} == {"rul-mlp-v3"}
    updates = [v["updates"] for v in values]
    assert updates == list(range(updates[0], updates[0] + 10)), f"update count not continuous across the swap: {updates}"
