"""A cheaper hand-off of each fetched record from Faust's consumer to the streams.

Why: Faust's fetch loop passes every record on with
``await consumer.wait_first(callback(message), consumer.suspend_flow.wait())``. That
starts four asyncio tasks (the hand-off, the flow event, the consumer's stopped and
crashed events), waits on all of them and cancels three, for every record: on a
worker doing tens of microseconds of twin work per event it is a large share of the
time (docs/performance.md). The race only matters when the hand-off *blocks* (a
stream's buffer is full and a rebalance suspends the flow meanwhile): then the
hand-off must be cut short, or the fetch loop would wait on a stream that is about to
be stopped.

So the hand-off runs first, in place, up to its first suspension. Most records are
handed on without one (the stream's queue has room) and cost no task at all. A
hand-off that does suspend is resumed in a task that is raced against the same events
exactly as Faust does, so the rebalance behaviour is Faust's own. Faust's other uses of
``wait_first`` are untouched. Settings: ``fast_handoff`` (off by default: docs/decisions.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from mode.services import WaitResults

log = logging.getLogger(__name__)

WaitFirst = Callable[..., Awaitable[WaitResults]]


async def resume(coro: Coroutine[Any, Any, Any], yielded: Any) -> Any:
    """Drive ``coro`` on from the point where it yielded ``yielded``, as a task would.

    A coroutine run by hand with ``send(None)`` stops where it awaits a future (it
    yields that future) or gives the loop a turn (``asyncio.sleep(0)`` yields None).
    Cancellation while it waits reaches it as it would in a task: the future is
    cancelled and the coroutine sees the ``CancelledError`` where it awaits.

    >>> async def two_steps(fut):
    ...     await asyncio.sleep(0)
    ...     return await fut + 1
    >>> async def main():
    ...     fut = asyncio.get_running_loop().create_future()
    ...     coro = two_steps(fut)
    ...     first = coro.send(None)  # stops at the sleep(0): yields None
    ...     task = asyncio.ensure_future(resume(coro, first))
    ...     await asyncio.sleep(0)
    ...     fut.set_result(41)
    ...     return await task
    >>> asyncio.run(main())
    42
    """
    while True:
        throw: BaseException | None = None
        try:
            if yielded is None:
                await asyncio.sleep(0)
            else:
                yielded._asyncio_future_blocking = False
                await yielded
        except asyncio.CancelledError as exc:
            if yielded is None or not yielded.cancelled():  # cancelled while not waiting on its future
                throw = exc
            # else: the future is cancelled; the coroutine raises CancelledError where it awaits it
        except BaseException:  # noqa: BLE001, S110 - the future's own error: the coroutine reads it from the future
            pass
        try:
            yielded = coro.send(None) if throw is None else coro.throw(throw)
        except StopIteration as stop:
            return stop.value


_EVENT_WAIT = asyncio.Event.wait.__code__


def _is_event_wait(coro: Any) -> bool:
    """Whether ``coro`` is ``asyncio.Event().wait()``: the fetch loop's second argument (``suspend_flow.wait()``)."""
    return asyncio.iscoroutine(coro) and getattr(coro, "cr_code", None) is _EVENT_WAIT


def fast_wait_first(original: WaitFirst, stopped: asyncio.Event | Any, crashed: asyncio.Event | Any) -> WaitFirst:
    """A ``wait_first`` for Faust's record hand-off: run the hand-off in place when it does not block.

    ``original`` is the consumer's own ``wait_first``; every call that is not the fetch
    loop's two-coroutine hand-off, or that finds the consumer stopping, goes to it.
    """

    async def wait_first(*coros: Any, timeout: Any = None) -> WaitResults:
        if not (len(coros) == 2 and timeout is None and asyncio.iscoroutine(coros[0]) and _is_event_wait(coros[1])):
            return await original(*coros, timeout=timeout)
        if stopped.is_set() or crashed.is_set():
            return await original(*coros)
        handoff, flow_suspended = coros
        try:
            yielded = handoff.send(None)
        except StopIteration as done:  # handed on without waiting: the common case
            flow_suspended.close()
            return WaitResults([handoff], [done.value], False)
        except BaseException:
            flow_suspended.close()
            raise
        # it waits (a full stream buffer, flow control): race the rest of it as Faust does
        return await original(resume(handoff, yielded), flow_suspended)

    return wait_first


def install_fast_handoff(consumer: Any) -> bool:
    """Give ``consumer`` (a Faust consumer) the fast hand-off; False if it lacks what it needs."""
    original = getattr(consumer, "wait_first", None)
    stopped, crashed = getattr(consumer, "_stopped", None), getattr(consumer, "_crashed", None)
    if original is None or stopped is None or crashed is None or not hasattr(consumer, "suspend_flow"):
        log.warning("fast hand-off not installed: %s has no wait_first/_stopped/_crashed/suspend_flow", type(consumer).__name__)
        return False
    if getattr(original, "__twinstream_fast_handoff__", False):
        return True
    patched = fast_wait_first(original, stopped, crashed)
    patched.__twinstream_fast_handoff__ = True  # type: ignore[attr-defined]
    consumer.wait_first = patched
    return True
