"""Two guards the ingest agent runs under: it exits when it dies, and its checkpoint's
table writes land on the partition they belong to."""

from __future__ import annotations

import logging
import os
import weakref
from typing import Any

import faust
from faust.streams import _current_event  # see as_event_of_partition

log = logging.getLogger(__name__)

EXIT_AGENT_CRASHED = 70  # EX_SOFTWARE: the ingest agent died; a supervisor restarts the process


def exit_on_agent_crash(exc: BaseException) -> None:
    """End the process when the ingest agent dies, instead of living on idle.

    Faust logs an agent's crash and keeps the worker running with no consumer of its
    partitions: no exit for a supervisor to act on, every partition stalled. Exiting
    is safe at any point, exactly like a SIGKILL: unacked events are redelivered to the
    restarted process, and the twins' sequence check skips what the table already holds.
    """
    log.critical("ingest agent crashed (%s: %s); exiting with status %d so that a supervisor restarts the worker",
                 type(exc).__name__, exc, EXIT_AGENT_CRASHED, exc_info=exc)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(EXIT_AGENT_CRASHED)


class as_event_of_partition:
    """Make Faust's table write go to ``event``'s partition.

    Faust picks the changelog partition (and the RocksDB partition store) of a table
    write from the *current event*, a context variable that its own stream iteration
    sets. Checkpoints write outside that iteration, so we set it to the latest event
    of the partition being written. This touches one private name of faust-streaming
    (pinned to 0.15.3); the crash-recovery integration test guards it.
    """

    def __init__(self, event: faust.EventT | None) -> None:
        if event is None:
            raise RuntimeError("no event of this partition in the checkpoint; cannot place table writes")
        self.event = event
        self.token: Any = None

    def __enter__(self) -> None:
        self.token = _current_event.set(weakref.ref(self.event))

    def __exit__(self, *exc: object) -> None:
        _current_event.reset(self.token)
