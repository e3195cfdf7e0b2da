"""The worker's consumer gets the configured fetch wait instead of Faust's fixed 1,500 ms."""

from __future__ import annotations

import asyncio
from pathlib import Path

from twinstream.settings import Settings
from twinstream.streams.app import create_app


def worker_consumer_wait(tmp_path: Path, **settings: object) -> int:
    async def build() -> int:
        app = create_app(Settings(broker="kafka://127.0.0.1:1", data_dir=tmp_path, **settings))
        consumer = app.consumer._thread._create_worker_consumer(app.transport)  # built, never started
        try:
            return consumer._fetch_max_wait_ms
        finally:
            await consumer.stop()

    return asyncio.run(build())


def test_the_setting_reaches_the_worker_consumer(tmp_path: Path) -> None:
    assert worker_consumer_wait(tmp_path / "a", fetch_max_wait_ms=25) == 25
    assert worker_consumer_wait(tmp_path / "b") == Settings().fetch_max_wait_ms == 500


def test_faust_alone_keeps_its_own_wait(tmp_path: Path) -> None:
    """An app not made by create_app (e.g. another library's) is not changed by the wrapper."""
    import faust

    create_app(Settings(broker="kafka://127.0.0.1:1", data_dir=tmp_path / "ours"))  # installs the wrapper

    async def build() -> int:
        app = faust.App("plain", broker="kafka://127.0.0.1:1", datadir=str(tmp_path / "plain"), web_enabled=False)
        consumer = app.consumer._thread._create_worker_consumer(app.transport)
        try:
            return consumer._fetch_max_wait_ms
        finally:
            await consumer.stop()

    assert asyncio.run(build()) == 1500
