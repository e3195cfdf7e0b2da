"""The fast record hand-off behaves as Faust's ``wait_first`` race, without its tasks when nothing waits."""

from __future__ import annotations

import asyncio
import warnings

import pytest
from mode import Service

from twinstream.streams.handoff import install_fast_handoff


class Consumer(Service):
    """What the hand-off needs of a Faust consumer: a mode service with a flow event; counts the races it runs."""

    def __init__(self) -> None:
        super().__init__()
        self.suspend_flow = asyncio.Event()
        self.races = 0
        original = self.wait_first

        async def counting(*coros: object, timeout: object = None) -> object:
            self.races += 1
            return await original(*coros, timeout=timeout)

        self.wait_first = counting  # type: ignore[method-assign]


async def handed(queue: asyncio.Queue, item: object) -> str:
    await queue.put(item)  # waits only when the queue is full, as a stream's buffer does
    return "handed"


def run(coro_fn) -> object:
    return asyncio.run(coro_fn())


def test_a_hand_off_with_room_runs_in_place_without_a_race() -> None:
    async def scenario() -> tuple:
        consumer = Consumer()
        assert install_fast_handoff(consumer)
        queue: asyncio.Queue = asyncio.Queue(maxsize=10)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # an un-awaited flow coroutine would warn
            results = [await consumer.wait_first(handed(queue, i), consumer.suspend_flow.wait()) for i in range(5)]
        return consumer.races, queue.qsize(), results[0]

    races, size, first = run(scenario)
    assert races == 0 and size == 5
    assert first.results == ["handed"] and not first.stopped


def test_a_hand_off_that_waits_is_raced_and_completes_when_the_stream_takes_a_record() -> None:
    async def scenario() -> tuple:
        consumer = Consumer()
        install_fast_handoff(consumer)
        queue: asyncio.Queue = asyncio.Queue(maxsize=1)
        queue.put_nowait("old")
        pending = asyncio.ensure_future(consumer.wait_first(handed(queue, "new"), consumer.suspend_flow.wait()))
        await asyncio.sleep(0.01)
        assert not pending.done()
        assert queue.get_nowait() == "old"  # the stream takes one: there is room
        result = await asyncio.wait_for(pending, 2)
        return consumer.races, result.results, queue.get_nowait()

    races, results, item = run(scenario)
    assert races == 1 and results == ["handed"] and item == "new"


def test_a_waiting_hand_off_is_cut_short_when_the_flow_is_suspended() -> None:
    async def scenario() -> tuple:
        consumer = Consumer()
        install_fast_handoff(consumer)
        queue: asyncio.Queue = asyncio.Queue(maxsize=1)
        queue.put_nowait("old")
        cancelled: list[bool] = []

        async def handed_and_told(item: str) -> str:
            try:
                await queue.put(item)
            except asyncio.CancelledError:
                cancelled.append(True)
                raise
            return "handed"

        pending = asyncio.ensure_future(consumer.wait_first(handed_and_told("new"), consumer.suspend_flow.wait()))
        await asyncio.sleep(0.01)
        consumer.suspend_flow.set()  # a rebalance
        result = await asyncio.wait_for(pending, 2)
        await asyncio.sleep(0)
        return result.results, cancelled, queue.qsize()

    results, cancelled, size = run(scenario)
    assert results == [True]  # the flow event won
    assert cancelled == [True], "the blocked hand-off saw the cancellation where it waited"
    assert size == 1, "nothing was handed on"


def test_an_error_in_the_hand_off_propagates() -> None:
    async def failing() -> None:
        raise ValueError("bad record")

    async def scenario() -> None:
        consumer = Consumer()
        install_fast_handoff(consumer)
        await consumer.wait_first(failing(), consumer.suspend_flow.wait())

    with pytest.raises(ValueError, match="bad record"):
        run(scenario)


def test_other_waits_and_a_stopping_consumer_use_fausts_own_race() -> None:
    async def scenario() -> int:
        consumer = Consumer()
        install_fast_handoff(consumer)
        queue: asyncio.Queue = asyncio.Queue()
        await consumer.wait_first(handed(queue, 1))  # one coroutine: not the fetch loop's hand-off
        await consumer.wait_first(handed(queue, 2), asyncio.sleep(0))  # second is not an Event.wait()
        consumer._stopped.set()
        await consumer.wait_first(handed(queue, 3), consumer.suspend_flow.wait())
        return consumer.races

    assert run(scenario) == 3


def test_installing_twice_keeps_one_layer() -> None:
    async def scenario() -> bool:
        consumer = Consumer()
        install_fast_handoff(consumer)
        first = consumer.wait_first
        install_fast_handoff(consumer)
        return consumer.wait_first is first

    assert run(scenario)
