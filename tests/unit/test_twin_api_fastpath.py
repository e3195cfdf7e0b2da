"""The fast path answers plain summary requests exactly as the full API does, and hands everything else to it."""

from __future__ import annotations

import asyncio

import httpx
from test_twin_api_http import one_twin

from twinstream.streams.api.fastpath import TwinFastPath
from twinstream.streams.api.feed import PredictionFeed
from twinstream.streams.api.http import build_api
from twinstream.streams.api.summary import join_summary

PREDICTION = {
    "entity_id": "e1",
    "seq": 0,
    "task": "label",
    "target": "rul",
    "value": 2.5,
    "lower": 1.0,
    "upper": 4.0,
    "measured": 3.0,
    "event_time": "2026-01-01T00:00:00Z",
    "in_domain": True,
}


def replies(token: str, requests: list[tuple[str, dict]], fast: bool) -> tuple[list[httpx.Response], list[tuple]]:
    directory = one_twin()
    feed = PredictionFeed("127.0.0.1:1", "t")
    feed.add(PREDICTION)
    recorded: list[tuple] = []
    record = lambda *r: recorded.append(r)  # noqa: E731
    api = build_api(directory, feed, token=token, record=record)

    def summary(entity_id: str) -> dict | None:
        state = directory.state(entity_id)
        return None if state is None else join_summary(state, feed.last.get(entity_id, {}))

    app = TwinFastPath(api, directory, summary, token, record) if fast else api

    async def go() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            return [await client.get(path, headers=headers) for path, headers in requests]

    return asyncio.run(go()), recorded


def test_same_replies_with_and_without_the_fast_path() -> None:
    first, _ = replies("", [("/twins/e1", {})], fast=False)
    tag = first[0].headers["etag"]
    requests = [
        ("/twins/e1", {}),
        ("/twins/e1", {"If-None-Match": tag}),
        ("/twins/nope", {}),
        ("/twins/e1?fields=entity_id", {}),
        ("/twins/e1", {"Origin": "http://o:1"}),
        ("/twins/e1/predictions", {}),
    ]
    full, full_recorded = replies("", requests, fast=False)
    fast, fast_recorded = replies("", requests, fast=True)
    for a, b in zip(full, fast):
        assert (a.status_code, a.content, a.headers.get("etag")) == (b.status_code, b.content, b.headers.get("etag"))
        assert a.headers.get("content-type") == b.headers.get("content-type")
    assert [r.status_code for r in fast] == [200, 304, 404, 200, 200, 200]
    assert fast[0].json()["predictions"]["label:rul"]["measured"] == 3.0
    assert fast[4].headers["access-control-allow-origin"] == "*"  # handed to the full app
    assert [(r[0], r[2]) for r in fast_recorded] == [(r[0], r[2]) for r in full_recorded]


def test_token_checked_on_the_fast_path() -> None:
    requests = [
        ("/twins/e1", {"Authorization": "Bearer t0k"}),
        ("/twins/e1", {"Authorization": "bearer t0k"}),
        ("/twins/e1", {"Authorization": "Bearer nope"}),
        ("/twins/e1", {}),
        ("/twins/e1?access_token=t0k", {}),
    ]
    fast, recorded = replies("t0k", requests, fast=True)
    assert [r.status_code for r in fast] == [200, 200, 401, 401, 200]
    assert [r[2] for r in recorded] == [200, 200, 401, 401, 200]
