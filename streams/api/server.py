"""Run the twin API in the worker process, on a thread of its own with its own event loop.

Why a thread and not the worker's loop: the ingest agent applies a batch of up to
``batch_size`` events without yielding, so a request served in that loop would wait
for the whole batch. On its own thread a request waits only for the GIL, which Python
hands over every switch interval (benchmarks/api_latency.py measures the result). What the handlers read is safe across
threads: dict lookups of the twin cache, attribute reads, RocksDB reads (rocksdict is
thread-safe); a summary may be taken between two fields' updates of one event, and
its ETag then changes with the next read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator

import faust
import httpx
import uvicorn

from twinstream.kafka_security import client_options
from twinstream.settings import Settings
from twinstream.streams.api.feed import PredictionFeed
from twinstream.streams.api.http import build_api
from twinstream.streams.api.routing import TwinDirectory
from twinstream.streams.health import HealthProbe
from twinstream.streams.ingest import IngestAgent
from twinstream.streams.metrics import WorkerMetrics

log = logging.getLogger(__name__)


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handlers: the Faust worker owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def advertised_url(settings: Settings) -> str:
    """The URL peers use for this worker's API.

    >>> advertised_url(Settings(api_port=8081))
    'http://127.0.0.1:8081'
    """
    if settings.api_advertised_url:
        return settings.api_advertised_url.rstrip("/")
    host = "127.0.0.1" if settings.api_addr in ("0.0.0.0", "::", "") else settings.api_addr
    return f"http://{host}:{settings.api_port}"


def register_health(app: faust.App, agent: IngestAgent, settings: Settings) -> HealthProbe:
    """The timer that refreshes lag and the other health gauges."""
    probe = HealthProbe(agent)
    app.timer(settings.lag_interval_s)(probe.refresh)
    return probe


def register_api(app: faust.App, agent: IngestAgent, settings: Settings, probe: HealthProbe | None = None) -> None:
    """Serve the API on ``settings.api_port`` once the app starts; advertise its URL to the group.

    Must run before the worker starts: the canonical URL travels in the group's
    assignment metadata, which is how every worker learns who owns a partition.
    """
    if settings.api_port is None:
        return
    # httpx logs every request's full URL at INFO; the API's own log lines carry no query strings.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    url = advertised_url(settings)
    app.conf.canonical_url = url
    thread = ApiThread(settings, TwinDirectory(agent, url), agent.metrics, agent.predictions_topic, probe)

    async def start() -> None:
        thread.start()

    app.task(start)


class ApiThread(threading.Thread):
    """uvicorn and the prediction feed on one event loop in a daemon thread."""

    def __init__(self, settings: Settings, directory: TwinDirectory, metrics: WorkerMetrics, predictions_topic: str,
                 probe: HealthProbe | None) -> None:
        super().__init__(name="twinstream-api", daemon=True)
        self.settings = settings
        self.directory = directory
        self.metrics = metrics
        self.feed = PredictionFeed(settings.broker_servers, predictions_topic,
                                   on_prediction=probe.on_prediction if probe is not None else None,
                                   security=client_options(settings))

    def run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # noqa: BLE001 - the worker must not live on without its API
            log.critical("twin API stopped (%s: %s); stopping the worker", type(exc).__name__, exc, exc_info=exc)
            os.kill(os.getpid(), signal.SIGTERM)

    async def _serve(self) -> None:
        settings = self.settings
        await self.feed.start()
        client = httpx.AsyncClient(timeout=10.0)
        token = settings.api_token.get_secret_value()
        api = build_api(self.directory, self.feed, token=token, metrics=self.metrics, client=client)
        config = uvicorn.Config(api, host=settings.api_addr, port=settings.api_port, access_log=False,
                                log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
        server = _EmbeddedServer(config)
        log.info("twin API: serving on %s:%d, advertised as %s%s", settings.api_addr, settings.api_port,
                 self.directory.self_url, " (bearer token required)" if token else "")
        try:
            await server.serve()
            if not server.started:
                raise RuntimeError(f"could not serve on {settings.api_addr}:{settings.api_port}")
        finally:
            await client.aclose()
            await self.feed.stop()
