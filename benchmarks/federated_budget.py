"""How the design and budget of ``twinstream eval federated`` were chosen, without the test set.

Each of the 4 lifetime sites holds out every 5th of its engines (3rd, 8th, ... in unit
order; other folds with ``fold=K``); priors are trained on the rest with the evaluation's own code
(:func:`twinstream.evaluation.federated_eval.train_alone` / ``train_federated``: Flower strategies,
in process) and scored on the held-out engines' rows whose true RUL is 5-145 (the range
of FD001's test RULs), against the uncapped true RUL. A row's features are causal, so
its prediction is what an unlabelled twin of that engine would predict had its stream
stopped there: the learning-core protocol's score for a test engine cut at that cycle.

    python benchmarks/federated_budget.py "80,1,0.3,sgd,joint,fedavg" "80,1,0.3,sgd,joint,fedavgm:0.9,frounds=320,steps=5,fold=0"

Spec: rounds,local epochs,learning rate,optimizer,joint|two-phase,strategy[:server lr or momentum][,extra...]
(strategy ``fedadam:0.03`` sets FedAdam's server lr, ``fedavgm:0.75`` FedAvgM's server momentum). Extra
fields: ``epochs`` (federated sites run whole local epochs instead of equal steps), ``steps=N``
(federated local steps per site and round), ``frounds=N`` (federated rounds, default ``rounds``),
``crounds=N`` (centralized passes, default ``rounds``), ``fold=K`` (hold out engines K, K+5, ... of
each site in unit order, 0-4; default 2, the 3rd, 8th, ...). The centralized prior of a given
(passes, epochs, lr, optimizer, schedule) is trained once per invocation.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from twinstream.evaluation.federated_eval import FederatedEvalConfig, train_alone, train_federated
from twinstream.federation.strategies import StrategyConfig, flower_log_level
from twinstream.models import federated as fm
from twinstream.models.federated_data import SiteData, site_engines


def split_holdout(fold: int = 2) -> tuple[list[SiteData], SiteData]:
    pooled = fm.pooled([fm.load_site_data(None, site=s) for s in fm.site_names()])
    train, held = [], []
    for name, engines in site_engines(None).items():
        held_out = set(sorted(engines)[fold::5])
        for bucket, units in ((train, set(engines) - held_out), (held, held_out)):
            m = np.isin(pooled.units, sorted(units))
            bucket.append(SiteData(name, pooled.x[m], pooled.y[m], pooled.units[m], pooled.true_rul[m]))
    return train, fm.pooled(held)


def score(prior, held: SiteData) -> tuple[float, float]:
    """(prior head, prior + twin) RMSE on held-out rows with true RUL 5-145."""
    a, b = fm._forward(prior.arrays, *fm._inputs(held.x, prior.norm))
    sel = (held.true_rul >= 5) & (held.true_rul <= 145)
    return tuple(float(np.sqrt(np.mean((fm.CAP * p[sel] - held.true_rul[sel]) ** 2))) for p in (a, b))  # type: ignore[return-value]


def fit(prior, rows: SiteData) -> float:
    """Prior + twin RMSE on training rows against the capped RUL (the training target): how well it is optimised."""
    return float(fm.evaluate_arrays(prior.arrays, rows, prior.norm)["rmse_twin"])


def main(specs: list[str]) -> None:
    splits: dict[int, tuple[list[SiteData], SiteData]] = {}
    print("spec | centralized prior, prior+twin | federated prior, prior+twin | federated vs centralized (prior+twin) "
          "| training-row fit (prior+twin vs capped RUL): centralized, federated")
    central: dict[tuple, tuple[tuple[float, float], float]] = {}
    for spec in specs:
        rounds, epochs, lr, optimizer, schedule, strategy, *rest = spec.split(",")
        extra = dict(r.split("=", 1) for r in rest if "=" in r)
        fold = int(extra.get("fold", 2))
        if fold not in splits:
            splits[fold] = split_holdout(fold)
        sites, held = splits[fold]
        everyone = fm.pooled(sites)
        norm = fm.local_normalization(everyone)
        name, _, server = strategy.partition(":")
        common = dict(epochs=int(epochs), lr=float(lr), optimizer=optimizer, two_phase=schedule == "two-phase")
        ccfg = FederatedEvalConfig(rounds=int(extra.get("crounds", rounds)), **common)
        fcfg = FederatedEvalConfig(rounds=int(extra.get("frounds", rounds)), equal_steps="epochs" not in rest, rounds_per_pass=1,
                                   local_steps=int(extra.get("steps", 0)), **common)
        sc = StrategyConfig(name=name, **({"server_momentum": float(server)} if name == "fedavgm" and server  # type: ignore[arg-type]
                                          else {"server_lr": float(server or 0.01)}))
        start = time.perf_counter()
        with flower_log_level():
            key = (fold, ccfg.rounds, *common.values())
            if key not in central:
                prior = train_alone("centralized", everyone, norm, ccfg, None)
                central[key] = (score(prior, held), fit(prior, everyone))
            c, c_fit = central[key]
            prior = train_federated(sc, sites, norm, fcfg, None)
            f, f_fit = score(prior, held), fit(prior, everyone)
        print(f"{spec} | {c[0]:.2f}, {c[1]:.2f} | {f[0]:.2f}, {f[1]:.2f} | {f[1] / c[1] - 1:+.1%} | {c_fit:.2f}, {f_fit:.2f} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["80,1,0.3,sgd,joint,fedavg"])
