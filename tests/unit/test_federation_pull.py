"""Prior hot swap without a broker: the pure swap, then the puller against a registry
served by FastAPI's TestClient (and one that is down)."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient
from federation_support import publish_body, variant, write_artifact

from twinstream.federation.client import RegistryClient
from twinstream.federation.registry import create_registry_app
from twinstream.federation.signing import generate_private_key, public_key_b64
from twinstream.federation.store import PriorStore
from twinstream.models.features import RulFeatures
from twinstream.models.prior import PriorMismatchError, load_prior
from twinstream.models.prior_twin import PriorTwin, clear_active_priors, hot_swap
from twinstream.settings import Settings
from twinstream.streams.metrics import WorkerMetrics
from twinstream.streams.prior_pull import PriorPuller, puller_for_worker
from twinstream.streams.processor import Record, TwinProcessor

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
TOKEN = "tok"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(autouse=True)
def _no_active_priors():
    clear_active_priors()
    yield
    clear_active_priors()


def event(i: int) -> dict[str, float]:
    return {"s2": 642.0 + 0.01 * i, "s3": 1590.0 + 0.1 * i, "s4": 1405.0 + 0.1 * i, "age": float(i)}


def trained_learner(n: int = 30) -> PriorTwin:
    learner = PriorTwin()
    for i in range(n):
        x = learner.observe_one(event(i))
        learner.learn_one(x, 120.0 - i)
    return learner


def personal_state(learner: PriorTwin) -> bytes:
    state = learner.__getstate__()
    state.pop("cap")
    return json.dumps({k: repr(v) for k, v in sorted(state.items())}).encode()


def test_swap_changes_the_prior_and_keeps_personal_state(tmp_path: Path) -> None:
    learner = trained_learner()
    before = personal_state(learner)
    new = load_prior(write_artifact(tmp_path / "v10", *variant("10", shift=5.0)), RulFeatures().schema())
    x = event(30)
    old_prediction = PriorTwin.restore(learner.snapshot()).predict_one(PriorTwin.restore(learner.snapshot()).observe_one(x))
    assert learner.prior_version == "rul-mlp-v2"
    assert hot_swap([learner, object()], new) == 1
    assert learner.prior_version == "rul-mlp-v10"
    assert personal_state(learner) == before  # feature state, own model, residuals, drift, label count
    assert learner.predict_one(learner.observe_one(x)) != old_prediction
    # a twin restored from its stored state (which names only its configured prior) follows the swap
    assert PriorTwin.restore(learner.snapshot()).prior_version == "rul-mlp-v10"
    assert PriorTwin().prior_version == "rul-mlp-v10"


def test_swap_with_another_feature_schema_touches_no_twin(tmp_path: Path) -> None:
    manifest, weights = variant("11")
    schema = manifest.feature_schema.model_copy(update={"params": {**manifest.feature_schema.params, "fast_span": 3}})
    other = load_prior(write_artifact(tmp_path / "v11", manifest.model_copy(update={"feature_schema": schema}), weights))
    learner = trained_learner(5)
    with pytest.raises(PriorMismatchError, match="fast_span"):
        hot_swap([learner], other)
    assert learner.prior_version == "rul-mlp-v2"
    assert PriorTwin().prior_version == "rul-mlp-v2"


def telemetry(entity: str, seq: int) -> bytes:
    return orjson.dumps({"entity_id": entity, "event_time": (NOW - timedelta(minutes=1)).isoformat(), "seq": seq,
                         "metrics": event(seq)})


class Setup:
    def __init__(self, tmp_path: Path) -> None:
        self.key = generate_private_key()
        self.registry = TestClient(create_registry_app(PriorStore(tmp_path / "registry", self.key), TOKEN))
        self.table: dict[str, bytes] = {}
        self.metrics = WorkerMetrics()
        self.processor = TwinProcessor(Settings(twins_spec="none"), self.table.get, self.metrics, clock=lambda: NOW)
        self.offset = 0
        self.puller = self.make_puller(tmp_path, RegistryClient("http://registry", transport=self.registry._transport))

    def make_puller(self, tmp_path: Path, client: RegistryClient) -> PriorPuller:
        return PriorPuller(client, public_key_b64(self.key), "rul-mlp", RulFeatures().schema(), "2", tmp_path / "cache",
                           lambda: (t.learner for t in self.processor.twins.values()), self.metrics, asyncio.Lock())

    def feed(self, entity: str, seq: int) -> dict:
        self.offset += 1
        out = self.processor.process([Record(entity.encode(), telemetry(entity, seq), "t", 0, self.offset)])
        return orjson.loads(out.predictions[0][1])

    def failures(self, reason: str) -> float:
        return self.metrics.registry.get_sample_value("twinstream_prior_pull_failures_total", {"reason": reason}) or 0.0


def test_poll_swaps_every_twin_and_predictions_carry_the_new_version(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    for seq in range(5):
        s.feed("e1", seq)
        s.feed("e2", seq)
    assert s.feed("e1", 5)["prior_version"] == "rul-mlp-v2"
    asyncio.run(s.puller.poll())  # registry has no prior yet: nothing to do, not a failure
    assert s.failures("unavailable") == 0 and s.puller.prior_version == "rul-mlp-v2"
    s.registry.put("/v1/priors/rul-mlp/3", json=publish_body(*variant("3", shift=4.0)), headers=AUTH)
    updates = {e: s.processor.twins[e].updates for e in ("e1", "e2")}
    asyncio.run(s.puller.poll())
    assert {e: s.processor.twins[e].updates for e in ("e1", "e2")} == updates  # the swap applies no update
    assert s.puller.prior_version == "rul-mlp-v3"
    assert s.metrics.registry.get_sample_value("twinstream_prior_swaps_total") == 1
    p1, p2 = s.feed("e1", 6), s.feed("e2", 5)
    assert (p1["prior_version"], p2["prior_version"]) == ("rul-mlp-v3", "rul-mlp-v3")
    assert (p1["updates"], p2["updates"]) == (updates["e1"] + 1, updates["e2"] + 1)
    assert s.feed("e3", 0)["prior_version"] == "rul-mlp-v3"  # a new twin starts on the pulled prior
    asyncio.run(s.puller.poll())  # same latest version: nothing to do
    assert s.metrics.registry.get_sample_value("twinstream_prior_swaps_total") == 1


def test_tampered_prior_is_refused_with_a_log_line_and_the_old_prior_is_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = Setup(tmp_path)
    s.feed("e1", 0)
    s.registry.put("/v1/priors/rul-mlp/3", json=publish_body(*variant("3")), headers=AUTH)
    stored = next((tmp_path / "registry" / "rul-mlp" / "3").glob("*.npz"))
    data = stored.read_bytes()
    stored.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    with caplog.at_level(logging.ERROR, logger="twinstream.streams.prior_pull"):
        asyncio.run(s.puller.poll())
    assert "REFUSED prior, keeping prior rul-mlp-v2: rul-mlp-v3: weights sha256 mismatch" in caplog.text
    assert s.failures("rejected") == 1
    assert s.feed("e1", 1)["prior_version"] == "rul-mlp-v2"
    assert not (tmp_path / "cache" / "rul-mlp" / "3").exists()
    asyncio.run(s.puller.poll())  # the refused version is not downloaded again
    assert s.failures("rejected") == 1


def test_prior_signed_by_another_key_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = Setup(tmp_path)
    s.puller.public_key = public_key_b64(generate_private_key())
    s.registry.put("/v1/priors/rul-mlp/3", json=publish_body(*variant("3")), headers=AUTH)
    with caplog.at_level(logging.ERROR, logger="twinstream.streams.prior_pull"):
        asyncio.run(s.puller.poll())
    assert "signature check failed" in caplog.text
    assert s.failures("rejected") == 1 and s.puller.prior_version == "rul-mlp-v2"


def test_registry_down_keeps_the_prior_and_never_raises(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = Setup(tmp_path)
    s.puller = s.make_puller(tmp_path, RegistryClient("http://127.0.0.1:9", timeout_s=0.5))  # nothing listens on port 9
    s.feed("e1", 0)
    with caplog.at_level(logging.WARNING, logger="twinstream.streams.prior_pull"):
        asyncio.run(s.puller.poll())
        asyncio.run(s.puller.poll())
    assert "registry unavailable, keeping prior rul-mlp-v2" in caplog.text
    assert s.failures("unavailable") == 2
    assert s.feed("e1", 1)["prior_version"] == "rul-mlp-v2"


def test_puller_for_worker_follows_the_learners_prior_family(tmp_path: Path) -> None:
    processor = TwinProcessor(Settings(), {}.get)
    assert puller_for_worker(Settings(), processor, WorkerMetrics(), None) is None  # no registry URL
    settings = Settings(prior_registry_url="http://127.0.0.1:9", data_dir=tmp_path)
    puller = puller_for_worker(settings, processor, WorkerMetrics(), None)
    assert puller is not None and (puller.family, puller.prior_version) == ("rul-mlp", "rul-mlp-v2")
    assert puller.cache_dir == tmp_path / "priors"
    river = Settings(prior_registry_url="http://127.0.0.1:9", learner="river-linear")
    assert puller_for_worker(river, processor, WorkerMetrics(), None) is None


def test_overlapping_polls_swap_once(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    s.feed("e1", 0)
    s.registry.put("/v1/priors/rul-mlp/3", json=publish_body(*variant("3")), headers=AUTH)

    async def both() -> None:
        await asyncio.gather(s.puller.poll(), s.puller.poll())  # start-up task and timer at once

    asyncio.run(both())
    assert s.metrics.registry.get_sample_value("twinstream_prior_swaps_total") == 1
    assert s.feed("e1", 1)["prior_version"] == "rul-mlp-v3"
