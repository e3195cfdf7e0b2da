"""Is this input like what the model was trained on? Per-feature training quantiles, at event rate.

Why quantiles and not a density model: the check runs once per event per twin, must fit
in a prior's manifest as a few numbers per feature, and must say *which* feature is out
of range when an operator asks. A feature is out of domain when it lies outside its
training ``[q_low, q_high]`` band widened by ``margin`` times the band's width; the
domain score is the share of (finite) features that are out; the input is in domain
when no more than ``max_outside`` of them are.

>>> bounds = DomainBounds.fit([[float(i), 2.0 * i] for i in range(1000)], ["a", "b"])
>>> bounds.check([500.0, 1000.0])
(True, 0.0)
>>> bounds.check([500.0, 5000.0])
(False, 0.5)
>>> DomainBounds.from_manifest(bounds.to_manifest()).check([500.0, 5000.0])
(False, 0.5)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_QUANTILES = (0.005, 0.995)
DEFAULT_MARGIN = 0.1


@dataclass(frozen=True, slots=True)
class DomainBounds:
    """Per-feature accepted ranges, fitted on training features; stored in a prior's manifest."""

    names: tuple[str, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    max_outside: float = 0.0

    @classmethod
    def fit(
        cls,
        rows: Sequence[Sequence[float]] | np.ndarray,
        names: Sequence[str],
        quantiles: tuple[float, float] = DEFAULT_QUANTILES,
        margin: float = DEFAULT_MARGIN,
        max_outside: float = 0.0,
    ) -> DomainBounds:
        """Bounds from training rows (NaN ignored per feature; a feature never seen accepts anything)."""
        x = np.asarray(rows, dtype=float)
        if x.ndim != 2 or x.shape[1] != len(names):
            raise ValueError(f"expected rows of {len(names)} features, got shape {x.shape}")
        low, high = [], []
        for j in range(x.shape[1]):
            col = x[:, j][np.isfinite(x[:, j])]
            if col.size == 0:
                low.append(-np.inf)
                high.append(np.inf)
                continue
            lo, hi = np.quantile(col, quantiles)
            pad = margin * (hi - lo)
            low.append(float(lo - pad))
            high.append(float(hi + pad))
        return cls(tuple(names), tuple(low), tuple(high), max_outside)

    def score(self, x: Sequence[float]) -> float:
        """Share of the finite features of ``x`` outside their bounds (0 = fully in domain)."""
        seen = out = 0
        for v, lo, hi in zip(x, self.low, self.high):
            if v == v and v not in (np.inf, -np.inf):
                seen += 1
                if v < lo or v > hi:
                    out += 1
        return out / seen if seen else 0.0

    def check(self, x: Sequence[float]) -> tuple[bool, float]:
        """``(in_domain, score)`` for one feature vector in :attr:`names` order."""
        s = self.score(x)
        return s <= self.max_outside, s

    def check_named(self, features: Mapping[str, float | None]) -> tuple[bool, float]:
        """Same as :meth:`check` for features by name (missing ones are ignored)."""
        nan = float("nan")
        return self.check([nan if (v := features.get(n)) is None else float(v) for n in self.names])

    def outside(self, x: Sequence[float]) -> list[str]:
        """Names of the features of ``x`` that are out of their bounds (for logs and operators)."""
        return [n for n, v, lo, hi in zip(self.names, x, self.low, self.high) if v == v and (v < lo or v > hi)]

    def to_manifest(self) -> dict[str, Any]:
        """JSON-safe form for a prior's manifest (infinite bounds as None)."""
        def safe(values: tuple[float, ...]) -> list[float | None]:
            return [None if not np.isfinite(v) else v for v in values]
        return {"names": list(self.names), "low": safe(self.low), "high": safe(self.high), "max_outside": self.max_outside}

    @classmethod
    def from_manifest(cls, data: Mapping[str, Any]) -> DomainBounds:
        low = tuple(-np.inf if v is None else float(v) for v in data["low"])
        high = tuple(np.inf if v is None else float(v) for v in data["high"])
        return cls(tuple(data["names"]), low, high, float(data.get("max_outside", 0.0)))


class OnlineDomain:
    """A twin's own domain: bounds refitted now and then from a bounded window of what it has seen.

    Used when a twin has no prior: "in domain" then means "like this entity's own
    history". Until ``min_samples`` vectors have been seen the twin knows nothing, and
    says so (out of domain, score 1). Every ``stride``-th vector is kept, in a window of
    ``window`` (the default remembers the last ~2,000 events, about the memory of a
    regression with forgetting 0.9995, in 4 KB for 4 features).

    >>> dom = OnlineDomain(["a"], window=500, min_samples=100, refit_every=50, stride=1)
    >>> dom.check([1.0])
    (False, 1.0)
    >>> for i in range(200):
    ...     dom.observe([float(i % 10)])
    >>> dom.check([5.0]), dom.check([100.0])
    ((True, 0.0), (False, 1.0))
    """

    __slots__ = ("names", "window", "stride", "min_samples", "refit_every", "_buf", "_n", "_kept", "_bounds")

    def __init__(
        self, names: Sequence[str], window: int = 256, min_samples: int = 200, refit_every: int = 250, stride: int = 8
    ) -> None:
        self.names = tuple(names)
        self.window = int(window)
        self.stride = max(1, int(stride))
        self._kept = 0
        self.min_samples = int(min_samples)
        self.refit_every = int(refit_every)
        self._buf = np.full((self.window, len(self.names)), np.nan, dtype=np.float32)
        self._n = 0
        self._bounds: DomainBounds | None = None

    def observe(self, x: Sequence[float]) -> None:
        if self._n % self.stride == 0:
            self._buf[self._kept % self.window] = x
            self._kept += 1
        self._n += 1
        if self._n >= self.min_samples and (self._bounds is None or self._n % self.refit_every == 0):
            self._bounds = DomainBounds.fit(self._buf[: min(self._kept, self.window)], self.names)

    def check(self, x: Sequence[float]) -> tuple[bool, float]:
        if self._bounds is None:
            return False, 1.0
        return self._bounds.check(x)
