"""Prediction: what a twin says about its entity after applying one telemetry event.

``(entity_id, seq, task, target)`` identifies a prediction: consumers and the InfluxDB
sink can de-duplicate on it, because after a crash a prediction may be published twice
(at-least-once delivery) but never with a different meaning. A twin of a kind with
several tasks (twins.yaml) publishes one prediction per task for each sample, so one
``(entity_id, seq)`` may carry a label prediction, a forecast and an anomaly score.

>>> p = Prediction(entity_id="engine-7", event_time="2026-01-01T00:00:00Z", seq=3,
...                target="rul", value=112.5, lower=90.0, upper=130.0, model_version="river-linreg-v1")
>>> p.prior_version is None, p.synthetic_share
(True, 0.0)

``synthetic_share`` is the share of synthetic values in the sensor input of the event
behind the prediction: ``s / (m + s)``, where ``m`` counts the sensor values of that
event that were measured and ``s`` those the twin took from synthetic samples (fills
from the sidecar) because the sensor was missing. Sensors missing with no fill count in
neither (the twin's features keep that sensor's last state). 0 for a fully measured
event (and for messages written before the field existed), 1 for a wholly synthetic
event. It describes this event's input only; the twin's smoothed features still carry
earlier synthetic values with a decaying weight. ``synthetic`` is true exactly when
the share is above 0 (or the event itself was synthetic).
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from twinstream.schemas.telemetry import EntityId, MetricName, datetime_to_ns


class Prediction(BaseModel):
    """A twin's point prediction with an interval, tagged with the models behind it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    entity_id: EntityId
    event_time: AwareDatetime = Field(description="Event time of the telemetry that produced it.")
    seq: int = Field(ge=0, description="Sequence number of that telemetry event.")
    target: MetricName = Field(description="What is predicted, e.g. 'rul' (remaining useful life, cycles).")
    value: float
    lower: float | None = Field(default=None, description="Lower bound of the prediction interval.")
    upper: float | None = Field(default=None, description="Upper bound of the prediction interval.")
    model_version: str = Field(description="Twin learner family and version.")
    prior_version: str | None = Field(default=None, description="Fleet prior version, when the twin uses one.")
    updates: int = Field(default=0, ge=0, description="Updates the twin had applied when it predicted.")
    synthetic: bool = Field(default=False, description="True when any input value behind it was synthetic (synthetic_share > 0).")
    synthetic_share: float = Field(
        default=0.0, ge=0.0, le=1.0,
        description="Synthetic values / (measured + synthetic values) in the sensor input of this event (module doc).",
    )
    kind: str | None = Field(default=None, max_length=64, description="Twin kind of the entity (twins.yaml); None without a spec.")
    task: Literal["label", "forecast", "anomaly"] = Field(
        default="label",
        description="label: a target delivered in telemetry (e.g. rul); forecast: target's value at target_seq; "
        "anomaly: a score in [0, 1] of this sample's surprise.",
    )
    target_seq: int | None = Field(
        default=None, ge=0, description="Sample the prediction is about: seq + horizon for a forecast, seq otherwise."
    )
    in_domain: bool | None = Field(
        default=None,
        description="False when the input lies outside what the model knows (its prior's training ranges, or the twin's own "
        "history); the interval is then widened and the prior not relied on. None: not checked.",
    )
    domain_score: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Share of the checked features outside their known range (0 = all inside)."
    )
    flagged: bool | None = Field(
        default=None,
        description="Anomaly tasks: the score reached the kind's threshold. "
        "Label tasks: the twin is in a drift alarm and answers from its own data (fallback).",
    )
    measured: float | None = Field(
        default=None,
        description="The measured value of target in the telemetry behind it: the label it carried (label tasks), or the "
        "metric's value at seq (forecasts; compare with the forecast whose target_seq is this seq). None when that event "
        "did not carry it, when the event was synthetic, and for anomaly scores (not in the metric's units).",
    )

    @model_validator(mode="after")
    def _check(self) -> Prediction:
        for name in ("value", "lower", "upper"):
            number = getattr(self, name)
            if number is not None and not math.isfinite(number):
                raise ValueError(f"{name} is not finite")
        if self.lower is not None and self.upper is not None and self.lower > self.upper:
            raise ValueError("lower bound above upper bound")
        if self.synthetic_share > 0.0 and not self.synthetic:
            raise ValueError("a prediction with synthetic input (synthetic_share > 0) is flagged synthetic")
        return self

    @property
    def event_time_ns(self) -> int:
        return datetime_to_ns(self.event_time)
