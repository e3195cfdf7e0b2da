"""The alert rules load in Prometheus's own checker, and docs/operations.md describes each alert and metric it uses."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml
from deploy_render_support import required_tool

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "rules.yml"
OPERATIONS = REPO / "docs" / "operations.md"


def test_promtool_accepts_the_rules() -> None:
    promtool = required_tool("promtool", ".ci/test installs Debian's prometheus", "apt-get install prometheus")
    result = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_and_its_metrics_are_documented() -> None:
    docs = OPERATIONS.read_text()
    rules = [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]
    assert rules
    documented = set(re.findall(r"`((?:twinstream|kafka_consumergroup)_[a-z_]+)`", docs))
    for rule in rules:
        assert f"`{rule['alert']}`" in docs, f"docs/operations.md does not describe {rule['alert']}"
        used = set(re.findall(r"\b((?:twinstream|kafka_consumergroup)_[a-z_]+)\b", rule["expr"]))
        assert used <= documented, f"{rule['alert']} uses undocumented metrics {sorted(used - documented)}"
