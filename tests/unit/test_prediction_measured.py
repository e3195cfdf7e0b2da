"""Predictions carry the measured value of their target from the same event, for the inspector's chart."""

from __future__ import annotations

from pathlib import Path

from test_processor_kinds import TWO_KINDS, message, processor

from twinstream.datasets.cmapss import load_subset
from twinstream.schemas.prediction import Prediction
from twinstream.streams.api.summary import prediction_view


def test_labels_and_forecast_metrics_are_measured_values(tmp_path: Path) -> None:
    proc = processor(tmp_path, TWO_KINDS)
    row = load_subset("FD001").train[0]
    out = proc.process([
        message("fd001-train-001", 0, row.sensors, {"rul": 191.0}),
        message("fd001-train-001", 1, row.sensors),  # no label on this event
        message("pump-0", 0, {"flow": 51.5, "pressure": 3.0, "temp": 40.0}),
        message("pump-0", 1, {"pressure": 3.0, "temp": 40.0}),  # flow not measured
        message("pump-0", 2, {"flow": 52.5, "pressure": 3.0, "temp": 40.0}, synthetic=True),  # a fill, not a measurement
    ])
    assert not out.dead_letters
    preds = [Prediction.model_validate_json(v) for _, v in out.predictions]
    label = [p.measured for p in preds if p.task == "label"]
    forecast = [p.measured for p in preds if p.task == "forecast"]
    anomaly = [p.measured for p in preds if p.task == "anomaly"]
    assert label == [191.0, None]
    assert forecast == [51.5, None, None]
    assert anomaly and set(anomaly) == {None}  # a score is not in the metric's units
    assert prediction_view(preds[0].model_dump(mode="json"))["measured"] == 191.0  # the API shows it
