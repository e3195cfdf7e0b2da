"""Shared helpers for the deployment-artefact tests (test_deploy_docs, test_dockerfile,
test_compose_render, test_grafana_provisioning, test_helm_render).

Not a test module: paths of the artefacts, the ``TWINSTREAM_*`` names derived from
:class:`twinstream.settings.Settings`, building Settings from an environment, reading
docker-compose services, and parsing CLI arguments with the real CLI.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from twinstream.settings import Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
CHART = REPO / "helm" / "twinstream"
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))

ENV_PREFIX = Settings.model_config["env_prefix"]
SETTINGS_ENV = frozenset(ENV_PREFIX + name.upper() for name in Settings.model_fields)
ENV_NAME = re.compile(rf"\b{ENV_PREFIX}[A-Z0-9_]+")


def required_tool(name: str, in_ci: str, install: str) -> str:
    """Path of a checker binary (helm, promtool); a failure under CI or TWINSTREAM_REQUIRE_SERVERS=1, else a skip.

    ``in_ci`` says how CI installs it, ``install`` how a developer does.
    """
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI") or os.environ.get("TWINSTREAM_REQUIRE_SERVERS") == "1":
            pytest.fail(f"{name} is not installed: {in_ci}")
        pytest.skip(f"{name} is not installed ({install})")
    return path


def settings_from_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Settings:
    """Settings built the way a process builds them: from TWINSTREAM_* variables only."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


_INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<default>[^}]*))?\}")


def interpolate(value: Any) -> str:
    """A compose value as the container sees it with no variables set on the host."""
    text = str(value)
    text = _INTERPOLATION.sub(lambda m: m.group("default") or "", text)
    return text.replace("$$", "$")


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {name: interpolate(value) for name, value in env.items()}


def depends_on(service: dict) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def volume_mounts(service: dict) -> list[tuple[str, str]]:
    mounts = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            mounts.append((entry["source"], entry["target"]))
        else:
            source, target = entry.split(":")[:2]
            mounts.append((source, target))
    return mounts


def load_compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def check_cli_args(args: list[str]) -> None:
    """Parse ``args`` with the real CLI, without running the command (unknown commands or
    options raise)."""
    import typer

    from twinstream import cli

    command = typer.main.get_command(cli.app)
    rest = list(args)
    name = "twinstream"
    while hasattr(command, "commands"):  # a group: descend into the named sub-command
        assert rest, f"{args}: incomplete command"
        name = rest.pop(0)
        assert name in command.commands, f"{args}: no command {name!r} (has {sorted(command.commands)})"
        command = command.commands[name]
    command.make_context(name, rest)
