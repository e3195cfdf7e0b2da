"""What a prior twin does out of its prior's domain: hide, widen, weigh, abandon.

Why a module of its own: the rule is the part of the prior twin that was chosen by
cross-validation (``benchmarks/fallback_cv.py``) and will be again; keeping its state
machine and its thresholds together keeps :mod:`.prior_twin` to the learning itself.
:class:`DomainFallback` is a mixin of :class:`~.prior_twin.PriorTwin`: its state lives in
the twin's own attributes (pickled with it), set by the twin's constructor.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from twinstream.models.base import Features

if TYPE_CHECKING:
    from twinstream.models.prior_domain import FeatureDomain

OOD_WIDEN = 1.5  # interval half-width factor out of the prior's domain (as a kind twin's label task)
# Chosen by engine-level cross-validation on FD001's training engines (benchmarks/transfer.py, ``fallback_cv``).
MASK_OUTSIDE_ABOVE = 0.0  # domain score above which the prior hears only the features within its training ranges
FALLBACK_MARGIN = 0.0  # for the fallback, a feature is outside when beyond its range widened by this share of its width
FALLBACK_PERSIST = 10  # consecutive events beyond a fallback threshold before the fallback acts on it
ABANDON_PRIOR_ABOVE = 0.5  # domain score above which the prior is not used at all
MIN_EVIDENCE = 2  # own labels before the twin weighs its own estimate against the prior's out of domain
EVIDENCE_ALPHA = 0.2  # weight of the newest label in the running squared errors


class DomainFallback:
    """The out-of-domain state of a prior twin, judged per event (see the module docstring of :mod:`.prior_twin`)."""

    # Set by PriorTwin.__init__ / __setstate__ / _attach_domain.
    cap: float
    mask_outside_above: float
    abandon_prior_above: float
    fallback_persist: int
    _domain: FeatureDomain | None
    _domain_score: float
    _in_domain: bool
    _far: bool
    _fallback: bool
    _alarm: bool
    _runs: list[int]
    _evidence: list[float]
    _last_label: tuple[float, float] | None
    # and PriorTwin._with_prior(x): the prior's answer with the twin's personal correction

    @property
    def domain_state(self) -> tuple[bool, float] | None:
        """(in the prior's domain, share of features outside) for the latest event; None without a domain check."""
        return (self._in_domain, self._domain_score) if self._domain is not None else None

    @property
    def in_alarm(self) -> bool:
        """A drift alarm is active: the latest prediction fell back (until inputs are back in the prior's domain)."""
        return self._alarm

    @property
    def fallback(self) -> bool:
        """The latest event was answered in fallback (out of domain beyond ``mask_outside_above``, or in alarm)."""
        return self._fallback

    def _judge(self, score: float, outside: float) -> None:
        """This event's domain state from its domain score and its share outside the fallback's (widened) ranges.

        Only for a twin with a domain check (``_domain`` set): :meth:`_observe_vector` and the wave's batch call it.
        """
        self._domain_score = score
        self._in_domain = score <= self._domain.max_outside  # type: ignore[union-attr]
        runs = self._runs
        runs[0] = runs[0] + 1 if outside > self.mask_outside_above else 0
        runs[1] = runs[1] + 1 if outside > self.abandon_prior_above else 0
        self._far = runs[1] >= self.fallback_persist
        if self._alarm and self._in_domain:
            self._alarm = False  # back in the prior's domain
        self._fallback = runs[0] >= self.fallback_persist or self._alarm

    def _prior_weight(self) -> float:
        """Weight of the prior's answer against the twin's own estimate (1 in the prior's full domain).

        In fallback (a feature outside the prior's ranges, or in alarm), once the twin has
        ``MIN_EVIDENCE`` own labels, each side is weighted by the other's recent squared
        error on them (inverse-variance weighting): a prior that keeps being right for this
        entity is kept, one that is not gives way to the entity's own labels. Where every
        feature is within the prior's ranges the prior's answer (with the twin's personal
        correction learned from the same labels) stands, so a swapped-in prior takes effect.
        """
        n, err_prior, err_own = self._evidence
        if not self._fallback or n < MIN_EVIDENCE:
            return 1.0
        total = err_prior + err_own
        return 0.5 if total <= 0.0 else err_own / total

    def _own_estimate(self, x: Features) -> float:
        """Out of the prior's domain: the twin's own latest label carried forward by its age, else mid-range."""
        if self._last_label is None:
            return self.cap / 2.0
        label, at_age = self._last_label
        age = x.get("age")
        elapsed = float(age) - at_age if age is not None and math.isfinite(age) else 0.0
        return min(max(label - max(elapsed, 0.0), 0.0), self.cap)

    def _widened(self, half: float) -> float:
        """Out of domain (or in alarm): the half-width grows with the domain score, to the whole range at abandonment.

        Why progressive: the calibration holds for inputs like the prior's training rows; the
        more features lie outside them, the less it says, and at ``abandon_prior_above`` the
        answer is the whole range [0, cap]. Between the manifest's tolerance and that level
        the half-width moves linearly from ``OOD_WIDEN`` times the calibrated one to cap / 2.
        """
        half *= OOD_WIDEN
        if self._domain is None:
            return half
        low, high = self._domain.max_outside, self.abandon_prior_above
        t = 1.0 if high <= low else min(max((self._domain_score - low) / (high - low), 0.0), 1.0)
        return max(half, (1.0 - t) * half + t * self.cap / 2.0)

    def _weigh_evidence(self, x: Features, target: float, with_prior: float) -> None:
        """Running squared errors of the prior's answer (``with_prior``, for ``x``) and of the own estimate on this label.

        Both are the answers before learning the label.
        """
        if self._last_label is None:  # no own estimate yet to compare (mid-range is not the twin's own)
            return
        ev = self._evidence
        a = EVIDENCE_ALPHA if ev[0] else 1.0
        ev[1] += a * ((target - with_prior) ** 2 - ev[1])
        ev[2] += a * ((target - self._own_estimate(x)) ** 2 - ev[2])
        ev[0] += 1.0
