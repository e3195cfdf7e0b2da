"""Causal per-entity features for remaining-useful-life twins, in bounded state.

Why these features: an engine's current readings (``_raw``: all that a stateless fleet
model can see) mix noise, the engine's own manufacturing offset and wear. A twin sees
one engine and only its past, so it keeps, per sensor, a fast and a slow exponentially
weighted mean (noise filter and trend), and the mean of the engine's own first cycles
(its personal baseline). The deviation from that baseline removes the engine-to-engine
offset that a fleet model cannot know. State is a few floats per
sensor (no windows), so a twin stays small however long it lives.

The same class computes the features for prior training (offline, over history) and in
the live twin, so the prior never sees features the twin cannot produce.

>>> fx = RulFeatures(sensors=("s2", "s3"))
>>> for v in (1.0, 2.0, 3.0):
...     x = fx.update({"s2": v, "s3": None})
>>> x["age"], round(x["s2_ew"], 3), round(x["s2_dev"], 3), x["s3_dev"]
(3.0, 1.359, -0.641, nan)
>>> fx.schema().names[:3]
['age', 's2_raw', 's2_ew']
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from twinstream.models.ew_features import advance_metrics
from twinstream.schemas.prior import FeatureSchema

# The sensors the RUL prior family is defined on (the bundled prior's feature schema
# records them): the 14 of C-MAPSS that vary, the usual set in the literature. A model
# constant, not an import of the data set, because a twin's features must not depend on
# what data happens to be installed (a test checks it matches the C-MAPSS loader's list).
RUL_SENSORS: tuple[str, ...] = ("s2", "s3", "s4", "s7", "s8", "s9", "s11", "s12", "s13", "s14", "s15", "s17", "s20", "s21")

EXTRACTOR = "rul-features"
EXTRACTOR_VERSION = "2"
NAN = float("nan")


class RulFeatures:
    """Per-entity feature state: EW means (fast, slow) and an early baseline per sensor.

    ``update`` is called once per event, in event order, and returns the features for that
    event. Missing or non-finite readings leave a sensor's state unchanged; a sensor never
    seen yields NaN features (the prior imputes them).
    """

    __slots__ = ("sensors", "fast_span", "slow_span", "baseline_n", "_af", "_as", "_fast", "_slow", "_bsum", "_bn", "n")

    def __init__(
        self,
        sensors: Sequence[str] = RUL_SENSORS,
        fast_span: int = 15,
        slow_span: int = 60,
        baseline_n: int = 20,
    ) -> None:
        self.sensors = tuple(sensors)
        self.fast_span = fast_span
        self.slow_span = slow_span
        self.baseline_n = baseline_n
        self._af = 2.0 / (fast_span + 1.0)
        self._as = 2.0 / (slow_span + 1.0)
        k = len(self.sensors)
        self._fast: list[float] = [NAN] * k
        self._slow: list[float] = [NAN] * k
        self._bsum: list[float] = [0.0] * k
        self._bn: list[int] = [0] * k
        self.n = 0

    def __getstate__(self) -> tuple:
        return (self.sensors, self.fast_span, self.slow_span, self.baseline_n, self._fast, self._slow, self._bsum, self._bn, self.n)

    def __setstate__(self, state: tuple) -> None:
        (self.sensors, self.fast_span, self.slow_span, self.baseline_n, self._fast, self._slow, self._bsum, self._bn, self.n) = state
        self._af = 2.0 / (self.fast_span + 1.0)
        self._as = 2.0 / (self.slow_span + 1.0)

    def schema(self) -> FeatureSchema:
        """The feature schema this extractor produces (what a prior must have been trained on)."""
        return FeatureSchema(
            extractor=EXTRACTOR,
            extractor_version=EXTRACTOR_VERSION,
            names=feature_names(self.sensors),
            params={
                "sensors": list(self.sensors),
                "fast_span": self.fast_span,
                "slow_span": self.slow_span,
                "baseline_n": self.baseline_n,
            },
        )

    def update_vector(self, metrics: Mapping[str, float | None], synthetic: Collection[str] = ()) -> list[float]:
        """Advance the state by one event; features as a list in :func:`feature_names` order.

        Sensors named in ``synthetic`` (gap fills from the sidecar) move the smoothing
        means like any reading but never enter the personal baseline: the baseline shifts
        every later deviation feature, so it is formed from measured readings only (it
        keeps collecting past ``baseline_n`` events until it has that many).
        """
        self.n += 1
        out = [float(self.n)]
        af, a_s, bn_max = self._af, self._as, self.baseline_n
        fast, slow, bsum, bn = self._fast, self._slow, self._bsum, self._bn
        advance_metrics(self.sensors, metrics, synthetic, fast, slow, bsum, bn, af, a_s, bn_max, out)
        return out

    def update(self, metrics: Mapping[str, float | None], synthetic: Collection[str] = ()) -> dict[str, float]:
        """Advance the state by one event; features by name (``synthetic``: see :meth:`update_vector`)."""
        return dict(zip(feature_names(self.sensors), self.update_vector(metrics, synthetic)))


_NAMES_CACHE: dict[tuple[str, ...], list[str]] = {}


def stateless_names(sensors: Sequence[str] = RUL_SENSORS) -> list[str]:
    """The features that need no per-entity history: age and the current readings.

    The fleet prior alone sees only these; the twin's personal state adds the rest.

    >>> stateless_names(("s2", "s3"))
    ['age', 's2_raw', 's3_raw']
    """
    return ["age"] + [f"{s}_raw" for s in sensors]


def feature_names(sensors: Sequence[str] = RUL_SENSORS) -> list[str]:
    """Feature names, in vector order: ``age`` then ``<sensor>_raw``, ``_ew``, ``_dev``, ``_trend`` per sensor."""
    key = tuple(sensors)
    names = _NAMES_CACHE.get(key)
    if names is None:
        names = ["age"] + [f"{s}_{kind}" for s in key for kind in ("raw", "ew", "dev", "trend")]
        _NAMES_CACHE[key] = names
    return list(names)
