"""The README matches the code: every CLI command is in its table, its test command is CI's."""

from __future__ import annotations

import re
from pathlib import Path

import typer.main

from twinstream.cli import app

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def command_rows() -> list[str]:
    return [line for line in README.splitlines() if line.startswith("| `twinstream ")]


def test_every_cli_command_is_in_the_commands_table() -> None:
    cli = typer.main.get_command(app)
    rows = command_rows()
    missing = []
    for name, command in cli.commands.items():
        group_rows = [r for r in rows if r.startswith(f"| `twinstream {name}")]
        subcommands = getattr(command, "commands", None)
        if not subcommands:
            missing += [] if group_rows else [name]
            continue
        for sub in subcommands:
            if not any(re.search(rf"`(twinstream )?({name} )?{re.escape(sub)}\b", r) for r in group_rows):
                missing.append(f"{name} {sub}")
    assert not missing, f"commands missing from the README's table: {missing}"


def test_readme_and_ci_run_the_same_test_script() -> None:
    assert ".ci/test" in README
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^\.ci/test\b", ci, re.M), "CI must call the README's test script"
    script = (ROOT / ".ci" / "test").read_text()
    for step in ("apt-get update", "apt-get install", "deps-helm.sh", ".ci/lint", "pytest"):
        assert step in script, step
    assert script.index(".ci/lint") < script.index("python -m pytest"), "lint runs before the tests"
