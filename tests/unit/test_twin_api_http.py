"""The twin API application on its own (no broker): status codes, ETags, the token, CORS and the metrics it counts."""

from __future__ import annotations

import asyncio

import httpx

from twinstream.models.river_linear import RiverLinearTwin
from twinstream.models.twin import Twin
from twinstream.streams.api.feed import PredictionFeed
from twinstream.streams.api.http import build_api
from twinstream.streams.api.routing import Ownership, TwinDirectory
from twinstream.streams.api.summary import twin_state
from twinstream.streams.metrics import WorkerMetrics


def one_twin(rebalancing: bool = False) -> TwinDirectory:
    """A directory holding one twin, owning partition 0, with no peers."""
    twin = Twin(entity_id="e1", learner=RiverLinearTwin(), kind="k")
    twin.step(0, {"s1": 1.0}, target=3.0)
    directory = TwinDirectory("http://127.0.0.1:1", partitions=1)
    directory.set_ownership(Ownership(rebalancing=rebalancing, owned=frozenset({0}), loaded=True))
    directory.put("e1", 0, twin_state(twin, 99))
    return directory


def run(token: str, requests: list[tuple[str, dict]]) -> tuple[list[httpx.Response], WorkerMetrics, TwinDirectory]:
    directory, metrics = one_twin(), WorkerMetrics()
    feed = PredictionFeed("127.0.0.1:1", "t")
    feed.add(
        {
            "entity_id": "e1",
            "seq": 0,
            "task": "label",
            "target": "rul",
            "value": 2.5,
            "lower": 1.0,
            "upper": 4.0,
            "event_time": "2026-01-01T00:00:00Z",
            "in_domain": True,
        }
    )
    api = build_api(directory, feed, token=token, metrics=metrics)

    async def go() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://t") as client:
            return [await client.get(path, headers=headers) for path, headers in requests]

    return asyncio.run(go()), metrics, directory


def test_summary_etag_404_and_metrics() -> None:
    (ok, *_), metrics, _ = run("", [("/twins/e1", {})])
    doc = ok.json()
    assert ok.status_code == 200 and doc["predictions"]["label:rul"]["value"] == 2.5 and doc["state_bytes"] == 99
    replies, metrics, _ = run(
        "",
        [
            ("/twins/e1", {"If-None-Match": ok.headers["etag"]}),
            ("/twins/nope", {}),
            ("/twins?size=500", {}),
            ("/twins?cursor=%25%25", {}),
            ("/twins", {}),
        ],
    )
    assert [r.status_code for r in replies] == [304, 404, 400, 400, 200]
    assert "nope" in replies[1].json()["detail"]
    assert [item["entity_id"] for item in replies[4].json()["items"]] == ["e1"]
    assert metrics.api_requests.labels("/twins/{entity_id}", "GET", "404")._value.get() == 1


def test_token_and_probes_and_cors() -> None:
    replies, _, _ = run(
        "t0k",
        [
            ("/twins/e1", {}),
            ("/twins/e1", {"Authorization": "Bearer t0k"}),
            ("/twins/e1?access_token=t0k", {}),
            ("/twins/e1", {"Authorization": "Bearer nope"}),
            ("/healthz", {}),
            ("/readyz", {}),
            ("/", {}),
            ("/healthz", {"Origin": "http://127.0.0.1:9"}),
        ],
    )
    assert [r.status_code for r in replies[:7]] == [401, 200, 200, 401, 200, 200, 200]
    assert replies[0].headers["www-authenticate"] == "Bearer"
    assert "twinstream inspector" in replies[6].text
    assert replies[7].headers["access-control-allow-origin"] == "*"


def test_not_ready_while_rebalancing() -> None:
    directory, metrics = one_twin(rebalancing=True), WorkerMetrics()
    api = build_api(directory, PredictionFeed("127.0.0.1:1", "t"), metrics=metrics)

    async def go() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://t") as client:
            return [await client.get("/readyz"), await client.get("/twins/e1")]

    ready, twin = asyncio.run(go())
    assert ready.status_code == 503 and ready.json()["rebalancing"] is True
    assert twin.status_code == 503 and twin.headers["retry-after"] == "1"
