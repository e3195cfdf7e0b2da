"""Gaps and synthetic fills on the real broker, with real worker and sidecar processes.

(a) A sensor of one entity drops mid-stream: a gap message, fills on the synthetic topic
flagged synthetic=true, predictions for that entity keep flowing with a non-zero
synthetic share, and no measured value is ever replaced (checked against what was sent).
Another entity misses three whole samples: a missed-samples gap, whole-sample fills, and
its twin absorbs them (its update count catches up with its sequence numbers).
(b) Sidecar down: the twins keep predicting on measured data only; sidecar restarted:
it resumes from its committed offsets and fills the gap published while it was down.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from kafka import KafkaProducer
from worker_harness import TopicReader, WorkerProcess, committed_all, wait_until

from twinstream.broker import EmbeddedBroker
from twinstream.processes import settings_env
from twinstream.schemas import Gap, Prediction, Telemetry
from twinstream.schemas.topics import GAPS, PREDICTIONS, SYNTHETIC, TELEMETRY
from twinstream.settings import Settings
from twinstream.streams.sidecar import sidecar_app_id
from twinstream.streams.topic_admin import ensure_topics

ENTITIES = ("pump-1", "pump-2", "pump-3")
DROPPED = ("pump-2", "s3")
MISSED = ("pump-3", range(60, 63))  # samples pump-3 never sends
SENSORS = ("s1", "s2", "s3", "s4")
SIDECAR = "twinstream.streams.sidecar"


class Source:
    """Sends telemetry of a few entities (trend + noise per sensor) and remembers every value sent."""

    def __init__(self, bootstrap: str, namespace: str, total: int) -> None:
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
        self.topic = TELEMETRY.in_namespace(namespace).name
        self.t0 = datetime.now(UTC) - timedelta(seconds=total + 5)
        self.rng = random.Random(7)
        self.sent: dict[tuple[str, int], dict[str, float | None]] = {}
        self.next_offsets: dict[int, int] = {}

    def send_round(self, seq: int, drop: bool, miss: bool = False) -> None:
        futures = []
        for k, entity in enumerate(ENTITIES):
            if miss and entity == MISSED[0] and seq in MISSED[1]:
                continue
            metrics: dict[str, float | None] = {
                s: 100.0 * (j + 1) + 0.05 * (k + 1) * seq + self.rng.gauss(0.0, 0.5) for j, s in enumerate(SENSORS)
            }
            if drop and entity == DROPPED[0]:
                metrics[DROPPED[1]] = None
            self.sent[(entity, seq)] = metrics
            body = {"entity_id": entity, "event_time": self.t0 + timedelta(seconds=seq), "seq": seq, "metrics": metrics}
            futures.append(self.producer.send(self.topic, key=entity.encode(), value=orjson.dumps(body)))
        for future in futures:
            meta = future.get(timeout=30)
            self.next_offsets[meta.partition] = max(self.next_offsets.get(meta.partition, 0), meta.offset + 1)

    def send(self, seqs: range, drop: bool, pause_s: float = 0.0, miss: bool = False) -> None:
        for seq in seqs:
            self.send_round(seq, drop, miss)
            if pause_s:
                time.sleep(pause_s)

    def close(self) -> None:
        self.producer.close()


def setup(kafka_broker: EmbeddedBroker, app_id: str, tmp_path: Path) -> tuple[Settings, dict[str, str], str]:
    namespace = app_id.replace("-", "_")
    settings = Settings(broker=kafka_broker.url, app_id=app_id, topic_namespace=namespace, partitions=2,
                        data_dir=tmp_path / "state", sidecar_window=64,
                        twins_spec="none")  # single-learner mode: pumps of no declared kind
    ensure_topics(settings)
    return settings, settings_env(settings), namespace


def readers(bootstrap: str, namespace: str) -> tuple[TopicReader, TopicReader, TopicReader]:
    return (TopicReader(bootstrap, PREDICTIONS.in_namespace(namespace).name),
            TopicReader(bootstrap, GAPS.in_namespace(namespace).name),
            TopicReader(bootstrap, SYNTHETIC.in_namespace(namespace).name))


def predictions_by_key(reader: TopicReader) -> dict[tuple[str, int], list[Prediction]]:
    reader.poll()
    out: dict[tuple[str, int], list[Prediction]] = {}
    for message in reader.messages:
        p = Prediction.model_validate_json(message.value)
        out.setdefault((p.entity_id, p.seq), []).append(p)
    return out


def all_predicted(reader: TopicReader, source: Source) -> bool:
    return set(source.sent) <= set(predictions_by_key(reader))


def check_never_overwritten(source: Source, fills: list[Telemetry], predictions: dict[tuple[str, int], list[Prediction]]) -> None:
    """No fill names a value that was measured, and no prediction has more synthetic input than the values missing."""
    for fill in fills:
        sent = source.sent.get((fill.entity_id, fill.seq), {})  # absent: a sample never sent (missed)
        assert all(sent.get(name) is None for name in fill.metrics), (fill, sent)
    for (entity, seq), versions in predictions.items():
        missing = sum(1 for v in source.sent[(entity, seq)].values() if v is None)
        for p in versions:
            assert p.synthetic_share <= missing / len(SENSORS) + 1e-9, (p, source.sent[(entity, seq)])
            assert p.synthetic == (p.synthetic_share > 0)


def test_dropped_sensor_is_gap_filled_and_twins_use_the_fills(kafka_broker: EmbeddedBroker, app_id: str, tmp_path: Path) -> None:
    settings, env, namespace = setup(kafka_broker, app_id, tmp_path)
    bootstrap = kafka_broker.bootstrap_servers
    predictions, gaps, synthetic = readers(bootstrap, namespace)
    source = Source(bootstrap, namespace, total=100)
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    sidecar = WorkerProcess(env, tmp_path / "sidecar.log", module=SIDECAR).start()
    try:
        source.send(range(0, 40), drop=False)
        wait_until(lambda: all_predicted(predictions, source), 60, "predictions for the first 40 rounds")
        wait_until(lambda: committed_all(bootstrap, sidecar_app_id(settings), source.topic, source.next_offsets),
                   60, "the sidecar to consume the first 40 rounds", poll_s=1.0)
        # A fill for a value that pump-1 measured (a misbehaving producer): twins must refuse it.
        rogue = Telemetry(entity_id="pump-1", event_time=source.t0 + timedelta(seconds=10), seq=10,
                          metrics={"s1": -1.0e6}, synthetic=True, generator="rogue", confidence={"s1": 0.0})
        source.producer.send(SYNTHETIC.in_namespace(namespace).name, key=b"pump-1",
                             value=rogue.model_dump_json().encode()).get(timeout=30)
        source.send(range(40, 100), drop=True, pause_s=0.08, miss=True)  # pump-2 loses s3 from seq 40 on
        wait_until(lambda: all_predicted(predictions, source), 60, "predictions for every event")
        wait_until(lambda: synthetic.poll() >= 1 and gaps.poll() >= 1, 30, "a gap and fills")

        def settled() -> bool:
            """The sidecar consumed every sample, filled pump-3's missed ones, and pump-3's twin absorbed them."""
            gaps.poll(), synthetic.poll()
            missed = {Telemetry.model_validate_json(m.value).seq for m in synthetic.messages if m.key == b"pump-3"}
            last = predictions_by_key(predictions).get(("pump-3", 99))
            return (committed_all(bootstrap, sidecar_app_id(settings), source.topic, source.next_offsets)
                    and missed >= set(MISSED[1]) and len(gaps.messages) >= 2 and bool(last) and last[-1].updates == 100)

        wait_until(settled, 60, "the last fills and predictions", poll_s=0.5)
        assert worker.alive(), worker.log_tail()
        assert sidecar.alive(), sidecar.log_tail()
    finally:
        sidecar.stop()
        worker.stop()
        source.close()

    gap_list = [Gap.model_validate_json(m.value) for m in gaps.messages]
    assert sorted((g.entity_id, g.kind.value, g.sensors, g.first_seq, g.last_seq, g.open) for g in gap_list) == \
        [("pump-2", "missing_sensor", ["s3"], 40, 40, True), ("pump-3", "missed_samples", [], 60, 62, False)]
    every_fill = [Telemetry.model_validate_json(m.value) for m in synthetic.messages if m.key != b"pump-1"]
    missed = [f for f in every_fill if f.entity_id == MISSED[0]]
    fills = [f for f in every_fill if f.entity_id != MISSED[0]]
    assert fills, "no fills from the sidecar"
    # the missed samples: one whole-sample fill each, flagged, and absorbed by pump-3's twin
    assert sorted(f.seq for f in missed) == list(MISSED[1]) and all(f.synthetic and set(f.metrics) == set(SENSORS) for f in missed)
    assert all(f.synthetic and f.entity_id == "pump-2" and set(f.metrics) == {"s3"} and 40 <= f.seq < 100 for f in fills)
    assert all(f.confidence["s3"] >= 0.0 for f in fills)
    # s3 of these pumps shares its name with a C-MAPSS sensor of the generator but not its units:
    # whichever method the sidecar chose, these values come from the Kalman baseline, and say so
    assert {f.generator for f in fills} == {"kalman-llt-window-v1"}
    assert "sidecar fill method:" in (tmp_path / "sidecar.log").read_text(errors="replace")
    by_key = predictions_by_key(predictions)
    check_never_overwritten(source, every_fill, by_key)
    assert not any(("pump-3", seq) in by_key for seq in MISSED[1])  # absorbed, never predicted
    assert by_key[("pump-3", 59)][-1].updates == 60 and by_key[("pump-3", 63)][-1].updates == 61  # the hole, seen
    assert by_key[("pump-3", 99)][-1].updates == 100  # ... and filled: 97 measured + 3 absorbed samples
    # the fills are plausible: near the values s3 would have had (trend + noise of the sensor)
    truth = {seq: 300.0 + 0.05 * 2 * seq for seq in range(40, 100)}
    errors = [abs(f.metrics["s3"] - truth[f.seq]) for f in fills]
    assert sorted(errors)[len(errors) // 2] < 5.0, errors
    # predictions kept flowing for pump-2, with synthetic input once fills arrived
    shares = [by_key[("pump-2", seq)][-1].synthetic_share for seq in range(40, 100)]
    assert sum(share > 0 for share in shares) >= 1, shares
    assert all(share in (0.0, 0.25) for share in shares), shares  # 1 of 4 sensors, never more
    assert all(p.synthetic_share == 0.0 for key, ps in by_key.items() if key[0] != "pump-2" for p in ps)
    print(f"\nfills: {len(fills)} for {len(set(f.seq for f in fills))} seqs; pump-2 predictions with "
          f"synthetic input: {sum(s > 0 for s in shares)}/60; median |fill - trend| {sorted(errors)[len(errors) // 2]:.2f}")


def test_sidecar_down_then_restarted_resumes_from_committed_offsets(
    kafka_broker: EmbeddedBroker, app_id: str, tmp_path: Path
) -> None:
    settings, env, namespace = setup(kafka_broker, app_id, tmp_path)
    bootstrap = kafka_broker.bootstrap_servers
    predictions, gaps, synthetic = readers(bootstrap, namespace)
    source = Source(bootstrap, namespace, total=90)
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    sidecar = WorkerProcess(env, tmp_path / "sidecar.log", module=SIDECAR).start()
    try:
        source.send(range(0, 40), drop=False)
        wait_until(lambda: all_predicted(predictions, source), 60, "predictions for the first 40 rounds")
        wait_until(lambda: committed_all(bootstrap, sidecar_app_id(settings), source.topic, source.next_offsets),
                   60, "the sidecar to commit the first 40 rounds", poll_s=1.0)
        sidecar.kill()  # down hard: no shutdown hooks
        source.send(range(40, 70), drop=True, pause_s=0.02)  # pump-2 loses s3 while the sidecar is down
        wait_until(lambda: all_predicted(predictions, source), 60, "predictions while the sidecar is down")
        wait_until(lambda: gaps.poll() >= 1, 30, "the gap message")
        down = predictions_by_key(predictions)
        assert all(p.synthetic_share == 0.0 for ps in down.values() for p in ps), "synthetic input with no sidecar"
        assert synthetic.poll() == 0
        assert worker.alive(), worker.log_tail()

        sidecar = WorkerProcess({**env, "TWINSTREAM_LOG_LEVEL": "DEBUG"}, tmp_path / "sidecar.log", module=SIDECAR).start()

        def filled(seqs: range) -> bool:
            synthetic.poll()
            return {Telemetry.model_validate_json(m.value).seq for m in synthetic.messages} >= set(seqs)

        wait_until(lambda: filled(range(40, 70)), 60, "fills for the gap published while the sidecar was down")
        source.send(range(70, 90), drop=True, pause_s=0.08)
        wait_until(lambda: all_predicted(predictions, source), 60, "predictions after the restart")
        # The sidecar fills after the worker has predicted (its own consumer group): wait for
        # the last fills instead of a fixed pause, then a little longer so late duplicates count.
        wait_until(lambda: filled(range(40, 90)), 60, "fills for the samples sent after the restart")
        # Duplicates would come from the restarted sidecar re-processing input: once its group has committed every
        # sample, every fill it will ever make for them is on the topic (it commits after its fills are delivered).
        wait_until(lambda: committed_all(bootstrap, sidecar_app_id(settings), source.topic, source.next_offsets),
                   60, "the restarted sidecar to commit every sample", poll_s=0.5)
        synthetic.poll()
        assert sidecar.alive(), sidecar.log_tail()
    finally:
        sidecar.stop()
        worker.stop()
        source.close()

    fills = [Telemetry.model_validate_json(m.value) for m in synthetic.messages]
    counts = Counter((f.entity_id, f.seq) for f in fills)
    assert {seq for (_, seq) in counts} == set(range(40, 90))
    assert {entity for (entity, _) in counts} == {"pump-2"}
    duplicates = sum(n - 1 for n in counts.values())
    # Killed before the gap existed and not restarted since: every fill exactly once.
    assert duplicates == 0, counts
    by_key = predictions_by_key(predictions)
    check_never_overwritten(source, fills, by_key)
    after = [by_key[("pump-2", seq)][-1].synthetic_share for seq in range(70, 90)]
    assert sum(share > 0 for share in after) >= 1, after
    log = (tmp_path / "sidecar.log").read_text(errors="replace")
    # the restarted sidecar re-read the 120 records before its committed offset as context
    assert "re-read 120 telemetry records before the committed offsets" in log
    print(f"\nfills after restart: {len(fills)} ({duplicates} duplicates); pump-2 predictions with synthetic input "
          f"after the restart: {sum(s > 0 for s in after)}/20")
