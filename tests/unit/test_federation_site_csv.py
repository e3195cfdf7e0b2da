"""A site federates its own history table (``federation site --csv``), and still sends only updates and aggregates."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from flower_support import InProcessGrid
from test_federation_apps import leaks, raw_data
from typer.testing import CliRunner

from twinstream.cli import app
from twinstream.datasets.cmapss import SENSOR_COLUMNS, load_subset
from twinstream.federation import client_app
from twinstream.federation.server_app import run_federated
from twinstream.federation.server_config import RoundConfig, run_config_overrides
from twinstream.federation.site_history import SiteHistoryError, load_history_site
from twinstream.federation.strategies import StrategyConfig
from twinstream.models.federated import load_site_data

ENGINES = [1, 2]
runner = CliRunner()


def write_site_csv(path: Path, engines: list[int], label: bool = True, blank_every: int = 0) -> Path:
    """FD001 engines as a site's own table: rows shuffled, engine and cycle columns, every sensor, a rul column."""
    fd = load_subset("FD001")
    rows = [r for r in fd.train if r.unit in set(engines)]
    random.Random(0).shuffle(rows)
    header = ["engine", "cycle", *SENSOR_COLUMNS] + (["rul"] if label else [])
    lines = [",".join(header)]
    for i, r in enumerate(rows):
        cells = [f"e{r.unit}", str(r.cycle)]
        cells += ["" if blank_every and i % blank_every == 0 and s == "s7" else repr(r.sensors[s]) for s in SENSOR_COLUMNS]
        lines.append(",".join(cells + ([str(fd.train_rul_at(r))] if label else [])))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_table_gives_the_same_site_data_as_nasas_layout(tmp_path: Path) -> None:
    csv = write_site_csv(tmp_path / "site.csv", ENGINES)
    nasa = load_site_data(None, max_engines=len(ENGINES))
    for data in (load_history_site(csv, "engine", "cycle", "rul"), load_history_site(csv, "engine", "cycle", rul_from_end=True)):
        np.testing.assert_array_equal(np.isnan(data.x), np.isnan(nasa.x))
        np.testing.assert_allclose(np.nan_to_num(data.x), np.nan_to_num(nasa.x))
        np.testing.assert_array_equal(data.y, nasa.y)
        assert len(data.engines) == 2


def test_missing_cells_stay_missing(tmp_path: Path) -> None:
    csv = write_site_csv(tmp_path / "site.csv", ENGINES, blank_every=3)
    data = load_history_site(csv, "engine", "cycle", "rul")
    raw = data.x[:, 1 + 4 * 3]  # s7_raw: age, then 4 features per sensor (s2, s3, s4, s7)
    assert 0 < np.isnan(raw).sum() < len(raw)


def test_spec_kind_must_declare_the_sensors_a_round_trains_on(tmp_path: Path) -> None:
    csv = write_site_csv(tmp_path / "site.csv", ENGINES)
    data = load_history_site(csv, "engine", "cycle", spec="examples/cmapss/twins.yaml", kind="turbofan")
    assert data.n > 0  # the label column is the kind's label target, rul
    spec = tmp_path / "twins.yaml"
    spec.write_text("kinds: [{name: pump, metrics: [{name: s2}], tasks: [{type: label, target: rul}]}]\n")
    with pytest.raises(SiteHistoryError, match="lacks the metrics s3, s4"):
        load_history_site(csv, "engine", "cycle", spec=spec)


def test_site_command_refuses_a_bad_table_before_connecting(tmp_path: Path) -> None:
    csv = write_site_csv(tmp_path / "site.csv", ENGINES, label=False)
    result = runner.invoke(app, ["federation", "site", "--insecure", "--csv", str(csv), "--entity-column", "engine",
                                 "--time-column", "cycle", "--label-column", "rul"])
    assert result.exit_code == 2 and "no column rul" in " ".join(result.output.split())
    result = runner.invoke(app, ["federation", "site", "--insecure", "--csv", str(csv), "--data", str(tmp_path)])
    assert result.exit_code == 2 and "exactly one of" in result.output


def test_a_round_with_a_table_site_sends_only_parameters_and_aggregates(tmp_path: Path) -> None:
    csv = write_site_csv(tmp_path / "site.csv", [3, 4])
    sites = [{"csv": str(csv), "entity-column": "engine", "time-column": "cycle", "rul-from-end": True},
             {"site": "site-4", "max-engines": 2}]
    grid = InProcessGrid(client_app.app, sites)
    cfg = RoundConfig.from_run_config(run_config_overrides(
        StrategyConfig(name="fedavg", fraction_evaluate=1.0), num_server_rounds=1, start_from="init", publish=False))
    outcome = run_federated(grid, cfg)
    assert outcome.sites == 2
    replies = [(t, c) for node, t, c in grid.replies if node == 1]
    assert {t for t, _ in replies} == {"query.moments", "train", "evaluate", "query.calibration"}
    data = client_app.site_data(sites[0])
    assert data.n == sum(len([r for r in load_subset("FD001").train if r.unit == u]) for u in (3, 4))
    raw = raw_data([3, 4])
    for message_type, content in replies:
        assert leaks(message_type, content, data.x, data.y, raw) == []
