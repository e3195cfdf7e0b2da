"""The common request, answered without the framework: ``GET /twins/{entity_id}`` for a twin this worker holds.

Why: FastAPI's routing, parameter validation and middleware stack cost about as much
CPU as everything else a summary request needs, and on a worker's machine that CPU is
the twins'. This ASGI wrapper answers only the plain case (no query string, no
``Origin`` header, a valid token or none required, the twin held here, not
rebalancing) with the same body, ``ETag``, ``304`` and request metrics as the full
route; anything else, errors included, goes to the FastAPI app unchanged.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from typing import Any

import orjson

from twinstream.streams.api.routing import TwinDirectory
from twinstream.streams.api.summary import Document, etag

ROUTE = "/twins/{entity_id}"
PREFIX = "/twins/"
Recorder = Callable[[str, str, int, float], None]


class TwinFastPath:
    """ASGI app: plain local summary requests here, everything else to ``app``."""

    def __init__(
        self, app: Any, directory: TwinDirectory, summary: Callable[[str], Document | None], token: str, record: Recorder | None
    ) -> None:
        self.app = app
        self.directory = directory
        self.summary = summary
        self.expected = f"bearer {token}".encode() if token else b""
        self.record = record

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        started = time.perf_counter()
        reply = self._answer(scope) if scope["type"] == "http" else None
        if reply is None:
            await self.app(scope, receive, send)
            return
        status, headers, body = reply
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        if self.record is not None:
            self.record(ROUTE, "GET", status, time.perf_counter() - started)

    def _answer(self, scope: dict) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
        path: str = scope["path"]
        if scope["method"] != "GET" or not path.startswith(PREFIX) or scope["query_string"]:
            return None
        entity_id = path[len(PREFIX) :]
        if not entity_id or "/" in entity_id or self.directory.rebalancing:
            return None
        authorization = b""
        match = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value
            elif name == b"origin":
                return None  # CORS: the full app adds its headers
            elif name == b"if-none-match":
                match = value
        if self.expected and not hmac.compare_digest(authorization.lower()[:7] + authorization[7:], self.expected):
            return None  # the full app answers 401
        doc = self.summary(entity_id)
        if doc is None:
            return None  # not held here: the full app asks the holder or answers 404
        tag = etag(doc).encode()
        if match == tag:
            return 304, [(b"etag", tag)], b""
        body = orjson.dumps(doc)
        headers = [
            (b"content-type", b"application/json"),
            (b"etag", tag),
            (b"cache-control", b"no-cache"),
            (b"content-length", str(len(body)).encode()),
        ]
        return 200, headers, body
