"""The inspector page in a real browser (Debian's headless Chromium, driven over the DevTools protocol).

A worker serves the page; the test opens one twin, waits for its chart to draw the
remembered predictions with the measured values they carry, sends new telemetry and waits
for the live chart to draw the new points (they arrive over the server-sent event stream),
then saves a screenshot.
``TWINSTREAM_SCREENSHOT_DIR`` also copies it there (how docs/img/inspector.png is made).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson
import pytest
from confluent_kafka import Producer
from worker_harness import WorkerProcess, wait_until

from twinstream.broker import EmbeddedBroker, free_port
from twinstream.processes import settings_env, stop_process
from twinstream.schemas.topics import TELEMETRY
from twinstream.settings import Settings
from twinstream.streams.topic_admin import ensure_topics

TOKEN = "inspector-token"
SPEC = """
kinds:
  - name: pump
    match: {entity_id: ["pump-*"]}
    metrics: [{name: flow, unit: m3/h}, {name: pressure, unit: bar}]
    tasks:
      - {type: forecast, metric: flow, horizon: 1}
"""
FIRST = 40
START = datetime.now(UTC) - timedelta(hours=1)


def chromium_binary() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI") or os.environ.get("TWINSTREAM_REQUIRE_SERVERS") == "1":
            pytest.fail("chromium is not installed: .ci/test installs Debian's chromium")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return path


def send(producer: Producer, topic: str, pump: str, seqs: range) -> None:
    import math

    for seq in seqs:
        flow = 50.0 + 10.0 * math.sin(2 * math.pi * seq / 12) + 0.2 * seq + (3.0 if pump == "pump-1" else 0.0)
        body = {"entity_id": pump, "event_time": (START + timedelta(seconds=10 * seq)).isoformat(), "seq": seq,
                "metrics": {"flow": flow, "pressure": 3.0 + 0.01 * seq}}
        producer.produce(topic, key=pump.encode(), value=orjson.dumps(body))
    assert producer.flush(30) == 0


class DevTools:
    """A minimal Chrome DevTools Protocol client for one page."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict:
        call_id = next(self.ids)
        await self.ws.send_json({"id": call_id, "method": method, "params": params})
        while True:
            message = await self.ws.receive_json(timeout=60)
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout_s: float, what: str) -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                status = await self.evaluate("document.querySelector('#status')?.textContent")
                raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what} (page status: {status})")
            await asyncio.sleep(0.2)


@pytest.fixture
def worker(kafka_broker: EmbeddedBroker, app_id: str, tmp_path: Path) -> Iterator[tuple[Settings, str, WorkerProcess]]:
    spec = tmp_path / "twins.yaml"
    spec.write_text(SPEC)
    port = free_port()
    settings = Settings(broker=kafka_broker.url, app_id=app_id, topic_namespace=app_id.replace("-", "_"), partitions=2,
                        data_dir=tmp_path / "state", twins_spec=str(spec), api_port=port, api_token=TOKEN)
    ensure_topics(settings)
    process = WorkerProcess(settings_env(settings), tmp_path / "worker.log").start()
    try:
        yield settings, f"http://127.0.0.1:{port}", process
    finally:
        process.stop()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[int]:
    binary = chromium_binary()
    port = free_port()
    log = (tmp_path / "chromium.log").open("ab")
    process = subprocess.Popen([binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                                "--no-first-run", "--remote-allow-origins=*", f"--remote-debugging-port={port}",
                                f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1400,820",
                                "about:blank"], stdout=log, stderr=log)
    try:
        wait_until(lambda: _devtools_up(port), 60, "Chromium's DevTools endpoint")
        yield port
    finally:
        stop_process(process, timeout_s=10)


def _devtools_up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/json/version", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.slow
def test_inspector_draws_live_points(worker: tuple[Settings, str, WorkerProcess], browser: int,
                                     kafka_broker: EmbeddedBroker, tmp_path: Path) -> None:
    settings, api, process = worker
    topic = TELEMETRY.in_namespace(settings.topic_namespace).name
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap_servers, "enable.idempotence": False})
    send(producer, topic, "pump-0", range(FIRST))
    send(producer, topic, "pump-1", range(FIRST))
    auth = {"Authorization": f"Bearer {TOKEN}"}

    def current() -> bool:
        try:
            reply = httpx.get(f"{api}/twins/pump-0/predictions", headers=auth, timeout=5)
        except httpx.HTTPError:
            return False
        return reply.status_code == 200 and len(reply.json()["predictions"]) == FIRST

    wait_until(current, 120, lambda: f"pump-0's predictions in the API; log:\n{process.log_tail()}")
    screenshot = asyncio.run(drive(browser, f"{api}/?entity=pump-0#token={TOKEN}", producer, topic))
    path = tmp_path / "inspector.png"
    path.write_bytes(screenshot)
    assert screenshot.startswith(b"\x89PNG") and len(screenshot) > 10_000
    target = os.environ.get("TWINSTREAM_SCREENSHOT_DIR")
    if target:
        shutil.copy(path, Path(target) / "inspector.png")


async def drive(port: int, url: str, producer: Producer, topic: str) -> bytes:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/json/list") as reply:
            page = next(t for t in await reply.json() if t["type"] == "page")
        async with session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            tools = DevTools(ws)
            await tools.call("Page.enable")
            await tools.call("Page.navigate", url=url)
            await tools.wait_for("document.querySelectorAll('#twins tbody tr').length === 2", 30, "the fleet table")
            await tools.wait_for(f"Number(document.querySelector('#chart')?.dataset.points) === {FIRST}", 30,
                                 "the chart of the remembered predictions")
            await tools.wait_for("document.querySelector('#live').textContent.startsWith('live')", 30,
                                 "the event stream to open")
            await asyncio.to_thread(send, producer, topic, "pump-0", range(FIRST, FIRST + 3))
            await tools.wait_for(f"document.querySelector('#chart').dataset.lastSeq === '{FIRST + 2}'", 60,
                                 "the live chart to draw the new points")
            drawn = await tools.evaluate("document.querySelectorAll('#chart circle').length")
            assert drawn == FIRST + 3
            # every sample measured flow: one measured point per prediction, at the prediction's own seq
            measured = await tools.evaluate("[...document.querySelectorAll('#chart rect.measured')].map(r => r.dataset.seq)")
            assert measured == [str(seq) for seq in range(FIRST + 3)]
            rows = await tools.evaluate("[...document.querySelectorAll('#twins tbody tr')].map(r => r.dataset.entity)")
            assert rows == ["pump-0", "pump-1"]
            shot = await tools.call("Page.captureScreenshot", format="png")
            return base64.b64decode(shot["data"])
