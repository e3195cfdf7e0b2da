#!/usr/bin/env python
"""The throughput benchmark's peer: a hand-wired Quix Streams app with the worker's learner.

What a user without twinstream would write to get one online model per entity: a Quix
Streams ``Application`` that reads the telemetry topic, keeps a River
``StandardScaler | LinearRegression`` per message key in Quix's RocksDB state (pickled,
since Quix's default state serializer is JSON), predicts then learns on each labelled
event, and writes the prediction to an output topic. Changelog topics on and the default
commit interval (5 s), at-least-once: Quix's own defaults, as a user would leave them.
The one line a user would not write stamps each output with its send time (see below).

It runs as a subprocess of ``bench_peer.py`` under any interpreter that has
``quixstreams`` and ``river`` (``pip install -e '.[benchmarks]'``, or a separate venv),
so it imports nothing from twinstream. It runs until it is sent SIGTERM.
"""

from __future__ import annotations

import argparse
import pickle
import time
from typing import Any

from quixstreams import Application, State
from quixstreams.state.rocksdb import RocksDBOptions
from river import linear_model, optim, preprocessing


def new_model(lr: float) -> Any:
    """The model twinstream's ``river-linear`` learner wraps, with its defaults (SGD step ``lr`` for weights and intercept)."""
    return preprocessing.StandardScaler() | linear_model.LinearRegression(optimizer=optim.SGD(lr), intercept_lr=lr)


def build(args: argparse.Namespace) -> Application:
    app = Application(
        broker_address=args.broker,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=args.state_dir,
        rocksdb_options=RocksDBOptions(dumps=pickle.dumps, loads=pickle.loads),
    )
    source = app.topic(args.input, value_deserializer="json")
    sink = app.topic(args.output, value_serializer="json")

    def step(event: dict[str, Any], state: State) -> dict[str, Any]:
        model = state.get("model")
        if model is None:
            model = new_model(args.lr)
        features = {k: v for k, v in event["metrics"].items() if v is not None}
        value = float(model.predict_one(features))
        label = (event.get("targets") or {}).get("rul")
        if label is not None:
            model.learn_one(features, float(label))
        state.set("model", model)
        return {"entity_id": event["entity_id"], "event_time": event["event_time"], "seq": event["seq"], "target": "rul", "value": value}

    sdf = app.dataframe(source)
    sdf = sdf.apply(step, stateful=True)
    # Quix gives an output its input's timestamp; the benchmark times every arm by when its
    # outputs were produced (their CreateTime), so stamp the output with the time it is sent.
    sdf = sdf.set_timestamp(lambda _value, _key, _timestamp, _headers: time.time_ns() // 1_000_000)
    sdf.to_topic(sink)
    return app


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--broker", required=True, help="host:port")
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--state-dir", required=True)
    p.add_argument("--lr", type=float, default=0.01)
    args = p.parse_args()
    build(args).run()


if __name__ == "__main__":
    main()
