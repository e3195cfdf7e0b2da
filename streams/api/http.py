"""The twin API (FastAPI): summaries, fleet pages, prediction streams, probes, the inspector page.

Any worker answers for any entity: a request for an entity of a partition another
worker owns is proxied to it (one short JSON reply), and a stream is redirected to
the owner's advertised URL (a proxy would hold a connection per stream on two
workers). The API is read-only. With a token configured every data route needs
``Authorization: Bearer <token>`` (or ``access_token=`` in the query, for the
browser's EventSource, which cannot set headers); the token is never logged, and
request logs carry the path without its query.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
from fastapi import FastAPI, HTTPException, Query, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from twinstream.streams.api.feed import PredictionFeed
from twinstream.streams.api.routing import TwinDirectory
from twinstream.streams.api.summary import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    compile_filter,
    decode_cursor,
    encode_cursor,
    etag,
    join_summary,
    prediction_view,
    select_fields,
)
from twinstream.streams.metrics import WorkerMetrics

log = logging.getLogger(__name__)

ROUTED_HEADER = "x-twinstream-routed"  # set on proxied requests: the receiver never forwards again
KEEPALIVE_S = 15.0
PROXY_HEADERS = ("authorization", "if-none-match", "accept")


def _json(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(doc), status_code=status, media_type="application/json", headers=headers)


Recorder = Callable[[str, str, int, float], None]  # route template, method, status, seconds to the response head


def metrics_recorder(metrics: WorkerMetrics) -> Recorder:
    """A recorder that counts into ``metrics`` directly (the API process instead reports to the worker)."""

    def record(route: str, method: str, status: int, seconds: float) -> None:
        metrics.api_requests.labels(route, method, str(status)).inc()
        metrics.api_request_seconds.labels(route).observe(seconds)

    return record


class RequestMetrics:
    """Counts requests and times them to the response head, by route template (pure ASGI: no per-request task)."""

    def __init__(self, app: Any, record: Recorder) -> None:
        self.app = app
        self.record_request = record

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        recorded = False

        def record(status: int) -> None:
            nonlocal recorded
            recorded = True
            template = getattr(scope.get("route"), "path", "unmatched")
            self.record_request(template, scope["method"], status, time.perf_counter() - started)
            log.debug("api %s %s -> %d", scope["method"], scope["path"], status)

        async def send_and_record(message: dict) -> None:
            if message["type"] == "http.response.start" and not recorded:
                record(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            if not recorded:
                record(500)


def build_api(
    directory: TwinDirectory,
    feed: PredictionFeed,
    *,
    token: str = "",
    metrics: WorkerMetrics | None = None,
    client: httpx.AsyncClient | None = None,
    record: Recorder | None = None,
    metrics_text: Callable[[], Awaitable[bytes]] | None = None,
) -> FastAPI:
    """The API of one worker; ``client`` forwards requests to peers.

    Request metrics go to ``record`` (default: counted in ``metrics``); ``/metrics`` serves
    ``metrics_text()`` (default: ``metrics``' registry).
    """
    if record is None and metrics is not None:
        record = metrics_recorder(metrics)
    if metrics_text is None and metrics is not None:
        registry = metrics.registry

        async def metrics_text() -> bytes:
            return generate_latest(registry)

    api = FastAPI(title="twinstream twin API", docs_url="/docs", redoc_url=None)
    http = client or httpx.AsyncClient(timeout=10.0)
    static = resources.files("twinstream.streams.api") / "static"

    # The inspector page of one worker follows a stream redirected to another worker: a
    # cross-origin EventSource, which the browser allows only with CORS headers. Read-only,
    # and the token (not cookies) guards the data, so any origin may read.
    api.add_middleware(
        CORSMiddleware,
        allow_origins=["*"],
        allow_methods=["GET"],
        allow_headers=["Authorization", "Last-Event-ID"],
        expose_headers=["ETag"],
    )
    if record is not None:
        api.add_middleware(RequestMetrics, record=record)

    def authorize(request: Request) -> None:
        if not token:
            return
        header = request.headers.get("authorization", "")
        offered = header[7:] if header.lower().startswith("bearer ") else request.query_params.get("access_token", "")
        if not hmac.compare_digest(offered.encode(), token.encode()):
            raise HTTPException(401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"})

    def not_ready(detail: str) -> HTTPException:
        return HTTPException(503, detail, headers={"Retry-After": "1"})

    async def ask(request: Request, peer: str, path: str | None = None) -> httpx.Response | None:
        """The peer's reply to this request (routed: it answers from its own twins only); None if unreachable."""
        path = path or request.url.path
        # The token travels in the Authorization header only, never in a URL a library might log.
        query = [(k, v) for k, v in request.query_params.multi_items() if k != "access_token"]
        url = peer + path + (f"?{urlencode(query)}" if query and path == request.url.path else "")
        headers = {k: v for k, v in request.headers.items() if k in PROXY_HEADERS}
        if "authorization" not in headers and request.query_params.get("access_token"):
            headers["authorization"] = f"Bearer {request.query_params['access_token']}"
        headers[ROUTED_HEADER] = "1"
        try:
            return await http.get(url, headers=headers)
        except httpx.HTTPError as exc:
            log.warning("api: worker %s did not answer (%s)", peer, type(exc).__name__)
            return None

    def candidates(entity_id: str) -> list[str]:
        """Peers to ask, the partition's owner first (murmur2 placement), then the others."""
        owner = directory.owner_url(entity_id)
        peers = directory.peer_urls()
        return ([owner] if owner in peers else []) + [peer for peer in peers if peer != owner]

    def check_local(request: Request, entity_id: str) -> bool:
        """True when this worker holds the twin; raises 503 while it recovers, 404 on a routed miss."""
        if directory.rebalancing:
            raise not_ready("this worker is recovering its partitions after a rebalance; retry")
        if directory.state(entity_id) is not None:
            return True
        if directory.loading and directory.is_local(entity_id):
            raise not_ready("this worker is still loading its twins after a rebalance; retry")
        if request.headers.get(ROUTED_HEADER):
            raise unknown(entity_id)
        return False

    async def from_owner(request: Request, entity_id: str) -> Response:
        """Relay the reply of the worker that holds the twin (status, body, ETag)."""
        unreachable = False
        for peer in candidates(entity_id):
            reply = await ask(request, peer)
            if reply is None or reply.status_code == 503:
                unreachable = True
                continue
            if reply.status_code == 404:
                continue
            relay = {k: v for k, v in reply.headers.items() if k.lower() in ("etag", "retry-after", "www-authenticate")}
            return Response(reply.content, status_code=reply.status_code, headers=relay, media_type=reply.headers.get("content-type"))
        if unreachable:
            raise not_ready(f"the worker holding {entity_id!r} may be unreachable or rebalancing; retry")
        raise unknown(entity_id)

    def unknown(entity_id: str) -> HTTPException:
        return HTTPException(404, f"no twin for entity {entity_id!r}: this deployment has received no telemetry for it")

    def summary(entity_id: str) -> dict[str, Any] | None:
        state = directory.state(entity_id)
        if state is None:
            return None
        return join_summary(state, feed.last.get(entity_id, {}))

    @api.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz() -> Response:
        ready = directory.ready()
        body = {
            "ready": ready,
            "rebalancing": directory.rebalancing,
            "loading": directory.loading,
            "partitions": sorted(directory.owned_partitions()),
        }
        return _json(body, 200 if ready else 503)

    @api.get("/metrics")
    async def metrics_endpoint() -> Response:
        if metrics_text is None:
            raise HTTPException(404, "no metrics registry")
        try:
            text = await metrics_text()
        except TimeoutError as exc:
            raise not_ready("the worker did not answer for its metrics in time") from exc
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    @api.get("/twins/{entity_id}")
    async def get_twin(entity_id: str, request: Request, fields: str | None = None) -> Response:
        authorize(request)
        if not check_local(request, entity_id):
            return await from_owner(request, entity_id)
        doc = summary(entity_id)
        if doc is None:
            raise unknown(entity_id)
        doc = select_fields(doc, fields)
        tag = etag(doc)
        if request.headers.get("if-none-match") == tag:
            return Response(status_code=304, headers={"ETag": tag})
        return _json(doc, headers={"ETag": tag, "Cache-Control": "no-cache"})

    @api.get("/twins/{entity_id}/predictions")
    async def recent_predictions(entity_id: str, request: Request, since: int = -1) -> Response:
        """The twin's remembered recent predictions after ``since`` (the inspector's chart history)."""
        authorize(request)
        if not check_local(request, entity_id):
            return await from_owner(request, entity_id)
        return _json({"entity_id": entity_id, "predictions": [prediction_view(p) for p in feed.since(entity_id, since)]})

    @api.get("/twins")
    async def list_twins(
        request: Request,
        kind: str | None = None,
        filter: str | None = None,  # noqa: A002 - Ditto's name
        size: int = Query(DEFAULT_PAGE_SIZE, ge=1),
        cursor: str | None = None,
        fields: str | None = None,
        scope: str = "fleet",
    ) -> Response:
        authorize(request)
        if size > MAX_PAGE_SIZE:
            raise HTTPException(400, f"size must be at most {MAX_PAGE_SIZE}")
        try:
            predicate = compile_filter(filter)
            after = decode_cursor(cursor) if cursor else None
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from exc
        items, more = local_page(kind, predicate, after, size)
        if scope != "local" and not request.headers.get(ROUTED_HEADER):
            for peer in directory.peer_urls():
                query = dict(request.query_params)
                query["scope"] = "local"
                query.pop("fields", None)
                headers = {k: v for k, v in request.headers.items() if k == "authorization"}
                headers[ROUTED_HEADER] = "1"
                try:
                    reply = await http.get(peer + "/twins", params=query, headers=headers)
                except httpx.HTTPError as exc:
                    raise not_ready(f"worker {peer} did not answer: {type(exc).__name__}") from exc
                if reply.status_code != 200:
                    return Response(reply.content, status_code=reply.status_code, media_type="application/json")
                page = reply.json()
                items.extend(page["items"])
                more = more or page["next_cursor"] is not None
            items.sort(key=lambda doc: doc["entity_id"])
            more = more or len(items) > size
            items = items[:size]
        next_cursor = encode_cursor(items[-1]["entity_id"]) if more and items else None
        return _json({"items": [select_fields(doc, fields) for doc in items], "next_cursor": next_cursor})

    def local_page(
        kind: str | None, predicate: Callable[[dict[str, Any]], bool], after: str | None, size: int
    ) -> tuple[list[dict[str, Any]], bool]:
        items: list[dict[str, Any]] = []
        for entity_id in directory.entity_ids():
            if after is not None and entity_id <= after:
                continue
            doc = summary(entity_id)
            if doc is None or (kind is not None and doc["kind"] != kind) or not predicate(doc):
                continue
            if len(items) == size:
                return items, True
            items.append(doc)
        return items, False

    @api.get("/twins/{entity_id}/stream")
    async def stream(entity_id: str, request: Request, last_event_id: int | None = None) -> Response:
        """Server-sent events: one ``prediction`` event per prediction, ``id`` = its seq."""
        authorize(request)
        if not check_local(request, entity_id):
            unreachable = False
            for peer in candidates(entity_id):
                reply = await ask(request, peer, f"/twins/{entity_id}")
                if reply is not None and reply.status_code in (200, 304):
                    url = peer + request.url.path + (f"?{request.url.query}" if request.url.query else "")
                    return RedirectResponse(url, status_code=307)
                unreachable = unreachable or reply is None or reply.status_code == 503
            if unreachable:
                raise not_ready(f"the worker holding {entity_id!r} may be unreachable or rebalancing; retry")
            raise unknown(entity_id)
        header = request.headers.get("last-event-id")
        resume = last_event_id
        if header is not None:
            try:
                resume = int(header)
            except ValueError as exc:
                raise HTTPException(400, f"Last-Event-ID must be a sequence number, got {header!r}") from exc
        return StreamingResponse(
            events(entity_id, resume, request),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def events(entity_id: str, resume: int | None, request: Request) -> AsyncIterator[bytes]:
        queue = feed.subscribe(entity_id)
        sent_seq = resume if resume is not None else -1
        sent_at_seq: set[str] = set()
        try:
            yield b"retry: 2000\n\n"
            backlog = feed.since(entity_id, resume) if resume is not None else []
            while True:
                if backlog:
                    prediction = backlog.pop(0)
                else:
                    try:
                        prediction = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                    except TimeoutError:
                        if await request.is_disconnected():
                            return
                        yield b": keepalive\n\n"
                        continue
                seq = int(prediction.get("seq", -1))
                slot = f"{prediction.get('task')}:{prediction.get('target')}"
                if seq < sent_seq or (seq == sent_seq and (slot in sent_at_seq or resume == seq)):
                    continue  # already sent (replayed backlog and live overlap, or a redelivery)
                if seq > sent_seq:
                    sent_seq, sent_at_seq, resume = seq, set(), None
                sent_at_seq.add(slot)
                data = orjson.dumps(prediction_view(prediction) | {"entity_id": entity_id, "kind": prediction.get("kind")})
                yield b"id: %d\nevent: prediction\ndata: %s\n\n" % (seq, data)
        finally:
            feed.unsubscribe(entity_id, queue)

    @api.get("/")
    async def index() -> FileResponse:
        return FileResponse(str(static / "index.html"), media_type="text/html")

    @api.get("/static/{name}")
    async def static_file(name: str) -> FileResponse:
        if name not in {"inspector.js", "inspector.css"}:
            raise HTTPException(404, "no such file")
        return FileResponse(str(static / name))

    @api.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail, "status": exc.status_code}, status_code=exc.status_code, headers=exc.headers)

    return api
