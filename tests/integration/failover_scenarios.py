"""Failover and scale-out on the real broker: several workers of one group, a replay, a rebalance.

One scenario run starts workers (each with its own state dir), replays C-MAPSS FD001 into
the telemetry topic and, while the replay is held part-way, changes the group:

* ``kill``: two workers; one is SIGKILLed, the survivor takes over its partitions;
* ``join``: one worker; a second one starts and takes over some partitions;
* ``empty``: two workers; a third starts on an *empty* state dir, then the second is
  SIGKILLed, so the newcomer serves partitions it can only rebuild from the changelog.

Then it checks the promise: every (entity, seq) predicted, every twin's update count
equal to the events sent for it (on its last prediction and in its last checkpoint),
and no gap of missed samples (a twin that resumed from an older state than the offsets
it consumed from reports one). Used by ``test_failover.py`` and by
``benchmarks/failover_loop.py`` (the same scenarios, repeated).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from worker_harness import TopicReader, WorkerProcess, committed_all, latest_twins_from_changelog, wait_until

from twinstream.connectors.cmapss_replay import cmapss_events
from twinstream.connectors.producer import send_all
from twinstream.processes import settings_env
from twinstream.schemas.topics import GAPS, PREDICTIONS, TELEMETRY, TELEMETRY_DLQ
from twinstream.settings import Settings
from twinstream.streams.topic_admin import ensure_topics

SCENARIOS = ("kill", "join", "empty")
RATE = 2500.0  # events/s of the replay


@dataclass
class ScenarioResult:
    """What one run found; ``ok`` when nothing was lost, double-applied or missed."""

    scenario: str
    events: int = 0
    missing_predictions: int = 0
    twins_wrong_on_last_prediction: int = 0
    twins_wrong_in_checkpoint: int = 0
    missed_sample_gaps: int = 0
    dead_letters: int = 0
    seconds: float = 0.0
    error: str | None = None
    details: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and not (
            self.missing_predictions or self.twins_wrong_on_last_prediction or self.twins_wrong_in_checkpoint
            or self.missed_sample_gaps or self.dead_letters
        )


def run_scenario(scenario: str, bootstrap: str, broker_url: str, app_id: str, workdir: Path) -> ScenarioResult:
    """Run one scenario against a running broker; never raises for a failed check (see ``ok``)."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; expected one of {SCENARIOS}")
    started = time.monotonic()
    result = ScenarioResult(scenario)
    namespace = app_id.replace("-", "_")
    settings = Settings(broker=broker_url, app_id=app_id, topic_namespace=namespace, partitions=4,
                        data_dir=workdir / "state-1")
    ensure_topics(settings)
    events = cmapss_events("FD001")
    result.events = len(events)
    sent_per_entity = Counter(event.entity_id for event in events)
    hold_at, changed = int(len(events) * 0.7), threading.Event()
    next_offsets: dict[int, int] = {}
    replay_error: list[BaseException] = []

    def on_sent(count: int) -> None:
        if count == hold_at:  # the group change happens while the replay still has events to send
            changed.wait(timeout=300)

    def replay() -> None:
        try:
            asyncio.run(send_all(bootstrap, TELEMETRY.in_namespace(namespace).name, events, rate=RATE,
                                 show_progress=False, on_sent=on_sent, next_offsets=next_offsets))
        except BaseException as exc:  # reported below
            replay_error.append(exc)

    def worker(number: int) -> WorkerProcess:
        env = settings_env(settings.model_copy(update={"data_dir": workdir / f"state-{number}"}))
        return WorkerProcess(env, workdir / f"worker-{number}.log").start()

    predictions = TopicReader(bootstrap, PREDICTIONS.in_namespace(namespace).name)
    workers = [worker(1)] if scenario == "join" else [worker(1), worker(2)]
    producer = threading.Thread(target=replay, daemon=True)
    try:
        # Start the replay once the group serves every partition (first predictions can
        # only come after the initial assignment), so the change below is a rebalance
        # of a running group, not part of its start.
        wait_until(lambda: all(_has_joined(w) for w in workers), 120, "the workers to join the group")
        producer.start()
        wait_until(lambda: predictions.poll() >= 6000, 120, "6000 predictions before the group change")
        if scenario == "kill":
            workers[1].kill()
        elif scenario == "join":
            workers.append(worker(2))
        else:
            workers.append(worker(3))
            wait_until(lambda: _has_joined(workers[-1]), 120, "the empty-dir worker to join")
            workers[1].kill()
        changed.set()
        producer.join(timeout=300)
        if replay_error:
            raise replay_error[0]
        expected = {(event.entity_id, event.seq) for event in events}
        last: dict[str, tuple[int, int]] = {}

        def all_predicted() -> bool:
            predictions.poll()
            return len(expected) <= len({(m["entity_id"], m["seq"]) for m in _values(predictions)})

        wait_until(all_predicted, 240, "a prediction for every (entity, seq)", poll_s=0.5)
        wait_until(lambda: committed_all(bootstrap, app_id, TELEMETRY.in_namespace(namespace).name, next_offsets),
                   120, "the group to commit every telemetry offset", poll_s=1.0)
        seen = set()
        for value in _values(predictions):
            seen.add((value["entity_id"], value["seq"]))
            if value["seq"] >= last.get(value["entity_id"], (-1, 0))[0]:
                last[value["entity_id"]] = (value["seq"], value["updates"])
        result.missing_predictions = len(expected - seen)
        wrong = {e: last.get(e) for e, n in sent_per_entity.items() if last.get(e) != (n - 1, n)}
        result.twins_wrong_on_last_prediction = len(wrong)
        result.details += [f"last prediction of {e}: (seq, updates) = {v}" for e, v in sorted(wrong.items())[:5]]
        twins = latest_twins_from_changelog(bootstrap, f"{app_id}-twins-changelog")
        bad = {e: twins[e].updates if e in twins else None for e, n in sent_per_entity.items()
               if e not in twins or twins[e].updates != n}
        result.twins_wrong_in_checkpoint = len(bad)
        result.details += [f"checkpointed updates of {e}: {v}, sent {sent_per_entity[e]}" for e, v in
                           sorted(bad.items())[:5]]
        gaps = _read_all(bootstrap, GAPS.in_namespace(namespace).name)
        result.missed_sample_gaps = sum(1 for gap in gaps if gap.get("kind") == "missed_samples")
        result.dead_letters = len(_read_all(bootstrap, TELEMETRY_DLQ.in_namespace(namespace).name))
    except Exception as exc:  # a timeout is a failed run, reported with what is missing and the logs' tails
        result.error = f"{type(exc).__name__}: {exc}"
        predicted = {(m["entity_id"], m["seq"]) for m in _values(predictions)}
        missing = sorted({(event.entity_id, event.seq) for event in events} - predicted)
        result.missing_predictions = len(missing)
        result.details.append(f"missing predictions (first 10): {missing[:10]}")
        result.details.append(f"committed / produced telemetry offsets per partition: "
                              f"{_committed(bootstrap, app_id, TELEMETRY.in_namespace(namespace).name, next_offsets)}")
        for name, spec in (("dead letters", TELEMETRY_DLQ), ("gaps", GAPS)):
            found = _read_all(bootstrap, spec.in_namespace(namespace).name)
            result.details.append(f"{name}: {len(found)} {[_brief(v) for v in found[:10]]}")
        result.details += [f"--- {w.log_path.name}\n{w.log_tail(15)}" for w in workers]
    finally:
        changed.set()
        for w in workers:
            w.stop()
        predictions.close()
    result.seconds = round(time.monotonic() - started, 1)
    return result


def _has_joined(worker: WorkerProcess) -> bool:
    """The worker finished a rebalance (its log says so) and is still running."""
    if not worker.alive():
        raise AssertionError(f"worker exited:\n{worker.log_tail()}")
    return "rebalance complete" in worker.log_path.read_text(errors="replace")


def _committed(bootstrap: str, group: str, topic: str, next_offsets: dict[int, int]) -> dict[int, str]:
    """Each partition's committed offset against the next offset the producer was acknowledged."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return {p: f"{consumer.committed(TopicPartition(topic, p))} / {end}" for p, end in sorted(next_offsets.items())}
    finally:
        consumer.close()


def _brief(value: dict) -> dict:
    keep = ("entity_id", "reason", "error", "kind", "first_seq", "last_seq", "partition", "offset")
    return {k: value[k] for k in keep if k in value}


def _values(reader: TopicReader) -> list[dict]:
    return [orjson.loads(m.value) for m in reader.messages]


def _read_all(bootstrap: str, topic: str) -> list[dict]:
    """Every message of a topic (reading on until a poll brings nothing new)."""
    reader = TopicReader(bootstrap, topic)
    before = -1
    while before != reader.poll(1000):
        before = len(reader.messages)
    values = _values(reader)
    reader.close()
    return values
