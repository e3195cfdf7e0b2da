"""What every plant source shares: the reconnect loop, metrics and handing samples on.

Why the loop lives here and not in each client library: aiomqtt 2 does not reconnect,
pymodbus and asyncua do it each their own way (and, as operators report, not always
back). One loop with one backoff (``reconnect: {initial_s, max_s}``) makes "back within
``max_s`` after the server is" the same promise for every protocol.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime

from twinstream.connectors.backoff import Backoff
from twinstream.connectors.buffer import DiskBuffer, InvalidSample
from twinstream.connectors.config import Reconnect
from twinstream.connectors.metrics import ConnectorMetrics

log = logging.getLogger(__name__)


class PlantSource:
    """Base class: subclasses implement :meth:`session` (connect, read until failure)."""

    kind = "source"

    def __init__(self, name: str, reconnect: Reconnect, buffer: DiskBuffer, metrics: ConnectorMetrics) -> None:
        self.name = name
        self.reconnect = reconnect
        self.buffer = buffer
        self.metrics = metrics
        self.connections = 0
        self.connected_at: float | None = None  # time.monotonic() of the last successful connect
        self.disconnected_at: float | None = None
        self.samples = 0
        self.last_error: str | None = None
        self._backoff = Backoff(reconnect.initial_s, reconnect.max_s)

    async def session(self) -> None:
        """One connection's life: connect, call :meth:`on_connected`, read until it fails.

        Sources that use the reconnect loop of :meth:`run` define it; a source with a
        ``run`` of its own (the file replay) never calls it.
        """
        raise NotImplementedError(f"{type(self).__name__} defines no session(): it must override run()")

    def on_connected(self) -> None:
        """Called by :meth:`session` once the connection is usable."""
        self.connections += 1
        self.connected_at = time.monotonic()
        if self.connections > 1:
            self.metrics.reconnects.labels(self.name).inc()
        self.metrics.connected.labels(self.name).set(1)
        log.info("%s source %s connected (connection %d)", self.kind, self.name, self.connections)

    async def run(self) -> None:
        """Run sessions forever; after a failure wait the jittered, capped backoff and reconnect."""
        while True:
            try:
                await self.session()
                self.last_error = "session ended"
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.metrics.errors.labels(self.name).inc()
            if self.connected_at is not None and (self.disconnected_at or 0) < self.connected_at:  # a session ended
                self.disconnected_at = time.monotonic()
                if self.disconnected_at - self.connected_at > self.reconnect.max_s:
                    self._backoff.reset()  # it worked for a while: start again from initial_s
            self.metrics.connected.labels(self.name).set(0)
            delay = self._backoff.next_delay()
            log.warning("%s source %s: %s; reconnecting in %.2f s", self.kind, self.name, self.last_error, delay)
            await asyncio.sleep(delay)

    async def emit(self, entity: str, event_time: datetime, values: dict[str, float | None], *, seq: int | None = None) -> bool:
        """Store one assembled sample (the buffer assigns its seq); False if it was not valid telemetry."""
        try:
            await self.buffer.put(self.name, entity, event_time, values, seq=seq)
        except InvalidSample as exc:
            self.metrics.dropped.labels(self.name, "invalid").inc()
            log.warning("%s source %s: sample dropped: %s", self.kind, self.name, exc)
            return False
        self.samples += 1
        return True
