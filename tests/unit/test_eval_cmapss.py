"""The streaming evaluation: protocol honesty, scoring formulas, the command, and the acceptance run."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from twinstream.commands.evaluate import app
from twinstream.datasets.cmapss import bundled_dir, load_subset
from twinstream.evaluation import cmapss_eval
from twinstream.models.twin import Twin


@pytest.fixture(scope="module")
def fd001():
    return load_subset("FD001")


def test_events_are_in_fleet_time_order_with_failures_at_each_training_engines_end(fd001) -> None:
    train = [r for r in fd001.train if r.unit <= 6]
    test = [r for r in fd001.test if r.unit <= 6]
    events = cmapss_eval.fleet_events(train, test)
    assert len(events) == len(train) + len(test)
    assert [e.cycle for e in events] == sorted(e.cycle for e in events)
    failures = {e.entity: e.cycle for e in events if e.failed}
    assert failures == {f"train-{u}": fd001.train_life[u] for u in range(1, 7)}
    assert not any(e.failed for e in events if e.entity.startswith("test-"))


def test_test_engines_never_see_a_label(fd001, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, float | None]] = []

    class SpyTwin(Twin):
        def step(self, seq, metrics, target, *args, **kwargs):  # type: ignore[no-untyped-def]
            seen.append((self.entity_id, target))
            return super().step(seq, metrics, target, *args, **kwargs)

    monkeypatch.setattr(cmapss_eval, "Twin", SpyTwin)
    events = cmapss_eval.fleet_events([r for r in fd001.train if r.unit <= 4], [r for r in fd001.test if r.unit <= 4])
    for name, params in cmapss_eval.arm_params(None).items():
        cmapss_eval.run_arm(name, params, events)
    assert all(target is None for entity, target in seen if entity.startswith("test-"))
    labelled = {entity for entity, target in seen if target is not None}
    assert labelled == {f"train-{u}" for u in range(1, 5)}  # only at failure


def test_scores_follow_their_definitions() -> None:
    pred, true = [110.0, 20.0, 50.0], [100.0, 33.0, 50.0]
    assert cmapss_eval.rmse(pred, true) == pytest.approx(math.sqrt((100 + 169 + 0) / 3))
    assert cmapss_eval.phm_score(pred, true) == pytest.approx((math.e - 1) + (math.e - 1) + 0.0)


def test_eval_command_writes_json_plots_and_docs(tmp_path: Path) -> None:
    args = ["cmapss", "--subset", "FD001", "--limit-engines", "6", "--no-bench", "--json", str(tmp_path / "r.json"),
            "--plots", str(tmp_path / "plots"), "--docs", str(tmp_path / "docs")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["subset"] == "FD001"
    for arm in ("prior", "twin", "prior_twin"):
        assert {"rmse", "phm_score"} <= set(report["arms"][arm])
        assert report["arms"][arm]["engines"] == 6
    assert report["state_bytes_per_twin"] > 0 and report["updates_per_s"] > 0
    for name in ("cold_start.png", "engines.png", "twin_change.png"):
        assert (tmp_path / "plots" / name).stat().st_size > 1000
        assert (tmp_path / "docs" / "img" / name).is_file()
    doc = (tmp_path / "docs" / "learning.md").read_text()
    assert "| arm | RMSE |" in doc and "img/cold_start.png" in doc


def test_a_new_fleet_without_training_history_uses_another_subsets_fleet(tmp_path: Path) -> None:
    # FD001's files stand in for a second subset: the scored subset's own training file is absent.
    for kind in ("train", "test", "RUL"):
        shutil.copy(bundled_dir() / f"{kind}_FD001.txt", tmp_path / f"{kind}_FD001.txt")
    for kind in ("test", "RUL"):
        shutil.copy(bundled_dir() / f"{kind}_FD001.txt", tmp_path / f"{kind}_FD003.txt")
    (tmp_path / "train_FD003.txt").write_text("")
    report = cmapss_eval.evaluate("FD003", "FD001", tmp_path, limit_engines=5)
    assert report["train_subset"] == "FD001" and report["arms"]["prior_twin"]["engines"] == 5
    assert all(math.isfinite(s["rmse"]) for s in report["arms"].values())


def test_acceptance_on_full_fd001() -> None:
    """The acceptance: prior + twin reaches RMSE <= 12 and beats both ablations (~15 s)."""
    report = cmapss_eval.evaluate("FD001")
    arms = report["arms"]
    assert arms["prior_twin"]["rmse"] <= 12.0
    assert arms["prior_twin"]["rmse"] < min(arms["prior"]["rmse"], arms["twin"]["rmse"])
    assert arms["prior_twin"]["phm_score"] < min(arms["prior"]["phm_score"], arms["twin"]["phm_score"])
    assert report["state_bytes_per_twin"] <= 8192
