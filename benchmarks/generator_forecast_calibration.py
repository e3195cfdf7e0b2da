"""How far the generator's diffusion network can be trusted to forecast: residual spread by horizon and context.

Why: ``models.generator.network_rows`` keeps the network inside the domain it was trained on
(open gaps of at most 25 samples, windows with history). This measures, on FD001 windows
with ``seen`` observed cycles followed by 30 hidden ones, the network's residual (sample
minus the Kalman level) standardized by the Kalman predictive standard deviation
``sqrt(level variance + r)``: about 1 means the network's spread matches what the level
model expects; well above 1 means it is out of its domain. The guard is switched off
here, so the raw network is measured. Engines: the FD001 *training* engines held out from
the generator's fit (the manifest's validation split) by default.

    python benchmarks/generator_forecast_calibration.py [--out benchmarks/results/generator_forecast_calibration.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/generator_forecast_calibration.json"))
    parser.add_argument("--seen", default="10,20,30,40,60")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    import twinstream.models.generator as generator
    from twinstream.datasets.series import cmapss_dataset
    from twinstream.schemas.generator import GateThresholds

    g = generator.load_generator(gate=GateThresholds(max_mae_ratio=None, max_discriminative=None))
    split = g.manifest.training.get("split", "")
    data = cmapss_dataset("FD001")
    from twinstream.models.generator_fit import split_fit_validation

    _, held_out, described = split_fit_validation(data, 0.2, 0)  # synth train's defaults: the manifest's split
    if described != split:
        raise SystemExit(f"the bundled generator was not trained with the default split ({split!r} vs {described!r})")
    original = generator.network_rows
    generator.network_rows = lambda w: np.ones(len(w), dtype=bool)  # measure the raw network
    r = np.asarray(g.kalman.r)
    out: dict[str, object] = {"engines": "FD001 training engines of the generator's validation split", "split": split,
                              "horizon": 30, "by_seen": {}}
    try:
        for seen in [int(s) for s in args.seen.split(",")]:
            windows = []
            for s in held_out:
                for start in range(0, len(s) - seen - 30, 25):
                    w = s[start:start + seen + 30].copy()
                    w[seen:] = np.nan
                    windows.append(w)
            levels, variances = g.trend_many(windows)
            samples = g.sample_many_z(windows, 4, np.random.default_rng(0))
            z = np.stack([((s[:, -30:] - lv[None, -30:]) / np.sqrt(v[None, -30:] + r)) for s, lv, v in zip(samples, levels, variances)])
            sd = z.std(axis=(0, 1, 3))  # per horizon step
            bias = np.abs(z.mean(axis=(1, 2))).mean()  # mean |per-window, per-sensor mean| over the horizon
            bias_10 = np.abs(z[:, :, :10].mean(axis=(1, 2))).mean()
            gauss = np.random.default_rng(1).normal(size=z.shape)  # the same statistics of exactly calibrated residuals
            ref, ref_10 = np.abs(gauss.mean(axis=(1, 2))).mean(), np.abs(gauss[:, :, :10].mean(axis=(1, 2))).mean()
            out["by_seen"][str(seen)] = {"windows": len(windows), "sd_by_horizon": [round(float(x), 3) for x in sd],
                                         "sd_first_10": float(sd[:10].mean()), "sd_last_10": float(sd[-10:].mean()),
                                         "mean_abs_bias": float(bias), "mean_abs_bias_first_10": float(bias_10),
                                         "calibrated_reference": {"mean_abs_bias": float(ref), "mean_abs_bias_first_10": float(ref_10)}}
            print(f"seen {seen:3d}: {len(windows):4d} windows, standardized residual sd steps 1-10 {sd[:10].mean():.2f}, "
                  f"21-30 {sd[-10:].mean():.2f}, mean |bias| over 30 {bias:.2f} (calibrated: {ref:.2f}), over 10 {bias_10:.2f} "
                  f"(calibrated: {ref_10:.2f})", flush=True)
    finally:
        generator.network_rows = original
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
