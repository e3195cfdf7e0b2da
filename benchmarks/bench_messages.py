"""The benchmark's input: synthetic telemetry messages shaped like C-MAPSS FD001."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import orjson


@dataclass(frozen=True, slots=True)
class Message:
    key: bytes
    value: bytes


def sensor_profile(sensors: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Sensor names and per-sensor mean and std: C-MAPSS FD001's informative sensors.

    The twins' feature code knows these names, so the learner does its real work; more
    sensors than C-MAPSS has get generic names with unit scale.
    """
    try:
        from twinstream.datasets.cmapss import INFORMATIVE_SENSORS, load_subset

        rows = load_subset("FD001").train
        names = list(INFORMATIVE_SENSORS[:sensors])
        table = np.array([[row.sensors[n] for n in names] for row in rows])
        mean, std = table.mean(axis=0), table.std(axis=0) + 1e-6
    except Exception:  # the bundled data is missing: fall back to generic sensors
        names, mean, std = [], np.zeros(0), np.zeros(0)
    extra = sensors - len(names)
    names += [f"x{i + 1}" for i in range(extra)]
    return names, np.concatenate([mean, np.full(extra, 100.0)]), np.concatenate([std, np.ones(extra)])


def make_messages(n: int, entities: int, sensors: int = 14, seed: int = 7, synthetic: bool = False) -> list[Message]:
    """``n`` telemetry messages, entities interleaved (message k: entity k % E, seq k // E).

    Sensors look like C-MAPSS FD001's: each entity has its own offset and drifts with wear
    plus noise; ``targets.rul`` counts down to its end of life, so the twins learn.
    Event times lie in the past. ``synthetic`` sets the messages' ``synthetic`` flag; off
    by default because the worker treats a flagged sample as generated input: its twins
    then predict but do not learn from it (``learn_from_synthetic``) and run no gap
    detector, which is not the work a plant's measured telemetry costs.
    """
    rng = np.random.default_rng(seed)
    names, mean, std = sensor_profile(sensors)
    per_entity = -(-n // entities)
    life = per_entity + rng.integers(0, max(per_entity, 1), size=entities)
    offset = mean + rng.normal(0.0, 0.3, size=(entities, sensors)) * std
    wear = rng.choice([-1.0, 1.0], size=sensors) * 2.0 * std  # drift over a whole life
    noise = rng.normal(0.0, 0.5, size=(n, sensors)) * std
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=per_entity + 120)
    times = [(start + timedelta(seconds=s)).isoformat() for s in range(per_entity)]
    ids = [f"unit-{i:05d}" for i in range(entities)]
    keys = [i.encode() for i in ids]
    out: list[Message] = []
    for k in range(n):
        e, seq = k % entities, k // entities
        row = offset[e] + wear * (seq / life[e]) + noise[k]
        value = memoryview(orjson.dumps(  # an exact-size copy: orjson's bytes keep a write buffer of several KB
            {
                "entity_id": ids[e],
                "event_time": times[seq],
                "seq": seq,
                "metrics": dict(zip(names, np.round(row, 4).tolist())),
                "targets": {"rul": float(life[e] - seq)},
                "source": "benchmark",
                "kind": "turbofan",  # C-MAPSS-like engines: the default twins spec's turbofan kind
                "schema_version": 1,
                "synthetic": synthetic,
            }
        )).tobytes()
        out.append(Message(keys[e], value))
    return out
