"""Running Flower's deployment engine as real processes: SuperLink, SuperNodes, ``flwr run``.

Why real processes and not Flower's simulation engine: the simulation engine needs Ray
(not a dependency), and a site is a separate machine anyway. The server side runs
``flower-superlink``, every site runs ``flower-supernode`` with its data folder in its
node config, and a round is submitted with ``flwr run`` from a Flower App folder.

Why the App folder is generated (:func:`write_app_dir`) and not shipped: ``flwr run``
needs a folder with a ``pyproject.toml`` naming the ServerApp/ClientApp and the run
config; the code itself lives in the installed ``twinstream`` package (the SuperLink and
SuperNodes import it from their own environment, runtime dependency installation is
disabled). Generating the folder from :data:`RUN_CONFIG_DEFAULTS` keeps one source
for the config keys, and works the same from a wheel.

Why ``FLWR_HOME`` is a temporary folder (:func:`write_flwr_home`): ``flwr run`` reads the
SuperLink's address from ``$FLWR_HOME/config.toml`` (default ``~/.flwr``); a private
home per run writes nothing to the user's home folder.

>>> superlink_command("127.0.0.1", 9200, Path("/tmp/l.db"), insecure=True)[1:5]
['--host', '127.0.0.1', '--port', '9200']
>>> node_config_arg({"data-dir": "/srv/site a", "n-sites": 4})
"data-dir='/srv/site a' n-sites=4"
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from twinstream.federation.server_config import RUN_CONFIG_DEFAULTS, toml_value
from twinstream.processes import stop_process

APP_NAME = "twinstream-federation"
CONNECTION = "twinstream"
SERVERAPP = "twinstream.federation.server_app:app"
CLIENTAPP = "twinstream.federation.client_app:app"


def bin_dir() -> Path:
    """Folder of this Python's console scripts (``flower-superlink`` etc. live beside it)."""
    return Path(sys.executable).parent


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for Flower processes: this venv's scripts first on PATH.

    The SuperLink and SuperNode start ``flower-superexec``, ``flwr-serverapp`` and
    ``flwr-clientapp`` by name, so they must resolve to this environment's copies.
    """
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir()}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra or {})
    return env


def tls_args(insecure: bool, **paths: Path | None) -> list[str]:
    """``--insecure``, or the given certificate options (``ssl_certfile`` -> ``--ssl-certfile``)."""
    if insecure:
        return ["--insecure"]
    args: list[str] = []
    for name, path in paths.items():
        if path is not None:
            args += [f"--{name.replace('_', '-')}", str(path)]
    return args


def superlink_command(host: str, port: int, database: Path, *, insecure: bool, ssl_certfile: Path | None = None,
                      ssl_keyfile: Path | None = None, ssl_ca_certfile: Path | None = None,
                      enable_supernode_auth: bool = False) -> list[str]:
    """``flower-superlink``: Fleet and Control API on one port (Flower 1.42), no runtime installs."""
    command = [str(bin_dir() / "flower-superlink"), "--host", host, "--port", str(port), "--database", str(database),
               "--disable-runtime-dependency-installation"]
    command += tls_args(insecure, ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile, ssl_ca_certfile=ssl_ca_certfile)
    if enable_supernode_auth:
        command.append("--enable-supernode-auth")
    return command


def node_config_arg(config: Mapping[str, str | int | float | bool]) -> str:
    """``--node-config`` value: ``key=value`` pairs as TOML (strings as literal strings, so paths keep backslashes)."""
    parts = []
    for key, value in config.items():
        if isinstance(value, str) and "'" not in value:
            parts.append(f"{key}='{value}'")
        else:
            parts.append(f"{key}={toml_value(value)}")
    return " ".join(parts)


def supernode_command(superlink: str, host: str, port: int, node_config: Mapping[str, str | int | float | bool], *,
                      insecure: bool, root_certificates: Path | None = None,
                      auth_private_key: Path | None = None) -> list[str]:
    """``flower-supernode`` for one site; ``port`` is its local runtime API (ClientApp processes connect to it)."""
    command = [str(bin_dir() / "flower-supernode"), "--superlink", superlink, "--host", host, "--port", str(port),
               "--node-config", node_config_arg(node_config)]
    command += tls_args(insecure, root_certificates=root_certificates)
    if auth_private_key is not None:
        command += ["--auth-supernode-private-key", str(auth_private_key)]
    return command


def write_app_dir(parent: Path) -> Path:
    """Write the Flower App folder (only a ``pyproject.toml``) under ``parent``; returns the folder."""
    app = Path(parent) / APP_NAME
    app.mkdir(parents=True, exist_ok=True)
    config = "\n".join(f"{key} = {toml_value(value)}" for key, value in RUN_CONFIG_DEFAULTS.items())
    (app / "pyproject.toml").write_text(f"""[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "{APP_NAME}"
version = "1.0.0"
description = "twinstream federated prior training (generated by twinstream.federation.runtime)"
license = "Apache-2.0"
dependencies = ["flwr==1.42.0"]

[tool.flwr.app]
publisher = "twinstream"

[tool.flwr.app.components]
serverapp = "{SERVERAPP}"
clientapp = "{CLIENTAPP}"

[tool.flwr.app.config]
{config}
""")
    return app


def write_flwr_home(home: Path, address: str, *, insecure: bool, root_certificates: Path | None = None) -> Path:
    """A private ``FLWR_HOME`` whose ``config.toml`` points ``flwr`` at the SuperLink ``address``."""
    home.mkdir(parents=True, exist_ok=True)
    lines = ["[superlink]", f'default = "{CONNECTION}"', "", f"[superlink.{CONNECTION}]", f"address = {json.dumps(address)}"]
    if insecure:
        lines.append("insecure = true")
    elif root_certificates is not None:
        lines.append(f"root-certificates = {json.dumps(str(Path(root_certificates).resolve()))}")
    (home / "config.toml").write_text("\n".join(lines) + "\n")
    return home


def write_run_config(path: Path, overrides: Mapping[str, object]) -> Path:
    """Run-config overrides as a TOML file (``flwr run -c FILE.toml``): no shell quoting of values."""
    unknown = sorted(set(overrides) - set(RUN_CONFIG_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown run config keys {unknown}; known: {sorted(RUN_CONFIG_DEFAULTS)}")
    path.write_text("".join(f"{json.dumps(k)} = {toml_value(v)}\n" for k, v in overrides.items()))
    return path


RUN_ID = re.compile(r"Successfully started run (\d+)")


@dataclass(frozen=True)
class RoundOutcome:
    """What a submitted run ended as: its id, Flower's final status text and the streamed log."""

    run_id: int | None
    status: str
    output: str
    returncode: int

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.status.endswith(":completed")


def _flwr(args: list[str]) -> list[str]:
    return [str(bin_dir() / "flwr"), *args]


def run_status(run_id: int, home: Path, timeout_s: float = 60.0) -> str:
    """Flower's status text of a run (``finished:completed``, ``finished:failed``, ...) via ``flwr ls``.

    Asked again (every second, up to ``timeout_s``) while the run is not ``finished``
    yet: the log stream can end a moment before the SuperLink records the final status.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        done = subprocess.run(_flwr(["ls", "--run-id", str(run_id), "--format", "json"]),
                              env=child_env({"FLWR_HOME": str(home)}), capture_output=True, text=True, timeout=timeout_s,
                              check=False)
        try:
            status = str(json.loads(done.stdout[done.stdout.index("{"):])["runs"][0]["status"])
        except (ValueError, KeyError, IndexError):
            status = f"unknown (flwr ls exited {done.returncode}: {(done.stdout + done.stderr).strip()[-300:]})"
        if not status.startswith(("pending", "starting", "running")) or time.monotonic() > deadline:
            return status  # finished, or unknown (SuperLink unreachable): asking again would not help
        time.sleep(1.0)


def submit_round(app_dir: Path, home: Path, run_config: Path | None, echo: Callable[[str], None] = print,
                 env: Mapping[str, str] | None = None, timeout_s: float | None = None) -> RoundOutcome:
    """``flwr run APP --stream``: submit the run, echo its log lines as they come, then ask its final status.

    ``flwr run --stream`` exits 0 even when the ServerApp raised; the status from
    ``flwr ls`` (``finished:failed``) is what tells a failed round (e.g. a refused
    publish) from a good one. SIGINT/SIGTERM stop the ``flwr`` child (the run itself
    goes on on the SuperLink; ``flwr stop RUN_ID`` stops it).
    """
    args = ["run", str(app_dir), CONNECTION, "--stream"]
    if run_config is not None:
        args += ["-c", str(run_config)]
    process = subprocess.Popen(_flwr(args), env=child_env({"FLWR_HOME": str(home), **(env or {})}),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    lines: list[str] = []
    previous = signal.getsignal(signal.SIGTERM)

    def _terminate(signum: int, frame: object) -> None:
        stop_process(process, timeout_s=10)
        raise KeyboardInterrupt

    in_main = _is_main_thread()
    if in_main:
        signal.signal(signal.SIGTERM, _terminate)
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            echo(line.rstrip("\n"))
        process.wait(timeout=timeout_s)
    except (KeyboardInterrupt, subprocess.TimeoutExpired):
        stop_process(process, timeout_s=10)
        raise
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
    output = "".join(lines)
    match = RUN_ID.search(output)
    run_id = int(match.group(1)) if match else None
    status = run_status(run_id, home) if run_id is not None else "not started"
    return RoundOutcome(run_id, status, output, process.returncode if process.returncode is not None else -1)


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


class ManagedProcess:
    """A long-running Flower process started in its own session, stopped with everything it started.

    ``flower-superlink`` and ``flower-supernode`` start ``flower-superexec`` children (and
    those start app processes). SIGTERM to the parent lets it shut down cleanly; then
    whatever is left of its process group (it is the group leader) is killed, so no
    superexec outlives it.
    """

    def __init__(self, command: list[str], log_path: Path | None, env: Mapping[str, str] | None = None) -> None:
        self.command = command
        self.log_path = Path(log_path) if log_path is not None else None
        self.env = child_env(env)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ManagedProcess:
        """Start in a new session; output to the log file, or to this terminal when there is none."""
        if self.log_path is None:
            self.process = subprocess.Popen(self.command, env=self.env, start_new_session=True)
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        return self

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path is not None and self.log_path.exists() else ""

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.process is None:
            return
        stop_process(self.process, timeout_s=timeout_s)
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # leftovers of the group this process led
        except (ProcessLookupError, PermissionError):
            pass

    def wait(self) -> int:
        """Block until the process exits; SIGINT/SIGTERM to this process stop it cleanly first."""
        assert self.process is not None
        previous = signal.getsignal(signal.SIGTERM)

        def _terminate(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        if _is_main_thread():
            signal.signal(signal.SIGTERM, _terminate)
        try:
            return self.process.wait()
        except KeyboardInterrupt:
            self.stop()
            return self.process.returncode if self.process.returncode is not None else -1
        finally:
            if _is_main_thread():
                signal.signal(signal.SIGTERM, previous)
