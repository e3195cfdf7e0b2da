"""Real time-series servers for integration tests: VictoriaMetrics and InfluxDB 1.x.

Both come from Debian packages (``apt-get install victoria-metrics influxdb``) and run
as child processes on free loopback ports with their data in a temp directory. The
fixtures in ``conftest.py`` skip a test (with the reason) only when a binary is
missing; with ``TWINSTREAM_REQUIRE_SERVERS=1`` (CI) a missing binary fails instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from twinstream.broker import free_port
from twinstream.processes import stop_process

VICTORIA_METRICS_BIN = "victoria-metrics"
INFLUXD_BIN = "influxd"


def require_binary(name: str, package: str) -> str:
    """Path of a server binary; skip (or fail under TWINSTREAM_REQUIRE_SERVERS=1) if absent."""
    path = shutil.which(name)
    if path is None:
        reason = f"{name} not found on PATH: install it with `apt-get install -y {package}`"
        if os.environ.get("TWINSTREAM_REQUIRE_SERVERS") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def http(method: str, url: str, data: bytes | None = None, timeout: float = 10.0) -> tuple[int, bytes]:
    """One HTTP request with the standard library; returns status and body (errors too)."""
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class ServerProcess:
    """A child server process with a log file; stop() is safe to call twice."""

    name = "server"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"{self.name}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self, timeout_s: float = 20.0) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if self.ready():
                    return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} not ready after {timeout_s} s:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM (servers flush their data on it), SIGKILL if it hangs."""
        process, self.process = self.process, None
        stop_process(process, timeout_s)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


class VictoriaMetricsServer(ServerProcess):
    """Single-node VictoriaMetrics; accepts ``/api/v2/write`` (Influx line protocol).

    ``-dedup.minScrapeInterval=1ms`` makes it keep one sample per series and
    millisecond, i.e. the overwrite semantics the sink's idempotent writes rely on.
    """

    name = "victoria-metrics"

    def __init__(self, workdir: Path, binary: str) -> None:
        super().__init__(workdir)
        self.binary = binary
        self.data_dir = workdir / "vmdata"

    def command(self) -> list[str]:
        return [
            self.binary,
            "-retentionPeriod=100y",
            "-search.latencyOffset=0s",
            "-dedup.minScrapeInterval=1ms",
            f"-httpListenAddr=127.0.0.1:{self.port}",
            f"-storageDataPath={self.data_dir}",
            "-loggerLevel=WARN",
        ]

    def ready(self) -> bool:
        status, body = http("GET", f"{self.url}/health", timeout=1.0)
        return status == 200 and body.strip() == b"OK"

    def export(self, match: str) -> list[dict[str, Any]]:
        """All raw samples of the series matching ``match`` (after a force flush)."""
        http("GET", f"{self.url}/internal/force_flush")
        query = urllib.parse.urlencode({"match[]": match})
        status, body = http("GET", f"{self.url}/api/v1/export?{query}")
        if status != 200:
            raise RuntimeError(f"export failed: HTTP {status}: {body[:300]!r}")
        return [json.loads(line) for line in body.splitlines() if line.strip()]

    def entity_seqs(self, entity_prefix: str) -> set[tuple[str, int]]:
        """Every ``(entity_id, seq)`` stored as ``prediction_seq`` for entities with this prefix."""
        found: set[tuple[str, int]] = set()
        for series in self.export(f'prediction_seq{{entity_id=~"{entity_prefix}.*"}}'):
            entity = series["metric"]["entity_id"]
            found.update((entity, int(value)) for value in series["values"])
        return found


INFLUXDB_CONFIG = """\
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{root}/meta"

[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  query-log-enabled = false

[monitor]
  store-enabled = false

[http]
  bind-address = "127.0.0.1:{http_port}"
  log-enabled = false
  pprof-enabled = false

[logging]
  level = "warn"
  suppress-logo = true

[continuous_queries]
  enabled = false
"""


class InfluxDB1Server(ServerProcess):
    """InfluxDB 1.x (Debian's ``influxdb``) with its own config, dirs and ports."""

    name = "influxd"

    def __init__(self, workdir: Path, binary: str) -> None:
        super().__init__(workdir)
        self.binary = binary
        self.rpc_port = free_port()
        self.config_path = workdir / "influxdb.conf"
        self.config_path.write_text(
            INFLUXDB_CONFIG.format(rpc_port=self.rpc_port, http_port=self.port, root=workdir)
        )

    def command(self) -> list[str]:
        return [self.binary, "-config", str(self.config_path)]

    def ready(self) -> bool:
        status, _ = http("GET", f"{self.url}/ping", timeout=1.0)
        return status == 204

    def query(self, statement: str, database: str | None = None) -> dict[str, Any]:
        """Run InfluxQL via ``/query`` (ns epochs); raise on an error in the answer."""
        params = {"q": statement, "epoch": "ns"}
        if database:
            params["db"] = database
        status, body = http("POST", f"{self.url}/query?{urllib.parse.urlencode(params)}")
        answer = json.loads(body)
        if status != 200 or "error" in answer or any("error" in r for r in answer.get("results", [])):
            raise RuntimeError(f"InfluxQL {statement!r} failed: HTTP {status}: {answer}")
        return answer

    def create_database(self, name: str) -> None:
        self.query(f'CREATE DATABASE "{name}"')

    def rows(self, statement: str, database: str) -> list[dict[str, Any]]:
        """Result rows of a SELECT as dicts (column -> value)."""
        rows: list[dict[str, Any]] = []
        for result in self.query(statement, database)["results"]:
            for series in result.get("series", []):
                rows.extend(dict(zip(series["columns"], values)) for values in series["values"])
        return rows
