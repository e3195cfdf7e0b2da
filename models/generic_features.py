"""Causal per-entity features from a kind's declared metrics (no data set's sensor list in them).

Why these features: the same ideas that make an RUL twin personal work for any metric.
Per metric a fast and a slow exponentially weighted mean (noise filter and trend: their
difference), and the mean of the entity's own first samples (its personal baseline); the
deviation of the fast mean from that baseline removes the entity-to-entity offset a
fleet model cannot know. State is a few floats per metric, so a twin stays small. The
metric list comes from the kind (``twins.yaml``); the feature schema pins it, so a
prior trained on one kind's features is refused for another.

>>> fx = GenericFeatures(("flow", "temp"))
>>> for v in (1.0, 2.0, 3.0):
...     x = fx.update({"flow": v, "temp": None})
>>> x["age"], round(x["flow_ew"], 3), round(x["flow_dev"], 3), x["temp_dev"] != x["temp_dev"]
(3.0, 1.359, -0.641, True)
>>> fx.schema().extractor, fx.schema().names[:3]
('generic-features', ['age', 'flow_raw', 'flow_ew'])
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from twinstream.models.ew_features import advance_metrics
from twinstream.schemas.prior import FeatureSchema

EXTRACTOR = "generic-features"
EXTRACTOR_VERSION = "1"
NAN = float("nan")
KINDS = ("raw", "ew", "dev", "trend")


def feature_names(metrics: Sequence[str]) -> list[str]:
    """``age`` then ``<metric>_raw``, ``_ew``, ``_dev``, ``_trend`` per metric, in vector order."""
    return ["age"] + [f"{m}_{k}" for m in metrics for k in KINDS]


class GenericFeatures:
    """Per-entity feature state over the given metrics; ``update`` once per event, in event order.

    Missing or non-finite readings leave a metric's state unchanged (its raw feature is
    NaN); a metric never seen yields NaN features. Values named in ``synthetic`` (gap
    fills) move the means but never enter the personal baseline.
    """

    __slots__ = ("metrics", "fast_span", "slow_span", "baseline_n", "_af", "_as", "_fast", "_slow", "_bsum", "_bn", "n", "_names")

    def __init__(self, metrics: Sequence[str], fast_span: int = 15, slow_span: int = 60, baseline_n: int = 20) -> None:
        if not metrics:
            raise ValueError("a kind needs at least one metric for features")
        self.metrics = tuple(metrics)
        self.fast_span, self.slow_span, self.baseline_n = fast_span, slow_span, baseline_n
        self._af, self._as = 2.0 / (fast_span + 1.0), 2.0 / (slow_span + 1.0)
        k = len(self.metrics)
        self._fast, self._slow = [NAN] * k, [NAN] * k
        self._bsum, self._bn = [0.0] * k, [0] * k
        self.n = 0
        self._names = feature_names(self.metrics)

    def __getstate__(self) -> tuple:
        return (self.metrics, self.fast_span, self.slow_span, self.baseline_n, self._fast, self._slow, self._bsum, self._bn, self.n)

    def __setstate__(self, state: tuple) -> None:
        (self.metrics, self.fast_span, self.slow_span, self.baseline_n, self._fast, self._slow, self._bsum, self._bn, self.n) = state
        self._af, self._as = 2.0 / (self.fast_span + 1.0), 2.0 / (self.slow_span + 1.0)
        self._names = feature_names(self.metrics)

    def schema(self) -> FeatureSchema:
        """What a prior of this kind must have been trained on (extractor, parameters, names)."""
        return FeatureSchema(
            extractor=EXTRACTOR, extractor_version=EXTRACTOR_VERSION, names=list(self._names),
            params={"metrics": list(self.metrics), "fast_span": self.fast_span, "slow_span": self.slow_span,
                    "baseline_n": self.baseline_n},
        )

    def update_vector(self, values: Mapping[str, float | None], synthetic: Collection[str] = ()) -> list[float]:
        self.n += 1
        out = [float(self.n)]
        af, a_s, bn_max = self._af, self._as, self.baseline_n
        fast, slow, bsum, bn = self._fast, self._slow, self._bsum, self._bn
        advance_metrics(self.metrics, values, synthetic, fast, slow, bsum, bn, af, a_s, bn_max, out)
        return out

    def update(self, values: Mapping[str, float | None], synthetic: Collection[str] = ()) -> dict[str, float]:
        return dict(zip(self._names, self.update_vector(values, synthetic)))
