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

A declared kind whose ``prior:`` is ``{registry: FAMILY}`` gets its prior at worker
start from :class:`RegistryPriors` (the latest verified version; when the registry
cannot be reached, the newest cached copy whose signature still verifies; else no
prior, said in a warning), and then one puller per such family
(:func:`kind_pullers`) keeps that kind's twins on the latest version.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager, nullcontext
from pathlib import Path
from typing import Any

from twinstream.federation.client import PriorRejected, RegistryClient, RegistryUnavailable, verify_and_install
from twinstream.federation.signing import SignatureError, verify
from twinstream.models.prior import FleetPrior, PriorMismatchError, load_prior
from twinstream.models.prior_twin import PriorTwin, active_prior, hot_swap
from twinstream.schemas.prior import MANIFEST_FILE, FeatureSchema
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
        learners=lambda: (twin.learner for twin in processor.twins_about_to_change()),
        metrics=metrics,
        lock=lock,
    )


class RegistryPriors:
    """A kind's registry prior at worker start (``prior: {registry: FAMILY}``); cached under ``<data_dir>/priors``.

    Why a cache fallback: a worker restarted while the registry is down must not lose the
    prior its twins were using. A cached copy is used only if its manifest's signature
    (``signature.json``, kept by :func:`verify_and_install`) verifies under the configured
    key and its weights still match the manifest, as for a download.
    """

    def __init__(self, url: str | None, public_key: str, cache_dir: Path, timeout_s: float = 5.0) -> None:
        self.url = url or ""
        self.public_key = public_key
        self.cache_dir = Path(cache_dir)
        self.timeout_s = timeout_s

    @classmethod
    def from_settings(cls, settings: Any) -> RegistryPriors:
        return cls(settings.prior_registry_url, settings.prior_registry_public_key, Path(settings.data_dir) / "priors",
                   settings.prior_registry_timeout_s)

    def fetch(self, family: str, schema: FeatureSchema, kind: str) -> Path | None:
        """The directory of ``family``'s latest verified prior (registry, else cache), or None (logged as a warning)."""
        reason = "TWINSTREAM_PRIOR_REGISTRY_URL is not set"
        if not self.public_key:
            log.warning("kind %s: prior from registry family %s: no TWINSTREAM_PRIOR_REGISTRY_PUBLIC_KEY, refusing every "
                        "prior; starting WITHOUT a prior", kind, family)
            return None
        if self.url:
            client = RegistryClient(self.url, timeout_s=self.timeout_s)
            try:
                latest = client.latest_manifest(family)
                if latest is None:
                    reason = f"the registry {self.url} has no {family} prior yet"
                else:
                    version = latest[1].version
                    prior = verify_and_install(client.download(family, version), self.public_key, family, schema,
                                               self.cache_dir, version)
                    log.info("kind %s: prior %s from the registry %s", kind, prior.manifest.prior_version, self.url)
                    return prior.directory
            except RegistryUnavailable as exc:
                reason = f"the registry is unreachable ({exc})"
            except (PriorRejected, PriorMismatchError) as exc:
                reason = f"the registry's latest prior was REFUSED ({exc})"
            finally:
                client.close()
        cached = self.cached(family, schema)
        if cached is not None:
            log.warning("kind %s: %s; using the cached prior %s/%s", kind, reason, family, cached.name)
            return cached
        log.warning("kind %s: %s and no verified cached %s prior; starting WITHOUT a prior (predictions' prior_version "
                    "is null; a restart with the registry reachable fetches one)", kind, reason, family)
        return None

    def cached(self, family: str, schema: FeatureSchema) -> Path | None:
        """The newest cached version of ``family`` that still verifies (signature, weights, feature schema)."""
        root = self.cache_dir / family
        if not root.is_dir():
            return None
        versions = sorted((d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")),
                          key=lambda d: (d.name.isdigit(), int(d.name) if d.name.isdigit() else 0, d.name), reverse=True)
        for directory in versions:
            try:
                signature = json.loads((directory / "signature.json").read_text())["signature"]
                verify(self.public_key, (directory / MANIFEST_FILE).read_bytes(), str(signature))
                load_prior(directory, schema, cache=False)
                return directory
            except (OSError, ValueError, KeyError, SignatureError, PriorMismatchError) as exc:
                log.warning("cached prior %s/%s not used: %s", family, directory.name, exc)
        return None


def kind_pullers(settings: Any, processor: Any, metrics: WorkerMetrics, lock: Any) -> list[PriorPuller]:
    """One puller per registry family of the worker's declared kinds that started with a prior of that family."""
    kinds = getattr(processor, "kinds", None)
    if kinds is None or not settings.prior_registry_url:
        return []
    pullers = []
    for name, family in sorted(getattr(kinds, "registry_families", {}).items()):
        prior = kinds.priors.get(name)
        if prior is None or prior.label is None:
            continue  # started without a prior: nothing a swap can replace (a restart picks up a newer one)
        current = active_prior(family) or prior.label
        pullers.append(PriorPuller(
            client=RegistryClient(settings.prior_registry_url, timeout_s=settings.prior_registry_timeout_s),
            public_key=settings.prior_registry_public_key,
            family=family,
            expected_schema=prior.manifest.feature_schema,
            current_version=current.manifest.version,
            cache_dir=Path(settings.data_dir) / "priors",
            learners=lambda kind=name: (t.learner for t in processor.twins_about_to_change() if t.kind == kind),
            metrics=metrics,
            lock=lock,
        ))
    return pullers
