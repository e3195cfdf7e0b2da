"""The worker's prior pull: ask the registry for the latest prior, verify it, hot-swap it.

Split in three so the logic is testable without a broker:

* :meth:`PriorPuller.check` — blocking I/O and verification (run in a thread by
  :meth:`PriorPuller.poll`): returns a verified, loaded :class:`FleetPrior` when the
  registry's latest version differs from the one in use, None when it is the same;
  raises :class:`RegistryUnavailable` or :class:`PriorRejected`.
* :meth:`PriorPuller.apply` — the swap (pure, on the event loop): the prior becomes the
  family's active prior and is swapped into every cached twin; personal state stays.
* :meth:`PriorPuller.poll` — the Faust timer body: never raises; on any failure the
  current prior stays, one log line says why, and
  ``twinstream_prior_pull_failures_total{reason}`` counts it.

A version that was rejected once is not downloaded again (its manifest digest is
remembered); a new publish is needed, which the registry makes a new version anyway.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager, nullcontext
from pathlib import Path
from typing import Any

from twinstream.federation.client import PriorRejected, RegistryClient, RegistryUnavailable, verify_and_install
from twinstream.models.prior import FleetPrior, PriorMismatchError
from twinstream.models.prior_twin import PriorTwin, active_prior, hot_swap
from twinstream.schemas.prior import FeatureSchema
from twinstream.streams.metrics import WorkerMetrics

log = logging.getLogger(__name__)


class PriorPuller:
    """Keeps the prior of one family in step with a registry.

    ``learners()`` yields the learners of the cached twins (the processor's);
    ``lock`` is held while swapping so no batch sees half a swap.
    """

    def __init__(
        self,
        client: RegistryClient,
        public_key: str,
        family: str,
        expected_schema: FeatureSchema,
        current_version: str | None,
        cache_dir: Path,
        learners: Callable[[], Iterable[object]],
        metrics: WorkerMetrics,
        lock: AbstractAsyncContextManager[Any] | None = None,
    ) -> None:
        self.client = client
        self.public_key = public_key
        self.family = family
        self.expected_schema = expected_schema
        self.current_version = current_version  # FleetPrior.manifest.version in use
        self.cache_dir = Path(cache_dir)
        self.learners = learners
        self.metrics = metrics
        self.lock = lock
        self.rejected: set[str] = set()  # sha256 of manifests refused before
        self._polling = False  # the start-up task and the timer must not overlap

    @property
    def prior_version(self) -> str | None:
        return f"{self.family}-v{self.current_version}" if self.current_version is not None else None

    def check(self) -> FleetPrior | None:
        """The registry's latest prior, verified, if it is not the one in use (blocking)."""
        if not self.public_key:
            raise PriorRejected("no registry public key configured (TWINSTREAM_PRIOR_REGISTRY_PUBLIC_KEY); refusing every prior")
        latest = self.client.latest_manifest(self.family)
        if latest is None:
            log.debug("prior pull: registry has no %s prior yet; keeping %s", self.family, self.prior_version)
            return None
        raw, manifest = latest
        if manifest.version == self.current_version:
            return None
        digest = hashlib.sha256(raw).hexdigest()
        if digest in self.rejected:
            return None
        try:
            download = self.client.download(self.family, manifest.version)
            return verify_and_install(download, self.public_key, self.family, self.expected_schema,
                                      self.cache_dir, manifest.version)
        except PriorRejected as exc:
            self.rejected.add(digest)
            raise PriorRejected(f"{manifest.prior_version}: {exc}") from None

    def apply(self, prior: FleetPrior) -> int:
        """Swap ``prior`` into every twin of its family; returns the number of twins swapped."""
        swapped = hot_swap(self.learners(), prior)
        old = self.prior_version
        self.current_version = prior.manifest.version
        self.metrics.prior_swaps.inc()
        log.info("prior pull: swapped %s -> %s in %d cached twins (personal state kept)",
                 old, prior.manifest.prior_version, swapped)
        return swapped

    async def poll(self) -> None:
        """One pull (the timer body). Never raises: failures keep the current prior."""
        if self._polling:
            return
        self._polling = True
        try:
            prior = await asyncio.to_thread(self.check)
            if prior is None:
                return
            async with self.lock if self.lock is not None else nullcontext():
                self.apply(prior)
        except RegistryUnavailable as exc:
            self.metrics.prior_pull_failures.labels("unavailable").inc()
            log.warning("prior pull: registry unavailable, keeping prior %s: %s", self.prior_version, exc)
        except (PriorRejected, PriorMismatchError) as exc:
            self.metrics.prior_pull_failures.labels("rejected").inc()
            log.error("prior pull: REFUSED prior, keeping prior %s: %s", self.prior_version, exc)
        except Exception as exc:  # a bug here must not stop the worker
            self.metrics.prior_pull_failures.labels("error").inc()
            log.exception("prior pull: unexpected error, keeping prior %s: %s", self.prior_version, exc)
        finally:
            self._polling = False


def puller_for_worker(settings: Any, processor: Any, metrics: WorkerMetrics, lock: Any) -> PriorPuller | None:
    """A puller for the worker's learner, or None (with a log line) when pulling does not apply."""
    from twinstream.models.registry import make_learner

    if not settings.prior_registry_url:
        return None
    learner = make_learner(settings.learner, **settings.learner_params)
    if not isinstance(learner, PriorTwin) or learner.prior_family is None:
        log.warning("prior pull: TWINSTREAM_PRIOR_REGISTRY_URL is set but learner %s has no fleet prior; not pulling",
                    settings.learner)
        return None
    family = learner.prior_family
    current = active_prior(family) or learner.fleet_prior
    assert current is not None
    return PriorPuller(
        client=RegistryClient(settings.prior_registry_url, timeout_s=settings.prior_registry_timeout_s),
        public_key=settings.prior_registry_public_key,
        family=family,
        expected_schema=learner.feature_schema(),
        current_version=current.manifest.version,
        cache_dir=Path(settings.data_dir) / "priors",
        learners=lambda: (twin.learner for twin in processor.twins.values()),
        metrics=metrics,
        lock=lock,
    )
