"""How the budget of ``twinstream eval federated`` was chosen, without the test set.

Each of the 4 lifetime sites holds out every 5th of its engines (3rd, 8th, ... in unit
order); priors are trained on the rest and scored on the held-out engines' rows (RMSE
against the capped RUL, prior head and prior + twin head). For each design the
centralized prior (rows pooled) and FedAvg over the 4 sites (the row-weighted mean,
as Flower's FedAvg computes it; numpy here for speed) get the same budget.

    python benchmarks/federated_budget.py 80,1,0.3,sgd,joint 20,2,3e-3,adamw,joint 40,2,0.3,sgd,two-phase

Spec: rounds,local epochs,learning rate,optimizer,joint|two-phase.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from twinstream.models import federated as fm
from twinstream.models.federated_data import SiteData, site_engines


def split_holdout() -> tuple[list[SiteData], SiteData]:
    pooled = fm.pooled([fm.load_site_data(None, site=s) for s in fm.site_names()])
    train, held = [], []
    for engines in site_engines(None).values():
        held_out = set(sorted(engines)[2::5])
        for bucket, units in ((train, set(engines) - held_out), (held, held_out)):
            m = np.isin(pooled.units, sorted(units))
            bucket.append(SiteData("s", pooled.x[m], pooled.y[m], pooled.units[m]))
    return train, fm.pooled(held)


def run(spec: str, sites: list[SiteData], held: SiteData, federated: bool) -> tuple[float, float]:
    rounds, epochs, lr, optimizer, schedule = spec.split(",")
    rounds, epochs, lr = int(rounds), int(epochs), float(lr)
    norm = fm.local_normalization(fm.pooled(sites))
    half = rounds // 2
    arrays = fm.initial_arrays(0)
    for r in range(1, rounds + 1):
        if schedule == "two-phase":
            heads, k, n = ("prior", r, half) if r <= half else ("twin", r - half, rounds - half)
        else:
            heads, k, n = "both", r, rounds
        step = dict(epochs=epochs, lr=fm.round_lr(lr, k, n), norm=norm, optimizer=optimizer, heads=heads)
        if federated:
            outs = [fm.local_fit(arrays, s, seed=r * 10 + i, **step) for i, s in enumerate(sites)]
            w = np.array([o[1]["num-examples"] for o in outs])
            arrays = [np.average(np.stack([o[0][j] for o in outs]), axis=0, weights=w) for j in range(len(arrays))]
        else:
            arrays, _ = fm.local_fit(arrays, fm.pooled(sites), seed=r, **step)
    m = fm.evaluate_arrays(arrays, held, norm)
    return m["rmse_prior"], m["rmse_twin"]


def main(specs: list[str]) -> None:
    sites, held = split_holdout()
    print("spec | centralized prior, prior+twin | fedavg prior, prior+twin | fedavg vs centralized (prior+twin)")
    for spec in specs:
        start = time.perf_counter()
        c, f = run(spec, sites, held, False), run(spec, sites, held, True)
        print(f"{spec} | {c[0]:.2f}, {c[1]:.2f} | {f[0]:.2f}, {f[1]:.2f} | {f[1] / c[1] - 1:+.1%} ({time.perf_counter() - start:.0f} s)",
              flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["80,1,0.3,sgd,joint"])
