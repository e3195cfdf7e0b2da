"""Run the twin API inside the worker's event loop, next to the ingest agent.

Why in the same loop and not a thread: handlers read the twins the agent mutates;
one loop means a handler never sees a twin half-way through an update, with no lock.
The cost is that a request waits while a batch is applied (milliseconds; the
latency benchmark measures it under load).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import faust
import httpx
import uvicorn

from twinstream.settings import Settings
from twinstream.streams.api.feed import PredictionFeed
from twinstream.streams.api.http import build_api
from twinstream.streams.api.routing import TwinDirectory
from twinstream.streams.health import HealthProbe
from twinstream.streams.ingest import IngestAgent

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
    directory = TwinDirectory(agent, url)
    feed = PredictionFeed(settings.broker_servers, agent.predictions_topic,
                          on_prediction=probe.on_prediction if probe is not None else None)

    async def serve() -> None:
        await feed.start()
        client = httpx.AsyncClient(timeout=10.0)
        api = build_api(directory, feed, token=settings.api_token.get_secret_value(), metrics=agent.metrics, client=client)
        config = uvicorn.Config(api, host=settings.api_addr, port=settings.api_port, access_log=False,
                                log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
        server = _EmbeddedServer(config)
        log.info("twin API: serving on %s:%d, advertised as %s%s", settings.api_addr, settings.api_port, url,
                 " (bearer token required)" if settings.api_token.get_secret_value() else "")
        try:
            await server.serve()
        finally:
            await client.aclose()
            await feed.stop()

    app.task(serve)
