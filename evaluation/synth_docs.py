"""``docs/synthetic.md`` from one ``eval synth`` report (tables are never typed by hand)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twinstream.evaluation.synth_docs_gen import discriminative_text, gate_text, rul_text, sample_rows
from twinstream.models.imputation import KalmanLLT
from twinstream.schemas.generator import GateThresholds

LABELS = {
    "generator": "generator point estimate (Kalman trend + diffusion residual mean)",
    "linear": "linear interpolation",
    "last_value": "last value carried forward",
    "kalman": "Kalman local-linear-trend smoother",
    "kalman_filter": "Kalman local-linear-trend filter (causal)",
    "adaptive": "chosen per segment and sensor on pseudo-gaps of the measured values (as the sidecar)",
}


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:g}"


def _cross(report: dict[str, Any]) -> str:
    value = report["reference"].get("train_residual_mean_abs_cross_correlation")
    return "n/a" if value is None or value != value else f"{value:.3f}"


def write_docs(report: dict[str, Any], docs_dir: Path) -> Path:
    """Write ``synthetic.md`` (method, masks, seeds, measured table) from one report."""
    from twinstream.evaluation.report import markdown_table

    def row(label: str, block: dict[str, float], rand: dict[str, float]) -> list[str]:
        return [label, f"{block['mae']:.3f}", f"{block['rmse']:.3f}", f"{rand['mae']:.3f}", f"{rand['rmse']:.3f}"]

    imp = report["imputation"]
    rows = [row(f"{LABELS.get(n, n)} (`{n}`)", imp["block"][n], imp["random"][n]) for n in imp["block"]]
    rows += sample_rows(report)
    ref = report["reference"]["kalman_on_complete_series"]
    rows.append(row("reference: Kalman smoother of the complete series (truth included)", ref["block"], ref["random"]))
    floor = report["reference"].get("noise_floor_mae")
    if floor:
        rows.append(["floor: sensor noise alone, E\\|noise\\| = sqrt(2r/pi) (fitted r)", f"{floor['block']:.3f}", "",
                     f"{floor['random']:.3f}", ""])
    table = markdown_table(["method", "block MAE", "block RMSE", "random MAE", "random RMSE"], rows)
    params = markdown_table(
        ["sensor", "q_level / r", "q_slope / r", "r"],
        [[c, f"{p['q_level'] / p['r']:.1e}", f"{p['q_slope'] / p['r']:.1e}", f"{p['r']:.3f}"] for c, p in report["kalman_params"].items()],
    )
    spread = report.get("seed_spread") or {}
    if spread:
        seeds = report["seeds"]
        spread_text = (
            f"Mask seeds {seeds[0]} to {seeds[-1]} ({len(seeds)} draws of both masks, one fit): MAE mean, standard "
            "deviation and range over the draws.\n\n" + markdown_table(
                ["method", "block MAE mean ± sd", "block range", "random MAE mean ± sd", "random range"],
                [[f"`{n}`", f"{b['mae_mean']:.3f} ± {b['mae_std']:.3f}", f"{b['mae_min']:.3f} to {b['mae_max']:.3f}",
                  f"{r['mae_mean']:.3f} ± {r['mae_std']:.3f}", f"{r['mae_min']:.3f} to {r['mae_max']:.3f}"]
                 for n, b, r in ((n, spread["block"][n], spread["random"][n]) for n in spread["block"])],
            )
        )
    else:
        spread_text = "(one mask seed only: rerun with `--seeds N` for the spread over seeds)"
    detection = report.get("gap_detection")
    if detection:
        gap_text = (
            f"{detection['data']} ({detection['engines']} engines, {detection['samples']} samples; faults seeded with "
            f"`{detection['rng']}`). On the data as recorded the detector reported "
            f"**{detection['clean']['false_gaps']}** gaps.\n\n" + markdown_table(
                ["injected fault", "engines", "found", "false gaps", "delay median (cycles)", "delay max"],
                [[f"`{k}`", str(f["injected"]), str(f["found"]), str(f["false_gaps"]), _num(f["delay_median"]), _num(f["delay_max"])]
                 for k, f in detection["faults"].items()],
            )
        )
    else:
        gap_text = "(not run: `--no-gaps`)"
    floor = 10.0 ** (KalmanLLT.LEVEL_RANGE[0] + min(KalmanLLT.REFINE))
    masks = report["masks"]
    gate = GateThresholds()
    linear = (spread.get("block") or {}).get("linear")
    target_range = (f"{gate.max_mae_ratio * linear['mae_min']:.3f} to {gate.max_mae_ratio * linear['mae_max']:.3f}" if linear
                    else f"{gate.max_mae_ratio * report['imputation']['block']['linear']['mae']:.3f} on this draw")
    text = DOCS_TEMPLATE.format(spread=spread_text, discriminative=discriminative_text(report), gate=gate_text(report),
        rul=rul_text(report), gen_version=(report.get("generator") or {}).get("version", "n/a"), gaps=gap_text, floor=f"{floor:.1e}",
        command=report["command"] + " --docs docs", data=report["data"], train=report["train_series"],
        test=report["test_series"], seed=report["seed"], table=table, params=params,
        random_hidden=masks["random"]["hidden"], random_rng=masks["random"]["rng"],
        block_hidden=masks["block"]["hidden"], blocks=masks["block"]["blocks"], block_rng=masks["block"]["rng"],
        cross=_cross(report), gate_mae=gate.max_mae_ratio, gate_disc=gate.max_discriminative, target_range=target_range,
        ref_block=report["reference"]["kalman_on_complete_series"]["block"]["mae"],
        columns=", ".join(report["columns"]), n_columns=len(report["columns"]), seconds=report["seconds"],
        not_measured=", ".join(f"`{k}`" for k in report["not_measured"]) or "nothing",
    )
    from twinstream.evaluation import scarcity_docs

    scarcity = scarcity_docs.load()  # the committed eval scarcity report, if any: its section closes the page
    if scarcity is not None:
        text = text.rstrip("\n") + "\n" + scarcity_docs.section(scarcity)
    docs_dir.mkdir(parents=True, exist_ok=True)
    out = docs_dir / "synthetic.md"
    out.write_text(text)
    return out


DOCS_TEMPLATE = """# Synthetic data: gap filling, the generator and its quality gate

