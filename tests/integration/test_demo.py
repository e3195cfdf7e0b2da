"""`twinstream demo` end to end, as a user runs it: its own broker, worker and replay."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from twinstream.data.cmapss import load_subset


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
    assert summary["rmse_engines"] == 100 and summary["rmse"] >= 0
    png = Path(summary["report_png"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
