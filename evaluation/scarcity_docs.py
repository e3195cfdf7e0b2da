"""The scarcity section of ``docs/synthetic.md`` and its plot, built from the ``eval scarcity`` report only.

The report lives in ``benchmarks/results/scarcity.json`` (written by
``twinstream eval scarcity --json``); :func:`section` turns it into text, so every
number on the page comes from that file. The verdict per ``k`` is paired by draw (the
three arms of one draw share the same real engines and training seed): generation
*helps* at ``k`` when it lowers the RMSE in every draw, *hurts* when it raises it in
every draw, and is *mixed* otherwise.

>>> paired_verdict([30.0, 28.0, 31.0], [27.0, 26.0, 30.5])
'helps'
>>> paired_verdict([30.0, 28.0], [31.0, 26.0])
'mixed'
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from twinstream.evaluation.report import markdown_table

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "scarcity.json"
PLOT = "img/scarcity.png"
ARMS = {"real": "real only", "real_synthetic": "real + synthetic", "real_jitter": "real + jitter/scaling"}
DEEP_ARMS = {"real_diffusion": "real + diffusion (gated)", "real_diffusion_ungated": "real + diffusion (ungated)"}


def arms_of(report: dict[str, Any]) -> dict[str, str]:
    """The arms the report has (reports written before the diffusion arm lack it)."""
    deep = {a: label for a, label in DEEP_ARMS.items() if all(a in row for row in report["curve"].values())}
    return {**ARMS, **deep}


def load(path: Path = RESULTS) -> dict[str, Any] | None:
    """The committed report, or None when there is none (the section is then left out)."""
    return json.loads(path.read_text()) if path.is_file() else None


def paired_verdict(real: list[float], other: list[float]) -> str:
    """``helps`` / ``hurts`` when ``other`` is lower / higher than ``real`` in every draw, else ``mixed``."""
    diffs = [o - r for r, o in zip(real, other)]
    if all(d < 0 for d in diffs):
        return "helps"
    if all(d > 0 for d in diffs):
        return "hurts"
    return "mixed"


def plot(report: dict[str, Any], path: Path) -> Path:
    """RMSE against k (mean and sd over draws) for the three arms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = report["curve"]
    xs = [row["train_engines"] for row in curve.values()]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    arms = arms_of(report)
    for i, (arm, label) in enumerate(arms.items()):
        means = [row[arm]["rmse"]["mean"] for row in curve.values()]
        sds = [row[arm]["rmse"]["std"] for row in curve.values()]
        ax.errorbar([x * (1 + 0.04 * (i - (len(arms) - 1) / 2)) for x in xs], means, yerr=sds, marker="o", capsize=3, label=label)
    ax.set_xscale("log")
    ax.set_xticks(xs)
    ax.set_xticklabels([str(x) for x in xs])
    ax.set_xlabel("real training engines (k)")
    ax.set_ylabel(f"RUL RMSE on the {report['test_engines']} {report['subset']} test engines")
    ax.set_title("prior + twin, prior trained on k engines (mean ± sd over draws)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def section(report: dict[str, Any]) -> str:
    """Markdown: protocol, table, plot and the paired verdict per k."""
    p = report["protocol"]
    rows, verdicts = [], []
    for k, row in report["curve"].items():
        cells = [k, str(row["train_engines"]), str(row["extra_engines"])]
        cells += [f"{row[a]['rmse']['mean']:.2f} ± {row[a]['rmse']['std']:.2f}" for a in ARMS]
        cells += [f"{row[a]['phm_score']['mean']:.0f}" for a in ARMS]
        synth = paired_verdict(row["real"]["rmse"]["draws"], row["real_synthetic"]["rmse"]["draws"])
        jit = paired_verdict(row["real"]["rmse"]["draws"], row["real_jitter"]["rmse"]["draws"])
        cells += [synth, jit]
        rows.append(cells)
        verdicts.append((k, synth, jit, row))
    table = markdown_table(
        [
            "k",
            "real engines",
            "extra engines",
            "RMSE real only",
            "RMSE real + synthetic",
            "RMSE real + jitter",
            "PHM08 real only",
            "PHM08 real + synthetic",
            "PHM08 real + jitter",
            "synthetic vs real",
            "jitter vs real",
        ],
        rows,
    )
    helps = [k for k, s, _, _ in verdicts if s == "helps"]
    hurts = [k for k, s, _, _ in verdicts if s == "hurts"]
    mixed = [k for k, s, _, _ in verdicts if s == "mixed"]
    jit_helps = [k for k, _, j, _ in verdicts if j == "helps"]
    jit_hurts = [k for k, _, j, _ in verdicts if j == "hurts"]
    steadier = [k for k, _, _, row in verdicts if row["real_synthetic"]["rmse"]["std"] < row["real"]["rmse"]["std"]]

    def listed(ks: list[str]) -> str:
        return ", ".join(f"k = {k}" for k in ks) if ks else "no k"

    steady_text = (
        f"Their spread over draws is smaller than real only's at {listed(steadier)}: there they make a prior "
        "less dependent on which engines it was trained on, which is not the same as making it better."
        if steadier
        else "They never make the spread over draws smaller than real only's."
    )
    minutes = report["seconds"] / 60.0
    deep = deep_section(report) if "real_diffusion" in arms_of(report) else ""
    load = (
        f", 1-minute load average {report['load_average']['start']} at the start and {report['load_average']['end']} at the end"
        if "load_average" in report
        else ""
    )
    return f"""
## Scarcity curve: does generated data help a prior trained on few engines?

Generated by `{report["command"]} --json benchmarks/results/scarcity.json`
({minutes:.0f} min on two shared cores{load}). The prior is trained on k real run-to-failure
engines of {report["subset"]} ({p["draws"]} draws of the k engines per point, `{p["units_rng"]}`,
training seed = draw; {p["folds"]} folds, {p["steps_per_member"]} gradient steps per ensemble member
whatever the training-set size) and scored as a streaming prior + twin on all {report["test_engines"]}
test engines (RMSE and PHM08 at each engine's last cycle, true RUL). Arms, per draw:

- **real only**: the k engines;
- **real + synthetic**: plus {p["extra_per_real"]}·k whole trajectories to failure from the
  degradation-curve + Kalman-residual generator (`models/trajectory_gen.py`) fitted on the
  same k engines only (z-scored with their own statistics; no other engine is seen);
- **real + jitter/scaling**: plus as many copies of randomly chosen real engines with each
  sensor's deviation scaled (sd {p["scale_sd"]}) and Gaussian jitter (sd {p["jitter_sd"]}, z units):
  the standard naive augmentation.

Verdict columns are paired by draw: *helps* when the arm's RMSE is lower than real only in
every draw, *hurts* when higher in every draw, *mixed* otherwise.

{table}

![scarcity curve]({PLOT})

Where generation helps and where it does not, on these numbers: the synthetic
trajectories lower the RMSE in every draw at {listed(helps)}; they raise it in every draw
at {listed(hurts)}; the result is mixed at {listed(mixed)}. {steady_text} The naive
jitter/scaling baseline, with the same number of extra engines and the same budget, lowers
the RMSE in every draw at {listed(jit_helps)} and raises it in every draw at {listed(jit_hurts)}.
With {p["draws"]} draws per point the spread column is the honest error bar: a difference
smaller than it is not a result.
{deep}"""


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def deep_section(report: dict[str, Any]) -> str:
    """Markdown: the diffusion generator's gate numbers per k and its two arms against real only and the baseline."""
    p = report["protocol"]
    gate = p["diffusion_gate"]
    rows, lines = [], {"gated": [], "ungated": [], "vs_baseline": []}
    for k, row in report["curve"].items():
        g = row["diffusion_gate"]
        disc = [x["discriminative_score"] for x in g]
        ratio = [x["tstr_ratio"] for x in g]
        base = [x["baseline_tstr_ratio"] for x in g]
        real = row["real"]["rmse"]["draws"]
        gated = "same (all refused)" if row["refused"] == len(g) else paired_verdict(real, row["real_diffusion"]["rmse"]["draws"])
        ungated = paired_verdict(real, row["real_diffusion_ungated"]["rmse"]["draws"])
        vs_base = paired_verdict(row["real_synthetic"]["rmse"]["draws"], row["real_diffusion_ungated"]["rmse"]["draws"])
        lines["gated"].append((k, gated))
        lines["ungated"].append((k, ungated))
        lines["vs_baseline"].append((k, vs_base))
        rows.append(
            [
                k,
                f"{row['refused']}/{len(g)}",
                f"{_mean(disc):.2f} ({min(disc):.2f}-{max(disc):.2f})",
                f"{_mean(ratio):.2f} ({min(ratio):.2f}-{max(ratio):.2f})",
                f"{_mean(base):.2f}",
                f"{row['real']['rmse']['mean']:.2f} ± {row['real']['rmse']['std']:.2f}",
                f"{row['real_synthetic']['rmse']['mean']:.2f} ± {row['real_synthetic']['rmse']['std']:.2f}",
                f"{row['real_diffusion']['rmse']['mean']:.2f} ± {row['real_diffusion']['rmse']['std']:.2f}",
                f"{row['real_diffusion_ungated']['rmse']['mean']:.2f} ± {row['real_diffusion_ungated']['rmse']['std']:.2f}",
                gated,
                ungated,
                vs_base,
            ]
        )
    table = markdown_table(
        [
            "k",
            "refused",
            "discriminative score, mean (range)",
            "TSTR ratio, mean (range)",
            "baseline generator's TSTR ratio",
            "RMSE real only",
            "RMSE real + synthetic (baseline)",
            "RMSE real + diffusion (gated)",
            "RMSE real + diffusion (ungated)",
            "gated vs real",
            "ungated vs real",
            "ungated vs baseline",
        ],
        rows,
    )
    refused = sum(row["refused"] for row in report["curve"].values())
    gates = [g for row in report["curve"].values() for g in row["diffusion_gate"]]
    by_metric = {m: sum(1 for g in gates if m in g["refused"]) for m in ("tstr_ratio", "discriminative_score")}
    total = sum(len(row["diffusion_gate"]) for row in report["curve"].values())

    def where(pairs: list[tuple[str, str]], verdict: str) -> str:
        ks = [k for k, v in pairs if v == verdict]
        return ", ".join(f"k = {k}" for k in ks) if ks else "no k"

    return f"""
### The diffusion generator beside the baseline

The fourth arm trains the deep generator (`models/trajectory_diffusion.py`: a denoising
diffusion model of each life's course over equal bins of life fraction, given the life length,
plus fitted sensor noise; {p["generator_steps"]} gradient
steps whatever k) on the same k engines only, writes it as an artifact whose manifest records its
gate numbers, and takes {p["extra_per_real"]}·k trajectories from it only through the loader that
the prior trainer uses. The gate (discriminative score at most {gate["max_discriminative"]}, TSTR ratio
at most {gate["max_tstr_ratio"]}; {p["gate_splits"]} classifier splits) is measured against {p["diffusion_gate_reference"]}:
with so few engines nothing else may be used, and the train-on-real RMSE it divides by is then
in-sample, so the gate is strict. A refused generator leaves that draw's prior trained on the real
engines alone (*gated* column, what a user gets); the *ungated* column uses its trajectories anyway.
`twinstream synth trajectories --out ARTIFACT [--engines K] [--seed S]` trains such an artifact on a
subset's run-to-failure engines and prints its gate numbers.
The same loader guards `twinstream prior train --data DIR --synthetic ARTIFACT [--synthetic-count N]`,
which adds an artifact's trajectories to the training engines: a tampered artifact (weights sha256)
or one whose recorded gate numbers fail is refused with the failing metric named, and nothing is
trained. The generator can also continue an entity's early life (`TrajectoryGenerator.sample(...,
prefix=...)`: the given cycles are kept, the rest generated to a failure); that mode is not scored
here.

The generator was refused in {refused} of {total} draws: on its TSTR ratio in {by_metric["tstr_ratio"]}, on its
discriminative score in {by_metric["discriminative_score"]} (a draw may fail both).

{table}

On these numbers the gated arm lowers the RMSE against real only in every draw at
{where(lines["gated"], "helps")} and raises it in every draw at {where(lines["gated"], "hurts")}; ungated,
the diffusion trajectories help in every draw at {where(lines["ungated"], "helps")} and hurt in every
draw at {where(lines["ungated"], "hurts")}. Against the simple baseline generator, the ungated
diffusion arm is lower in every draw at {where(lines["vs_baseline"], "helps")} and higher in every draw
at {where(lines["vs_baseline"], "hurts")}; elsewhere the two are mixed.
"""
