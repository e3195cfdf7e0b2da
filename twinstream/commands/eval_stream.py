"""``twinstream eval stream``: forecasting twins on any CSV, prequential, arm by arm.

Thin command over :mod:`twinstream.evaluation.stream_eval` (the protocol is described
there). Registered on the ``eval`` group by :mod:`twinstream.cli`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

console = Console(stderr=True)


def print_report(report: dict) -> None:
    fc = report["forecast"]
    table = Table(title=f"{fc['metric']} {fc['horizon']} samples ahead: {fc['events_scored']} events, "
                        f"{fc['entities']} entities (nominal coverage {fc['nominal_coverage']})")
    for col in ("arm", "MAE", "RMSE", "MAE / last value", "coverage", "in domain"):
        table.add_column(col, justify="right")
    for arm in ("last_value", "seasonal_naive", "rls_ar", "twin", "prior", "prior_twin"):
        if arm not in fc:
            continue
        a = fc[arm]
        table.add_row(arm, f"{a['mae']:.4g}", f"{a['rmse']:.4g}", f"{a.get('mae_ratio_last_value', 1.0):.3f}",
                      f"{a['coverage']:.3f}" if "coverage" in a else "", f"{a['in_domain_share']:.3f}" if "in_domain_share" in a else "")
    Console(width=max(Console().width, 100)).print(table)
    console.print(f"season used by seasonal naive: {fc['seasonal_naive']['season']}")
    anomaly = report.get("anomaly")
    if anomaly:
        console.print(f"anomaly (threshold {anomaly['threshold']}): {anomaly['windows_flagged']}/{anomaly['windows']} windows flagged, "
                      f"{anomaly['false_flags_per_1000_outside']:.2f} flags per 1000 samples outside, AUC {anomaly['auc']:.3f}")
    blocks = fc["twin"]["block_mae_ratio_last_value"]
    console.print("twin MAE / last value by fifth of the series: " + ", ".join(f"{r:.3f}" for r in blocks))


def stream(
    csv_file: Annotated[Path, typer.Option("--csv", exists=True, dir_okay=False, help="Series to replay (CSV or Parquet).")],
    time_column: Annotated[str, typer.Option(help="Column giving each row's time (ISO date-time or number).")],
    forecast: Annotated[str | None, typer.Option(help="Metric (column) to forecast (required without --spec).")] = None,
    horizon: Annotated[int, typer.Option(min=1, help="Forecast this many samples ahead.")] = 1,
    spec: Annotated[
        Path | None, typer.Option(exists=True, dir_okay=False, help="twins.yaml: replay a kind's forecast and anomaly tasks.")
    ] = None,
    kind: Annotated[str | None, typer.Option(help="The kind of --spec to replay (default: its only kind).")] = None,
    entity_column: Annotated[str | None, typer.Option(help="Column naming the entity; one twin per entity.")] = None,
    metrics: Annotated[str | None, typer.Option(help="Comma-separated metric columns of the kind (checked to exist).")] = None,
    train_csv: Annotated[Path | None, typer.Option(exists=True, dir_okay=False, help="History for a prior (adds prior arms).")] = None,
    train_fraction: Annotated[
        float | None, typer.Option(min=0.01, max=0.99, help="Fit a prior on this first share of each series; score the rest.")
    ] = None,
    anomaly_windows: Annotated[
        Path | None, typer.Option(exists=True, dir_okay=False, help="JSON of labelled windows: also score the anomaly twin.")
    ] = None,
    anomaly_threshold: Annotated[float, typer.Option(min=0.5, max=0.9999, help="Anomaly flag threshold on the score.")] = 0.995,
    season: Annotated[int | None, typer.Option(min=2, help="Season length in samples (default: detected by each twin).")] = None,
    max_season: Annotated[int, typer.Option(min=0, help="Longest season a twin looks for (0: none).")] = 512,
    coverage: Annotated[float, typer.Option(min=0.5, max=0.999, help="Nominal coverage of the intervals.")] = 0.9,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the report as JSON here.")] = None,
) -> None:
    """Replay a table through forecasting twins in stream order and compare them with persistence and seasonal naive."""
    from twinstream.evaluation.stream_eval import StreamEvalConfig, kind_configs, read_table, run_stream_eval
    from twinstream.schemas.twin_spec import SpecError, load_spec

    def fail(message: str) -> typer.Exit:
        console.print(f"[red]{message}[/red]")
        return typer.Exit(2)

    wanted = [m.strip() for m in (metrics or "").split(",") if m.strip()]
    anomaly_horizon = 1
    if spec is not None:
        try:
            kinds = load_spec(spec).kinds
        except SpecError as exc:
            raise fail(str(exc)) from None
        chosen = [k for k in kinds if k.name == kind] if kind else kinds
        if len(chosen) != 1:
            raise fail(f"{spec}: pass --kind, one of {', '.join(k.name for k in kinds)}" if not kind else f"{spec}: no kind {kind!r}")
        cfgs, anomaly = kind_configs(chosen[0], time_column, entity_column)
        if not cfgs:
            raise fail(f"kind {chosen[0].name!r} has no forecast task to replay")
        if anomaly is not None:
            anomaly_threshold, anomaly_horizon = anomaly.threshold, anomaly.horizon
        wanted = wanted or chosen[0].metric_names
    elif forecast is None:
        raise fail("pass --forecast METRIC (or --spec twins.yaml)")
    else:
        cfgs = [StreamEvalConfig(forecast=forecast, horizon=horizon, time_column=time_column, entity_column=entity_column,
                                 coverage=coverage, season=season, max_season=max_season)]
    try:
        if wanted:
            read_table(csv_file, wanted)  # fail early, naming a missing column
        reports = [run_stream_eval(csv_file, cfg, train_csv, train_fraction, anomaly_windows if i == 0 else None,
                                   anomaly_threshold, anomaly_horizon) for i, cfg in enumerate(cfgs)]
    except ValueError as exc:
        raise fail(str(exc)) from None
    report = reports[0]
    if len(reports) > 1:  # a kind with several forecast tasks: all of them, the first also as "forecast"
        report["forecasts"] = {f"{r['forecast']['metric']}@{r['forecast']['horizon']}": r["forecast"] for r in reports}
    print_report(report)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"report written to {json_out}")
