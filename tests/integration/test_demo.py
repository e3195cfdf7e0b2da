"""`twinstream demo` end to end, as a user runs it: its own broker, worker, sidecar and replay."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from twinstream.datasets.cmapss import load_subset


def test_demo_accounts_for_every_event(tmp_path: Path) -> None:
    summary_path = tmp_path / "s.json"
    script = shutil.which("twinstream") or f"{sys.executable} -m twinstream"
    result = subprocess.run(
        [*script.split(), "demo", "--summary-json", str(summary_path), "--report-dir", str(tmp_path / "report"),
         "--timeout", "300"],
        capture_output=True, text=True, timeout=420, env=None,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads(summary_path.read_text())
    fd001 = load_subset("FD001")
    sent = len(fd001.train) + len(fd001.test)
    assert summary["events_sent"] == sent
    assert summary["events_processed"] == summary["events_sent"]
    assert summary["predictions"] == summary["events_sent"]
    assert summary["dlq"] == 0
    assert summary["twins"] == len(fd001.train_life) + len(fd001.test_rul) == 200
    assert summary["events_per_s"] > 0
    assert summary["inspector_url"].startswith("http://127.0.0.1:")
    # The same twins and prior as `eval cmapss` (prior + twin arm, RMSE <= 12 there): the live pipeline must not lose accuracy.
    assert summary["rmse_engines"] == 100 and 0 < summary["rmse"] <= 12.0
    png = Path(summary["report_png"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Gap filling (on by default): one sensor of one engine went missing mid-life.
    entity, sensor = summary["gap_entity"], summary["gap_sensor"]
    split, unit = entity.split("-")[1], int(entity.rsplit("-", 1)[1])
    life = fd001.train_life[unit] if split == "train" else None
    assert split == "train" and life is not None, entity  # scored test engines keep all their sensors
    assert sensor in fd001.train[0].sensors
    assert 1 <= summary["gap_samples"] < life  # a stretch, not the whole life
    assert summary["gaps_detected"] >= 1
    assert summary["fills_published"] >= 1
    assert 1 <= summary["gap_samples_filled"] <= summary["gap_samples"]
    assert summary["predictions_with_fills"] >= 1
    metrics_per_sample = len(fd001.train[0].settings) + len(fd001.train[0].sensors)
    assert 0 < summary["max_synthetic_share"] <= round(1 / metrics_per_sample, 4)  # one missing value of the sample
    assert summary["measured_overwritten"] == 0, summary["measured_overwritten_examples"]
    sidecar_log = (tmp_path / "report" / "logs" / "sidecar.log").read_text(errors="replace")
    assert "sidecar fill method:" in sidecar_log
    assert "no measured value overwritten" in result.stderr + result.stdout


def test_demo_no_gaps_flag_is_accepted() -> None:
    script = shutil.which("twinstream") or f"{sys.executable} -m twinstream"
    result = subprocess.run([*script.split(), "demo", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--no-gaps" in result.stdout
