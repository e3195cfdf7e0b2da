"""Every ``TWINSTREAM_*`` name in the deployment artefacts (Dockerfile, compose, Grafana,
Helm chart, docs/deploy.md) must be a field of :class:`twinstream.settings.Settings`
(the set is derived from ``Settings.model_fields``), and docs/deploy.md describes every
setting, so the artefacts cannot drift from the code unnoticed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from deploy_render_support import CHART, COMPOSE_FILE, DOCKERFILE, ENV_NAME, GRAFANA, REPO, SETTINGS_ENV

# Artefacts whose TWINSTREAM_* names must all be Settings fields.
ARTEFACTS = [
    DOCKERFILE,
    COMPOSE_FILE,
    REPO / "docs" / "deploy.md",
    *sorted(p for p in GRAFANA.rglob("*") if p.is_file()),
    *sorted(p for p in CHART.rglob("*") if p.is_file()),
]


@pytest.mark.parametrize("path", ARTEFACTS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_twinstream_env_name_is_a_settings_field(path: Path) -> None:
    assert path.is_file(), f"{path} is missing"
    names = set(ENV_NAME.findall(path.read_text(encoding="utf-8")))
    unknown = sorted(names - SETTINGS_ENV)
    assert not unknown, f"{path.relative_to(REPO)} uses {unknown}, which are not fields of Settings"


def test_deploy_docs_list_every_setting() -> None:
    text = (REPO / "docs" / "deploy.md").read_text()
    missing = sorted(name for name in SETTINGS_ENV if f"`{name}`" not in text)
    assert not missing, f"docs/deploy.md does not describe {missing}"