<!-- Generated by `{command}`. Do not edit by hand: rerun the command. -->

Real plants drop samples, lose sensors and start entities with no history. twinstream
detects those gaps in the stream, fills them with generated values that are flagged as
synthetic everywhere, and lets a quality gate decide whether a generator may be used at
all. This page documents the generator, the gate and what they measure. The streaming
part (gap messages, the `twinstream sidecar` process, the synthetic topic, how twins use
fills, what happens when the sidecar is down) is in [sidecar.md](sidecar.md).

## What exists

- **Gap messages** (`schemas/gaps.py`, topic `<ns>.gaps`) and the **gap detector**
  (`models/gaps.py`): missed samples, missing and flat-lined sensors, per entity.
- **Baseline fills** (`models/imputation.py`): linear interpolation, last value, and a
  Kalman local-linear-trend smoother (and causal filter) with per-sensor variances fitted
  by maximum likelihood. `models/generator.py` wraps the smoother as the always-available
  fallback (`WindowKalman`, scale-free: it z-scores each window by its own statistics).
- **Generator** (`models/generator.py`, `models/diffusion.py`, artifact
  `models/generators/fd001`, family `llt-diffusion`; scored here: `{gen_version}`), trained by
  `twinstream synth train` and loaded by `load_generator` / `choose_imputer`; see below.
- Not measured in this run: {not_measured}.

## The generator

Decomposition in the spirit of Diffusion-TS, conditional imputation in the spirit of
CSDI, sized for two CPU cores:

1. **Trend** (entity context): a Kalman local-linear-trend smoother, fitted on the
   training engines, runs over the *observed* values of the window. It carries the
   entity's own level and slope across an interior gap and past the end of the window
   (an open gap: a forecast), and gives a variance per position.
