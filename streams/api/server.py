"""Run the twin API beside the worker, in a process of its own fed by the worker.

Why a process and not a thread or the worker's loop: the worker's loop applies a batch
without yielding, and a thread of the worker's process gets the GIL only at the
interpreter's switch interval after each of the several blocking calls a request makes
(accept, read, write), while the worker's thread takes it back at once: the convoy
that benchmarks/api_latency.py measured (p99 in the hundreds of ms at 100 requests/s,
the worker slowed by the requests' share of the GIL). In its own process the API
shares no lock with the twins: the worker publishes twin states and its group state a
few times a second (:mod:`twinstream.streams.api.publisher`), the API process answers
from them and from the predictions topic, and reports its request metrics back so they
appear in the worker's registry.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
from multiprocessing.connection import Connection

import faust

from twinstream.settings import Settings
from twinstream.streams.api.publisher import SNAPSHOT_INTERVAL_S, SnapshotPublisher
from twinstream.streams.health import HealthProbe
from twinstream.streams.ingest import IngestAgent

log = logging.getLogger(__name__)


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
    """Start the API process once the app starts, publish to it on a timer; advertise its URL to the group.

    Must run before the worker starts: the canonical URL travels in the group's
    assignment metadata, which is how every worker learns who owns a partition.
    """
    if settings.api_port is None:
        return
    url = advertised_url(settings)
    app.conf.canonical_url = url
    publisher = SnapshotPublisher(agent, agent.metrics, probe)
    agent.on_batch = publisher.on_batch

    async def start() -> None:
        publisher.attach(start_api_process(settings, agent.predictions_topic, url))

    app.task(start)
    app.timer(SNAPSHOT_INTERVAL_S)(publisher.tick)


def start_api_process(settings: Settings, predictions_topic: str, url: str) -> Connection:
    """Spawn the API process; the returned connection is the worker's end of its socket pair.

    In a session of its own: where the kernel groups processes by session for CPU
    fairness (Linux autogroup, outside a CPU cgroup), the API's CPU then does not come out
    of the worker's share. Signals to the worker's process group do not reach it; it
    stops when the worker's end of the socket closes.
    """
    ours, theirs = socket.socketpair()
    subprocess.Popen(
        [sys.executable, "-m", "twinstream.streams.api.process", str(theirs.fileno())],
        pass_fds=(theirs.fileno(),),
        close_fds=True,
        start_new_session=True,
    )
    theirs.close()
    conn = Connection(ours.detach())
    conn.send(("start", settings, predictions_topic, url))
    log.info("twin API: process started for %s:%d", settings.api_addr, settings.api_port)
    return conn
