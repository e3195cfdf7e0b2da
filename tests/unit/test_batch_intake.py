"""The buffer between the worker's fetch loop and its ingest agent: order, capacity, clearing."""

from __future__ import annotations

import asyncio

import pytest

from twinstream.streams.batch_intake import EventBuffer


def run(coro):
    return asyncio.run(coro)


def test_batches_keep_fetch_order_across_puts_and_are_cut_at_max_events() -> None:
    async def main() -> list[list[int]]:
        buffer = EventBuffer(capacity=100)
        await buffer.put(range(0, 7))
        await buffer.put(range(7, 10))
        return [await buffer.take(4), await buffer.take(4), await buffer.take(4)]

    assert run(main()) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_take_waits_for_the_next_put() -> None:
    async def main() -> list[int]:
        buffer = EventBuffer(capacity=10)
        taker = asyncio.ensure_future(buffer.take(5))
        await asyncio.sleep(0.01)
        assert not taker.done()
        await buffer.put([1, 2])
        return await asyncio.wait_for(taker, 1)

    assert run(main()) == [1, 2]


def test_a_full_buffer_holds_the_fetch_loop_until_the_agent_takes() -> None:
    async def main() -> tuple[bool, bool, list[int]]:
        buffer = EventBuffer(capacity=3)
        await buffer.put([1, 2, 3])
        putter = asyncio.ensure_future(buffer.put([4]))
        await asyncio.sleep(0.01)
        held = not putter.done()
        taken = await buffer.take(2)
        await asyncio.wait_for(putter, 1)
        return held, putter.done(), taken + await buffer.take(10)

    held, released, events = run(main())
    assert held and released
    assert events == [1, 2, 3, 4]


def test_a_fetch_may_overfill_by_itself_but_the_next_one_waits() -> None:
    async def main() -> tuple[int, bool]:
        buffer = EventBuffer(capacity=3)
        await buffer.put([1, 2])
        await asyncio.wait_for(buffer.put([3, 4, 5, 6]), 1)  # below capacity when it came: taken whole
        putter = asyncio.ensure_future(buffer.put([7]))
        await asyncio.sleep(0.01)
        waiting = not putter.done()
        putter.cancel()
        return len(buffer), waiting

    assert run(main()) == (6, True)


def test_clear_drops_the_events_and_frees_a_waiting_put() -> None:
    async def main() -> tuple[int, list[int]]:
        buffer = EventBuffer(capacity=2)
        await buffer.put([1, 2])
        putter = asyncio.ensure_future(buffer.put([3]))
        await asyncio.sleep(0.01)
        dropped = buffer.clear()
        await asyncio.wait_for(putter, 1)
        return dropped, await buffer.take(10)

    assert run(main()) == (2, [3])


def test_a_cancelled_put_leaves_nothing_behind() -> None:
    """The fetch loop races each put against the flow's suspension; the loser must not half-apply."""

    async def main() -> int:
        buffer = EventBuffer(capacity=1)
        await buffer.put([1])
        putter = asyncio.ensure_future(buffer.put([2, 3]))
        await asyncio.sleep(0.01)
        putter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await putter
        return len(buffer)

    assert run(main()) == 1


def drain_of_worker_consumer(tmp_path, **settings: object) -> tuple[object, object]:
    """The fetch loop a worker app's consumer will run, and the agent's intake (built, never started)."""
    from twinstream.settings import Settings
    from twinstream.streams.worker import build_worker_app

    async def build() -> tuple[object, object]:
        app, agent = build_worker_app(Settings(broker="kafka://127.0.0.1:1", data_dir=tmp_path, **settings))
        return app.consumer._drain_messages, agent.intake

    return asyncio.run(build())


def test_the_worker_consumer_hands_input_to_the_intake_by_default(tmp_path) -> None:
    drain, intake = drain_of_worker_consumer(tmp_path / "on")
    assert intake is not None and drain.__qualname__.startswith("BatchIntake.")
    assert intake.topics == {"twinstream.telemetry", "twinstream.telemetry.synthetic"}


def test_without_the_intake_the_consumer_keeps_fausts_fetch_loop(tmp_path) -> None:
    from faust.transport.consumer import Consumer

    drain, intake = drain_of_worker_consumer(tmp_path / "off", batch_intake=False)
    assert intake is None and drain.__func__ is Consumer._drain_messages
