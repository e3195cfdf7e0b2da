"""Which Flower strategy aggregates the sites' updates: one validated config, one factory.

Aggregation is Flower's own strategy code (``flwr.serverapp.strategy``, the Message
API of flwr 1.42); nothing here averages arrays. Options:

* ``fedavg``: row-weighted mean of the sites' arrays (weight = ``num-examples``).
* ``fedavgm``: FedAvg's mean update applied with server momentum (``server_momentum``,
  server learning rate 1): the global model keeps moving along its recent updates.
* ``fedprox``: FedAvg on the server; sends ``proximal-mu`` in every training config and
  the site adds ``mu / 2 * ||w - w_global||^2`` to its local loss
  (:func:`twinstream.models.federated.local_fit`).
* ``fedadam``: FedAvg's mean taken as a pseudo-gradient, applied with server-side Adam
  (``server_lr``, ``beta_1``, ``beta_2``, ``tau``).
* ``fedmedian``: coordinate-wise median (robust to a few bad sites).
* ``krum``: the update closest to its neighbours (``num_malicious`` assumed bad sites).
* any of them wrapped in server-side differential privacy with fixed clipping
  (``dp_clip_norm`` set): each site's update (reply minus the sent arrays) is clipped to
  that L2 norm, then Gaussian noise with standard deviation
  ``dp_noise_multiplier * dp_clip_norm / sampled sites`` is added to the aggregate.

>>> cfg = StrategyConfig(name="fedprox", proximal_mu=0.01)
>>> type(make_strategy(cfg, num_sites=4)).__name__
'FedProx'
>>> type(make_strategy(StrategyConfig(name="fedavg", dp_clip_norm=1.0, dp_noise_multiplier=0.5), 4)).__name__
'DifferentialPrivacyServerSideFixedClipping'
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

StrategyName = Literal["fedavg", "fedavgm", "fedprox", "fedadam", "fedmedian", "krum"]
STRATEGIES: tuple[str, ...] = ("fedavg", "fedavgm", "fedprox", "fedadam", "fedmedian", "krum")


class StrategyConfig(BaseModel):
    """How the server aggregates (validated; frozen, so one config describes one run)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: StrategyName = "fedavg"
    proximal_mu: float = Field(0.01, ge=0.0, description="FedProx: weight of the proximal term (ignored by the others).")
    server_lr: float = Field(0.01, gt=0.0, description="FedAdam: server learning rate (eta).")
    server_momentum: float = Field(0.9, ge=0.0, lt=1.0, description="FedAvgM: server momentum (server learning rate 1).")
    beta_1: float = Field(0.9, ge=0.0, lt=1.0, description="FedAdam: first-moment decay.")
    beta_2: float = Field(0.99, ge=0.0, lt=1.0, description="FedAdam: second-moment decay.")
    tau: float = Field(1e-3, gt=0.0, description="FedAdam: adaptivity (epsilon).")
    num_malicious: int = Field(0, ge=0, description="Krum: number of sites assumed Byzantine.")
    dp_clip_norm: float | None = Field(
        None, gt=0.0, description="Server-side DP with fixed clipping: L2 clip norm of each site's update (None = no DP).")
    dp_noise_multiplier: float = Field(
        0.0, ge=0.0, description="Server-side DP: Gaussian noise std = multiplier * clip norm / sampled sites.")
    fraction_train: float = Field(1.0, gt=0.0, le=1.0, description="Share of connected sites asked to train each round.")
    fraction_evaluate: float = Field(
        0.0, ge=0.0, le=1.0, description="Share of sites asked to evaluate each round (0 = no federated evaluation).")
    min_nodes: int | None = Field(None, ge=1, description="Sites that must be connected (and trained) per round; default: all sites.")

    @model_validator(mode="after")
    def _dp_needs_clip(self) -> StrategyConfig:
        if self.dp_noise_multiplier > 0.0 and self.dp_clip_norm is None:
            raise ValueError("dp_noise_multiplier needs dp_clip_norm (server-side DP with fixed clipping)")
        return self

    @property
    def label(self) -> str:
        """Short name for reports, e.g. ``fedprox(mu=0.01)+dp(clip=1,noise=0.5)``."""
        base = {"fedavgm": f"fedavgm(m={self.server_momentum:g})", "fedprox": f"fedprox(mu={self.proximal_mu:g})",
                "fedadam": f"fedadam(lr={self.server_lr:g})",
                "krum": f"krum(f={self.num_malicious})"}.get(self.name, self.name)
        if self.dp_clip_norm is not None:
            base += f"+dp(clip={self.dp_clip_norm:g},noise={self.dp_noise_multiplier:g})"
        return base


def sampled_nodes(cfg: StrategyConfig, num_sites: int) -> int:
    """How many sites train per round under ``cfg`` (Flower's rule: max(fraction * connected, min))."""
    minimum = min(cfg.min_nodes or num_sites, num_sites)
    return max(int(num_sites * cfg.fraction_train), minimum)


def make_strategy(cfg: StrategyConfig, num_sites: int) -> Any:
    """The Flower 1.42 Message-API strategy for ``cfg`` with ``num_sites`` sites (a ``flwr.serverapp.strategy.Strategy``)."""
    from flwr.serverapp import strategy as fl

    if num_sites < 1:
        raise ValueError("num_sites must be at least 1")
    minimum = min(cfg.min_nodes or num_sites, num_sites)
    common: dict[str, Any] = {
        "fraction_train": cfg.fraction_train,
        "fraction_evaluate": cfg.fraction_evaluate,
        "min_train_nodes": minimum,
        "min_evaluate_nodes": minimum if cfg.fraction_evaluate > 0 else 0,
        "min_available_nodes": minimum,
    }
    if cfg.name == "fedavg":
        strategy = fl.FedAvg(**common)
    elif cfg.name == "fedavgm":
        strategy = fl.FedAvgM(**common, server_learning_rate=1.0, server_momentum=cfg.server_momentum)
    elif cfg.name == "fedprox":
        strategy = fl.FedProx(**common, proximal_mu=cfg.proximal_mu)
    elif cfg.name == "fedadam":
        strategy = fl.FedAdam(**common, eta=cfg.server_lr, beta_1=cfg.beta_1, beta_2=cfg.beta_2, tau=cfg.tau)
    elif cfg.name == "fedmedian":
        strategy = fl.FedMedian(**common)
    elif cfg.name == "krum":
        strategy = fl.Krum(**common, num_malicious_nodes=cfg.num_malicious)
    else:  # pragma: no cover - Literal validated
        raise ValueError(f"unknown strategy {cfg.name!r}")
    if cfg.dp_clip_norm is not None:
        strategy = fl.DifferentialPrivacyServerSideFixedClipping(
            strategy, noise_multiplier=cfg.dp_noise_multiplier, clipping_norm=cfg.dp_clip_norm,
            num_sampled_clients=sampled_nodes(cfg, num_sites),
        )
    return strategy


@contextlib.contextmanager
def flower_log_level(level: int = logging.ERROR) -> Iterator[None]:
    """Flower logs every round at INFO on its ``flwr`` logger (set to DEBUG when flwr is imported);
    an in-process evaluation shows its own progress instead, so raise the level for a while."""
    from flwr.supercore.logger import FLOWER_LOGGER  # import first: importing it resets the level

    saved = FLOWER_LOGGER.level
    FLOWER_LOGGER.setLevel(level)
    try:
        yield
    finally:
        FLOWER_LOGGER.setLevel(saved)