2. **Residual**: a conditional denoising diffusion model (DDPM, 50 steps, CSDI's
   quadratic noise schedule) generates `window - trend` at the missing positions. Its
   network (1-D convolutions over time with dilations 1, 2, 4, 8, gated residual blocks,
   48 channels, about 71 k weights) predicts the clean residual from the noisy one, the
   observed residuals, the mask, the trend level of every sensor and the trend's log
   variance. It is trained on random crops of 64 samples of the fit engines, cut at
   random points, with every gap kind the sidecar meets: random values (10 to 60 %),
   1 to 3 blocks of 2 to 20 samples, 1 to 4 sensors missing over a span or the whole
   window, and an open tail of 1 to 25 samples; half the time the trend is fitted on the
   crop alone (a sidecar with a short memory).
3. **Samples** = trend + sampled residual; observed values are never changed. The
   **point estimate** is the mean the samples converge to: the network's prediction of
   the clean residual from pure noise (the conditional mean under its squared-error
   training), averaged over 8 noise draws, added to the trend.
4. **Domain guard**: the network generates residuals only where it was measured to be
   calibrated (`benchmarks/generator_forecast_calibration.py`, on the validation engines):
   in windows with at least 30 observed rows and within 10 samples of an observed row.
   Elsewhere (a young entity, a long forecast) samples take the Kalman predictive
   residual and the point estimate is the trend; there the raw network's residuals spread
   1.2 to 2.5 times wider than the predictive distribution and drift.
   The Kalman smoother's initial slope has a prior from the fleet (twice the RMS of the
   training series' least-squares slopes), so a window with two or three observed values
   does not extrapolate a slope fitted to their noise.

What the generator adds over the baselines: a deterministic fill (linear, Kalman) is a
smooth line through noisy data, which a classifier spots almost every time; the
generator's samples carry sensor noise like measured data, while its point estimate
stays as accurate as the Kalman smoother's. The Kalman smoother plus Gaussian noise is
the simplest way to get both; the diffusion model learns the residual distribution from
data instead of assuming it (and conditions on all sensors at once, which matters when
one sensor is missing over the whole window). On these data the measured difference
between the two is small (tables below): C-MAPSS sensor noise is close to independent
Gaussian noise, so the Kalman + noise baseline is already a good generator here.

Training (`twinstream synth train --subset FD001 --out models/generators/fd001`): the
training engines only (z-scored with their mean and standard deviation), split into fit
and validation engines (seeded); the Kalman parameters and the network are fitted on the
fit engines; the gate metrics are measured on the validation engines (the MAE ratio
over 10 block-mask draws, since one draw holds one block per engine) and recorded in
the manifest, which also pins the weights' sha256, the sensors, their normalization and
the sha256 of the training file (`schemas/generator.py`).

## Protocol

Data: {data}, the {n_columns} informative sensors ({columns}), z-scored with the training
engines' mean and standard deviation, so errors are in training standard deviations.
The Kalman variances are fitted on the {train} complete training series; the
{test} test series are masked and scored; the generator never saw them.

Masks (seed {seed}):

- **block**: one block of 10 consecutive cycles, all sensors at once, per engine with at
  least 40 cycles, placed uniformly at random with at least one observed cycle on each
  side ({blocks} blocks, {block_hidden} hidden values; `{block_rng}`).
- **random**: every value hidden independently with probability 0.3 ({random_hidden}
  hidden values; `{random_rng}`).

Each method fills the masked series; MAE and RMSE are over the hidden values only. The
reference row smooths the unmasked series, truth included, and scores its level at the
same positions (optimistic: the level there was fitted to the hidden value too). The floor
row is what a *perfect* trend estimate would still miss: the expected absolute sensor
noise, sqrt(2r/pi) per column with the fitted noise variance r (Gaussian noise; the
smoother's residuals on the training series are nearly uncorrelated across columns,
mean |corr| {cross}, so the other sensors do not predict the noise of a hidden value).
No point estimate can expect to beat it, so the block-mask criterion (<= 0.80 x linear) can only be met by a method within
(0.80 x linear - floor) of it.

## Measured: imputation

{table}

Run time: {seconds:.1f} s (imputation part). The single-sample rows show why a sample is not a
point estimate: it adds the noise back, so its MAE is about that of Kalman + noise.
How much a number moves with the mask draw alone:

{spread}

## Measured: discriminative score

