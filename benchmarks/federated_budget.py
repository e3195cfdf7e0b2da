"""How the design and budget of ``twinstream eval federated`` were chosen, without the test set.

Each of the 4 lifetime sites holds out every 5th of its engines (3rd, 8th, ... in unit
order); priors are trained on the rest with the evaluation's own code
(:func:`twinstream.federated_eval.train_alone` / ``train_federated``: Flower strategies,
in process) and scored on the held-out engines' rows whose true RUL is 5-145 (the range
of FD001's test RULs), against the uncapped true RUL. A row's features are causal, so
its prediction is what an unlabelled twin of that engine would predict had its stream
stopped there: the learning-core protocol's score for a test engine cut at that cycle.

    python benchmarks/federated_budget.py "80,1,0.3,sgd,joint,fedavg" "80,1,0.3,sgd,joint,fedadam:0.03"

Spec: rounds,local epochs,learning rate,optimizer,joint|two-phase,strategy[:FedAdam server lr][,epochs]
(a 7th field ``epochs``: federated sites run whole local epochs instead of equal steps).
"""

from __future__ import annotations

import sys
import time

import numpy as np

from twinstream.federated_eval import FederatedEvalConfig, train_alone, train_federated
from twinstream.federation.strategies import StrategyConfig, flower_log_level
from twinstream.models import federated as fm
from twinstream.models.federated_data import SiteData, site_engines


def split_holdout() -> tuple[list[SiteData], SiteData]:
    pooled = fm.pooled([fm.load_site_data(None, site=s) for s in fm.site_names()])
    train, held = [], []
    for name, engines in site_engines(None).items():
        held_out = set(sorted(engines)[2::5])
        for bucket, units in ((train, set(engines) - held_out), (held, held_out)):
            m = np.isin(pooled.units, sorted(units))
            bucket.append(SiteData(name, pooled.x[m], pooled.y[m], pooled.units[m], pooled.true_rul[m]))
    return train, fm.pooled(held)


def score(prior, held: SiteData) -> tuple[float, float]:
    """(prior head, prior + twin) RMSE on held-out rows with true RUL 5-145."""
    a, b = fm._forward(prior.arrays, *fm._inputs(held.x, prior.norm))
    sel = (held.true_rul >= 5) & (held.true_rul <= 145)
    return tuple(float(np.sqrt(np.mean((fm.CAP * p[sel] - held.true_rul[sel]) ** 2))) for p in (a, b))  # type: ignore[return-value]


def main(specs: list[str]) -> None:
    sites, held = split_holdout()
    everyone = fm.pooled(sites)
    print("spec | centralized prior, prior+twin | federated prior, prior+twin | federated vs centralized (prior+twin)")
    for spec in specs:
        rounds, epochs, lr, optimizer, schedule, strategy, *rest = spec.split(",")
        name, _, server_lr = strategy.partition(":")
        cfg = FederatedEvalConfig(rounds=int(rounds), epochs=int(epochs), lr=float(lr), optimizer=optimizer,
                                  two_phase=schedule == "two-phase", equal_steps="epochs" not in rest)
        sc = StrategyConfig(name=name, server_lr=float(server_lr or 0.01))  # type: ignore[arg-type]
        start = time.perf_counter()
        with flower_log_level():
            norm = fm.local_normalization(everyone)
            c = score(train_alone("centralized", everyone, norm, cfg, None), held)
            f = score(train_federated(sc, sites, norm, cfg, None), held)
        print(f"{spec} | {c[0]:.2f}, {c[1]:.2f} | {f[0]:.2f}, {f[1]:.2f} | {f[1] / c[1] - 1:+.1%} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["80,1,0.3,sgd,joint,fedavg"])
