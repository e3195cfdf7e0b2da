"""The generator's sections of ``docs/synthetic.md`` (discriminative scores, gate, RUL effects) from one report."""

from __future__ import annotations

from typing import Any

DISC_LABELS = {
    "generator": "generator samples (Kalman trend + diffusion residual)",
    "kalman_noise": "Kalman smoother + Gaussian noise (sampled)",
    "kalman": "Kalman smoother (deterministic)",
    "linear": "linear interpolation (deterministic)",
}


def _f(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def sample_rows(report: dict[str, Any]) -> list[list[str]]:
    """Table rows for the errors of single samples (what a consumer of the fills sees)."""
    samples = report.get("sample_errors") or {}
    rows = []
    for name, label in (("generator_sample", "one generator sample"), ("kalman_noise", "one Kalman + noise sample")):
        if name in samples.get("block", {}):
            b, r = samples["block"][name], samples["random"][name]
            rows.append([f"{label} (`{name}`)", f"{b['mae']:.3f}", f"{b['rmse']:.3f}", f"{r['mae']:.3f}", f"{r['rmse']:.3f}"])
    return rows


def discriminative_text(report: dict[str, Any]) -> str:
    from twinstream.evaluation.report import markdown_table

    table = report.get("discriminative")
    if not table:
        return "(not run: `--no-discriminative`)"
    any_row = next(iter(table.values()))
    rows = [[f"{DISC_LABELS.get(n, n)} (`{n}`)", f"{d['score']:.3f}", f"{d['accuracy']:.3f}", str(d["test_windows"])]
            for n, d in table.items()]
    return (f"Windows of {any_row['window']} samples around {any_row['draws']} seeded block-mask draws "
            f"(`{any_row['rng']}`); the classifier is trained on the windows of half the series and scored on the "
            f"other half ({any_row['train_windows']} training windows, half real, half filled).\n\n"
            + markdown_table(["filler", "discriminative score", "held-out accuracy", "held-out windows"], rows))


def gate_text(report: dict[str, Any]) -> str:
    from twinstream.evaluation.report import markdown_table

    gate = report.get("gate")
    gen = report.get("generator")
    if not gate or not gen:
        return "(no generator scored in this run)"
    th = gate["thresholds"]
    rec = gen["recorded_gate"]
    rows = [
        ["MAE(generator) / MAE(linear), block mask", f"<= {_f(th['max_mae_ratio'], 2)}", _f(gate["measured"].get("mae_ratio_block")),
         _f(rec.get("mae_ratio_block"))],
        ["discriminative score of the generator's samples", f"<= {_f(th['max_discriminative'], 2)}",
         _f(gate["measured"].get("discriminative_score")), _f(rec.get("discriminative_score"))],
    ]
    verdict = "**passes**" if gate["passes"] else f"**fails** ({'; '.join(gate['failures'])})"
    draws = report.get("mae_ratio_block_draws") or {}
    if draws.get("seeds", 1) > 1:
        verdict += (f" (MAE ratio of the MAEs averaged over the {draws['seeds']} mask draws; on the first draw alone, seed "
                    f"{report['seed']}, it is {draws['first_seed']:.3f}, which "
                    + ("also passes" if th["max_mae_ratio"] is None or draws["first_seed"] <= th["max_mae_ratio"] else "fails")
                    + " the MAE criterion)")
    recorded = ("passes, so `load_generator` accepts it and the sidecar uses it" if gen["recorded_gate_passes"] else
                f"fails ({'; '.join(gen['recorded_gate_failures'])}), so `load_generator` refuses it and the sidecar "
                "falls back to the Kalman baseline")
    return (markdown_table(["gate metric", "threshold", "this run (test data)", "recorded in the manifest (validation engines)"], rows)
            + f"\n\nOn this run the generator {verdict}. What the artifact's manifest records (measured at training time on "
            f"held-out training engines) {recorded}. Artifact: {gen['artifact']}, `{gen['version']}`, weights sha256 "
            f"`{gen['weights_sha256'][:16]}...`, training split: {gen['training'].get('split', 'n/a')}.")


def _verdict(ratio: float | None) -> str:
    """Whether the missing-30 ratio meets the target (<= 1.05), said in words (3 decimals can round a miss to 1.050)."""
    if ratio is None:
        return "not measured"
    return "**meets** the target" if ratio <= 1.05 else "**misses** the target"


def _per_seed(rul: dict[str, Any]) -> str:
    """Each mask seed's ratio and the standard error of their mean (the draw-to-draw spread is wide)."""
    runs = [r for r in (rul.get("missing30") or {}).get("runs") or [] if "filled_late" in r]
    if not runs:
        return "n/a"
    values = [r["filled_late"]["ratio"] for r in runs]
    text = ", ".join(f"{r['seed']}: {_f(v)}" for r, v in zip(runs, values))
    if len(values) > 1:
        m = sum(values) / len(values)
        se = (sum((v - m) ** 2 for v in values) / (len(values) - 1) / len(values)) ** 0.5
        text += f"; standard error of the mean {_f(se)}"
    return text


def rul_text(report: dict[str, Any]) -> str:
    rul = report.get("rul")
    if not rul:
        note = report.get("rul_note") or "not run (`--no-rul`, or no generator)"
        return f"RUL effects: {note}. `tstr_rmse` and `rul_rmse_ratio_missing30` are therefore not measured in this run."
    return ("From `twinstream.evaluation.synth_rul` (its protocol is documented there), run on the generator "
            f"`{rul['imputer']['version']}`:\n\n"
            f"- RUL RMSE with 30 % of samples missing and filled, over the no-missing run: "
            f"**{_f(rul.get('rul_rmse_ratio_missing30'), 4)}**, {_verdict(rul.get('rul_rmse_ratio_missing30'))} "
            "(target: within 5 %, i.e. <= 1.05; the worker's order, "
            f"`filled_late`; mean over mask seeds, per seed {_per_seed(rul)}). Several mask seeds because the ratio "
            "moves by more than the 5 % margin from one mask draw to the next ([decisions.md](decisions.md)). The other "
            "variants of the same hidden samples:\n"
            + "".join(f"  `{name}`: {_f(v.get('ratio'))};\n"
                      for name, v in ((rul.get("missing30") or {}).get("variants") or {}).items() if name != "filled_late")
            + "".join(f"  without any fill, `{name}`: {_f(v.get('ratio'))};\n"
                      for name, v in ((rul.get("missing30") or {}).get("no_fill") or {}).items())
            + f"- TSTR (train on synthetic, test on real) RUL RMSE: **{_f(rul.get('tstr_rmse'))}** "
            f"(train on real: {_f(rul.get('trtr_rmse'))}; ratio {_f(rul.get('tstr_ratio'))});\n"
            f"- settings: `{rul.get('settings')}`, {rul.get('seconds', 0):.0f} s.\n\n"
            + cold_start_text(rul.get("cold_start") or {}))


def cold_start_text(cold: dict[str, Any]) -> str:
    """The cold-start table: does augmenting a young twin with generated continuations help its early error?"""
    from twinstream.evaluation.report import markdown_table

    by_k = cold.get("by_k") or {}
    if not by_k:
        return "Cold start: not measured in this run."
    rows = [[k, str(c["engines"]), _f(c["rmse_plain"]), _f(c["rmse_augmented"]), _f(c.get("rmse_blend")),
             _f(c["rmse_real_lookahead"]), str(c["engines_truth_below_cap"]), "yes" if c.get("helps") else "no"]
            for k, c in by_k.items()]
    return ("**Cold start** (protocol and caveat in `evaluation/synth_rul_tasks.py`): a twin that has seen its first k "
            f"cycles, its estimate plain vs augmented with {cold.get('samples')} generated continuations of "
            f"{cold.get('horizon')} cycles (blend weight {cold.get('weight')}); RMSE against the true RUL at cycle k, "
            "capped at 125. Early in life almost every capped truth is 125, so read the engines-below-cap column "
            "before the RMSEs.\n\n"
            + markdown_table(["k", "engines", "plain", "augmented", "blend", "real look-ahead (ceiling)",
                              "engines with truth < 125", "augmenting helps"], rows))