Discriminative score = |accuracy - 0.5| of a classifier (a small 1-D CNN over the
values and their first differences, `models/discriminative.py`) trained to
tell measured windows from windows whose block was filled, scored on the windows of
series it was not trained on. 0 means indistinguishable, 0.5 means every synthetic
window is caught. The deterministic baselines are listed so that a low score for the
generator cannot come from a blind classifier.

{discriminative}

## The gate

The gate's targets, enforced by `load_generator` (thresholds `TWINSTREAM_SYNTH_GATE_MAX_MAE_RATIO`,
default {gate_mae:g}, and `TWINSTREAM_SYNTH_GATE_MAX_DISCRIMINATIVE`, default {gate_disc:g}) on the metrics
*recorded in the manifest*; a failing, tampered (sha256) or mismatched (sensors, schema)
artifact is refused with the failing metric named, and `choose_imputer` (used by the
sidecar) falls back to the Kalman baseline.

{gate}

The MAE target sits at the noise floor: the Kalman smoother of the complete series,
truth included, scores {ref_block:.3f} (block mask) and no point estimate can remove sensor
noise it never saw. {gate_mae:.2f} x linear interpolation is {target_range} depending on the mask
draw (see the spread above), so the generator's point estimate, about as good as the Kalman
smoother's, passes or fails this criterion by a few thousandths depending on the draw
and on which engines it is measured.

## RUL effects

{rul}

Fitted Kalman parameters (ratios to the noise variance `r`; `r` in z-score units
squared; {floor} is the bottom of the searched range, in effect no level noise: a
smooth trend plus noise):

{params}

## Gap detection on injected faults

Each test engine is replayed through a fresh gap detector (seq = cycle, one sample per
10 minutes) as recorded, and once per fault kind with one fault injected at a seeded
cycle (at least 30 cycles in and 15 before the end) on a seeded informative sensor, for
engines of at least 60 cycles: the sensor null for 10 cycles (`missing_sensor`), the
sensor frozen at its value from then on (`flatline`), or 5 cycles never sent
(`missed_samples`). Found means a gap of that kind, sensor and start; anything else
reported counts as a false gap. Delay counts cycles from the fault's first cycle to the
report, inclusive (missed samples are known when the next sample arrives).

{gaps}

By design a sensor is not called flat-lined while it has shown fewer than four
quantisation steps of range (coarsely quantised sensors repeat values naturally), nor
before its own change rate makes the repeat unlikely (probability below 1e-6): a sensor
frozen early in an engine's life, while it has barely moved, can go unreported.

## Limits

- One data set (C-MAPSS FD001, one operating condition); the generator is trained per
  data set (`twinstream synth train --csv` for other data) and refuses windows with
  other sensors.
- The trend is per sensor; nothing but the residual network links sensors, and on these
  data the residual's conditional mean is close to zero, so the point estimate is
  essentially the Kalman smoother's. A trend shared across sensors was tried and is not
  used ([decisions.md](decisions.md)).
- The MAE criterion is decided within the mask-draw noise (see the gate section); the
  discriminative criterion is not close.
- The discriminative classifier sees 30-sample windows of z-scored sensors; a stronger
  or differently built classifier (longer context, quantisation of raw values) could
  find differences this one does not.
- Sampling costs 50 network passes over the gap plus 16 samples of context; the
  sidecar's fills are per gap, not per sample, so this is not on the twins' hot path.

## Your own data

`twinstream eval synth --csv FILE --time-column C [--columns A --columns B]` runs the
same code on a telemetry CSV: rows sorted by the time column form one series, the first
half (`--train-fraction`) gives the z-score statistics, the fitted parameters and the
training data of a generator trained by the run itself (`--generator-epochs`,
`--generator-windows`), the rest is masked (random 30 %, and one 10-sample block per run
of 100 rows) and scored; discriminative windows are grouped by run of 100 rows.
Empty cells are missing values and are never scored. `--json FILE` writes the report;
its keys are `imputation.<block|random>.<method>.<mae|rmse>`, `discriminative_score`,
`discriminative.<filler>`, `gate`, and, on C-MAPSS with `twinstream.evaluation.synth_rul`,
`tstr_rmse` and `rul_rmse_ratio_missing30`.
"""
