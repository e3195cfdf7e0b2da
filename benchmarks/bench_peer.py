"""The peer arm p: the benchmark's input through a hand-wired Quix Streams app (bench_quix_app.py).

The app runs as a subprocess under ``--peer-python`` (default: this interpreter), so
Quix Streams can live in its own virtual environment: its pins (confluent-kafka < 2.13,
pydantic) differ from twinstream's test extra. When that interpreter cannot import
``quixstreams`` and ``river`` the arm is skipped and the JSON says why.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

from bench_arms import Bench, spawn
from bench_common import ArmResult

APP = Path(__file__).resolve().parent / "bench_quix_app.py"


def peer_available(python: str) -> tuple[str | None, str]:
    """(Quix Streams version, "") if ``python`` can run the peer app, else (None, why not)."""
    try:
        done = subprocess.run(
            [python, "-c", "import quixstreams, river; print(quixstreams.__version__)"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{python}: {exc}"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"{python} cannot import quixstreams and river ({last}); pip install -e '.[benchmarks]'"
    return done.stdout.strip().splitlines()[-1], ""


async def peer_arm(bench: Bench, repeat: int, python: str) -> ArmResult:
    """Arm p: one Quix Streams process, a fresh consumer group and state dir, outputs to ``out_p``."""
    group = f"bench-p-{bench.run_id}-r{repeat}-{uuid.uuid4().hex[:6]}"
    log = bench.workdir / f"{group}.log"
    state_dir = bench.workdir / f"{group}-state"
    command = [
        python,
        str(APP),
        "--broker",
        bench.servers,
        "--input",
        bench.input_topic,
        "--output",
        bench.out_topics["p"],
        "--group",
        group,
        "--state-dir",
        str(state_dir),
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def start() -> list[subprocess.Popen]:
        return [spawn(command, env, log)]

    return await bench.process_arm("p", repeat, start, [log], bench.out_topics["p"])
