"""The twin API process: uvicorn, the prediction feed and the worker's published twins, on one event loop.

Started by the worker (:func:`twinstream.streams.api.server.start_api_process`) with one
end of a socket pair as its only argument; the first message on it carries the
settings. It lives as long as that socket: when the worker goes, it goes.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

import httpx
import uvicorn

from twinstream.kafka_security import client_options
from twinstream.settings import Settings
from twinstream.streams.api.fastpath import TwinFastPath
from twinstream.streams.api.feed import Prediction, PredictionFeed
from twinstream.streams.api.http import build_api
from twinstream.streams.api.routing import TwinDirectory
from twinstream.streams.api.summary import join_summary

log = logging.getLogger(__name__)

REPORT_INTERVAL_S = 0.25
METRICS_TIMEOUT_S = 10.0


class WorkerLink:
    """The API process's end of the socket: applies what the worker publishes, reports back what it counts."""

    def __init__(self, conn: Connection, directory: TwinDirectory) -> None:
        self.conn = conn
        self.directory = directory
        self.requests: list[tuple[str, str, int, float]] = []
        self.domain: list[tuple[int, str | None, bool]] = []
        self.waiting: dict[int, asyncio.Future[bytes]] = {}
        self.ids = itertools.count()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.closed = asyncio.Event()

    def record(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.append((route, method, status, seconds))

    def on_prediction(self, partition: int, prediction: Prediction) -> None:
        flag = prediction.get("in_domain")
        if flag is not None:
            self.domain.append((partition, prediction.get("kind"), bool(flag)))

    async def metrics_text(self) -> bytes:
        """The worker's Prometheus exposition, asked of the worker."""
        assert self.loop is not None
        request = next(self.ids)
        future = self.waiting[request] = self.loop.create_future()
        try:
            self.conn.send(("metrics?", request))
            return await asyncio.wait_for(future, METRICS_TIMEOUT_S)
        finally:
            self.waiting.pop(request, None)

    async def report(self) -> None:
        """Send the counted requests and in-domain flags every ``REPORT_INTERVAL_S``."""
        while True:
            await asyncio.sleep(REPORT_INTERVAL_S)
            if self.requests or self.domain:
                requests, self.requests = self.requests, []
                domain, self.domain = self.domain, []
                self.conn.send(("report", requests, domain))

    def start_reader(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        threading.Thread(target=self._read, name="twinstream-api-read", daemon=True).start()

    def _read(self) -> None:
        assert self.loop is not None
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                self.loop.call_soon_threadsafe(self.closed.set)
                return
            kind = message[0]
            if kind == "states":
                for entity_id, partition, state in message[1]:
                    self.directory.put(entity_id, partition, state)
            elif kind == "own":
                self.directory.set_ownership(message[1])
            elif kind == "metrics":
                self.loop.call_soon_threadsafe(self._resolve, message[1], message[2])

    def _resolve(self, request: int, text: bytes) -> None:
        future = self.waiting.get(request)
        if future is not None and not future.done():
            future.set_result(text)


async def serve(conn: Connection, settings: Settings, predictions_topic: str, self_url: str) -> None:
    directory = TwinDirectory(self_url, settings.partitions)
    link = WorkerLink(conn, directory)
    link.start_reader(asyncio.get_running_loop())
    feed = PredictionFeed(settings.broker_servers, predictions_topic, on_prediction=link.on_prediction, security=client_options(settings))
    await feed.start()
    client = httpx.AsyncClient(timeout=10.0)
    token = settings.api_token.get_secret_value()
    api = build_api(directory, feed, token=token, client=client, record=link.record, metrics_text=link.metrics_text)

    def summary(entity_id: str) -> dict[str, Any] | None:
        state = directory.state(entity_id)
        return None if state is None else join_summary(state, feed.last.get(entity_id, {}))

    app = TwinFastPath(api, directory, summary, token, link.record)
    config = uvicorn.Config(
        app,
        host=settings.api_addr,
        port=settings.api_port,
        access_log=False,
        log_level="warning",
        lifespan="off",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    log.info(
        "twin API: serving on %s:%d, advertised as %s%s",
        settings.api_addr,
        settings.api_port,
        self_url,
        " (bearer token required)" if token else "",
    )
    reporter = asyncio.create_task(link.report())

    async def worker_gone() -> None:
        await link.closed.wait()
        log.info("twin API: the worker closed its end; stopping")
        server.should_exit = True

    watcher = asyncio.create_task(worker_gone())
    try:
        await server.serve()
        if not server.started:
            raise RuntimeError(f"could not serve on {settings.api_addr}:{settings.api_port}")
    finally:
        reporter.cancel()
        watcher.cancel()
        await client.aclose()
        await feed.stop()


def main(fd: int) -> None:
    conn = Connection(fd)
    _, settings, predictions_topic, self_url = conn.recv()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s [api] %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # it logs every request's full URL at INFO
    started = time.monotonic()
    try:
        import uvloop
    except ImportError:  # optional: uvicorn[standard] brings it
        asyncio.run(serve(conn, settings, predictions_topic, self_url))
    else:
        uvloop.run(serve(conn, settings, predictions_topic, self_url))
    log.info("twin API: stopped after %.0f s", time.monotonic() - started)


def _entry(argv: list[str]) -> Any:
    if len(argv) != 2:
        raise SystemExit("usage: python -m twinstream.streams.api.process FD")
    return main(int(argv[1]))


if __name__ == "__main__":
    _entry(sys.argv)
