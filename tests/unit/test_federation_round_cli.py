"""``twinstream federation site`` / ``round`` / ``serve --superlink``: option checks that stop before any process starts.

TLS is the default, so each command refuses to run without certificates unless
``--insecure`` is given; a site needs its data; bad strategy options are refused.
The real processes are exercised by ``tests/integration/test_federated_round.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from twinstream.cli import app
from twinstream.federation.runtime import RoundOutcome, node_config_arg, supernode_command


@pytest.mark.parametrize("args, message", [
    (["federation", "site", "--insecure"], "exactly one of --data"),
    (["federation", "site", "--data", "DATA", "--bundled-site", "site-1", "--insecure"], "exactly one of --data"),
    (["federation", "site", "--data", "EMPTY", "--insecure"], "has no train_FD001.txt"),
    (["federation", "site", "--bundled-site", "site-1"], "TLS needs --root-certificates"),
    (["federation", "round"], "TLS needs --root-certificates"),
    (["federation", "round", "--insecure", "--strategy", "fedsgd"], "invalid round options"),
    (["federation", "round", "--insecure", "--dp-noise-multiplier", "1.0"], "invalid round options"),
    (["federation", "round", "--insecure", "--set", "local.no-such-option=1"], "unknown run config keys"),
    (["federation", "round", "--insecure", "--set", "start-from=newest"], "invalid round options"),
    (["federation", "round", "--insecure", "--set", "lr"], "expects KEY=VALUE"),
    (["federation", "serve", "--dir", "REG", "--superlink"], "TLS needs --ssl-certfile, --ssl-keyfile, --ssl-ca-certfile"),
])
def test_refused_before_starting_anything(args: list[str], message: str, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train_FD001.txt").write_text("1 1 0 0 100 " + " ".join(["1.0"] * 21) + "\n")
    paths = {"DATA": str(tmp_path / "data"), "EMPTY": str(tmp_path / "empty"), "REG": str(tmp_path / "reg")}
    result = CliRunner().invoke(app, [paths.get(a, a) for a in args], env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output


def test_supernode_command_carries_the_site_config_and_tls() -> None:
    command = supernode_command("link:9093", "127.0.0.1", 9100, {"data-dir": "/srv/site a", "max-engines": 0},
                                insecure=False, root_certificates=Path("/etc/ca.pem"))
    assert command[command.index("--node-config") + 1] == "data-dir='/srv/site a' max-engines=0"
    assert command[command.index("--root-certificates") + 1] == "/etc/ca.pem" and "--insecure" not in command
    assert "--insecure" in supernode_command("l:1", "127.0.0.1", 1, {}, insecure=True)
    assert node_config_arg({"data-dir": "it's"}) == 'data-dir="it\'s"'


def test_only_a_completed_run_is_a_success() -> None:
    assert RoundOutcome(1, "finished:completed", "", 0).ok
    assert not RoundOutcome(1, "finished:failed", "", 0).ok
    assert not RoundOutcome(None, "not started", "", 1).ok


def test_set_values_are_toml_scalars_or_strings() -> None:
    from twinstream.commands.federation import _parse_sets

    assert _parse_sets(["local.batch-size=64", "lr=0.01", "publish=false", "out-dir=/srv/out", 'version="7"']) == {
        "local.batch-size": 64, "lr": 0.01, "publish": False, "out-dir": "/srv/out", "version": "7"}
