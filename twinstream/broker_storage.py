"""Where the embedded broker keeps its data: memory, a local directory, or an object store.

The bundled Tansu 0.6.0 is built with its object-store engine only: ``memory://`` and
``s3://`` / ``gs://`` buckets (its PostgreSQL and SQLite engines are not compiled in: it
exits with ``FeatureNotEnabled``). So the durable choices are

- a **directory** (``/var/lib/twinstream/broker`` or ``file:///...``): twinstream runs
  :mod:`twinstream.objectstore` on it (a loopback S3 endpoint, fsync on every write) and
  points Tansu at it. One flag, nothing else to install.
- an **S3 bucket** (``s3://bucket/``): any store that honours conditional writes
  (``If-Match`` / ``If-None-Match``), e.g. AWS S3, MinIO, Ceph RGW. Endpoint and
  credentials come from the usual ``AWS_*`` variables (``AWS_ENDPOINT``,
  ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``,
  ``AWS_ALLOW_HTTP``), which Tansu reads itself.

>>> parse_storage("memory://").kind, parse_storage("s3://tansu/").engine_url
('memory', 's3://tansu/')
>>> parse_storage("file:///var/lib/ts").directory
PosixPath('/var/lib/ts')
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

LOCAL_BUCKET = "tansu"
ENGINES = ("memory", "s3", "gs")  # what the bundled Tansu build accepts


class StorageError(ValueError):
    """A storage location the embedded broker cannot use."""


@dataclass(frozen=True)
class BrokerStorage:
    """A parsed ``--storage`` value."""

    kind: Literal["memory", "directory", "bucket"]
    engine_url: str  # what Tansu's --storage-engine gets (for a directory: the local bucket)
    directory: Path | None = None

    @property
    def durable(self) -> bool:
        return self.kind != "memory"


def parse_storage(spec: str | None) -> BrokerStorage:
    """``memory://`` (default), a directory path / ``file://`` URL, or ``s3://`` / ``gs://``.

    >>> parse_storage("postgres://db/tansu")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    twinstream.broker_storage.StorageError: postgres:// storage is not in the bundled Tansu build ...
    """
    value = (spec or "memory://").strip()
    if value in ("memory", "memory://") or value.startswith("memory://"):
        return BrokerStorage("memory", "memory://tansu/")
    scheme = urllib.parse.urlsplit(value).scheme if "://" in value else ""
    if scheme in ("s3", "gs"):
        return BrokerStorage("bucket", value if value.endswith("/") else value + "/")
    if scheme == "file":
        path = urllib.parse.unquote(urllib.parse.urlsplit(value).path)
        return BrokerStorage("directory", f"s3://{LOCAL_BUCKET}/", Path(path))
    if scheme:
        raise StorageError(f"{scheme}:// storage is not in the bundled Tansu build (it has {', '.join(ENGINES)}); "
                           "use a directory or an s3:// bucket")
    return BrokerStorage("directory", f"s3://{LOCAL_BUCKET}/", Path(value).expanduser().resolve())


def die_with_parent() -> None:
    """``preexec_fn``: the child gets SIGKILL when the process that started it dies (Linux).

    So a SIGKILLed ``twinstream broker`` leaves no broker or store behind on its port.
    Only for children started from the main thread (the signal follows the forking thread).
    """
    import ctypes
    import signal

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)


class LocalObjectStore:
    """:mod:`twinstream.objectstore` on ``directory`` as a child process, on a free loopback port.

    Keys are random per start: the store does not check them, but Tansu's S3 client signs
    every request and needs some.
    """

    def __init__(self, directory: Path, host: str = "127.0.0.1", log_path: Path | None = None,
                 die_with_parent: bool = False) -> None:
        self.directory = directory
        self.host = host
        self.port = 0
        self.log_path = log_path
        self.die_with_parent = die_with_parent
        self.process: subprocess.Popen[bytes] | None = None
        self._key = (secrets.token_hex(8), secrets.token_hex(16))

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def tansu_env(self) -> dict[str, str]:
        """What Tansu's S3 client needs to reach this store."""
        return {
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": self._key[0],
            "AWS_SECRET_ACCESS_KEY": self._key[1],
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def start(self, timeout_s: float = 15.0) -> LocalObjectStore:
        from twinstream.broker import BrokerError, free_port, wait_for_port

        if self.running:
            return self
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port(self.host)
        output = self.log_path.open("ab") if self.log_path is not None else subprocess.DEVNULL
        command = [sys.executable, "-m", "twinstream.objectstore", "--root", str(self.directory),
                   "--host", self.host, "--port", str(self.port), "--bucket", LOCAL_BUCKET]
        try:
            self.process = subprocess.Popen(command, stdout=output, stderr=output, env=dict(os.environ),
                                            preexec_fn=die_with_parent if self.die_with_parent else None)
        finally:
            if output is not subprocess.DEVNULL:
                output.close()
        try:
            wait_for_port(self.host, self.port, timeout_s, self.process)
        except BrokerError as exc:
            self.stop()
            raise BrokerError(f"the broker's object store on {self.directory} did not start: {exc}") from None
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        from twinstream.processes import stop_process

        process, self.process = self.process, None
        stop_process(process, timeout_s)
