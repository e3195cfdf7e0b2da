"""The embedded broker with a secured listener: TLS, SASL/SCRAM users, optional mutual TLS.

Tansu runs on a private loopback port and advertises the guard's address; the guard
(:mod:`twinstream.broker_guard`, a child process) owns the public port. Why not Tansu's
own ``--cert/--key/--authentication``: see the guard's docstring (the bundled 0.6.0
cannot start with both TLS flags and keeps no SCRAM users in its object-store engine).

>>> parse_user("alice:s3cret:with:colons")
('alice', 's3cret:with:colons')

>>> with SecuredBroker(tls_cert=cert, tls_key=key, users={"alice": "s3cret"}) as broker:   # doctest: +SKIP
...     print(broker.url)
kafka://127.0.0.1:40123
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import TracebackType

from twinstream.broker import BrokerError, EmbeddedBroker, free_port, port_is_free, wait_for_port
from twinstream.broker_guard import USERS_ENV
from twinstream.broker_storage import die_with_parent as _die_with_parent
from twinstream.processes import stop_process


def parse_user(text: str) -> tuple[str, str]:
    """``NAME:PASSWORD`` -> (name, password); the password may contain colons."""
    name, sep, password = text.partition(":")
    if not sep or not name or not password:
        raise ValueError("a user is NAME:PASSWORD (both non-empty)")
    return name, password


class SecuredBroker:
    """Tansu on a private port + the guard on ``host:port``; use as a context manager."""

    def __init__(self, port: int | None = None, host: str = "127.0.0.1", *, tls_cert: Path | None = None,
                 tls_key: Path | None = None, client_ca: Path | None = None, users: dict[str, str] | None = None,
                 storage: str | None = None, log_path: Path | None = None, die_with_parent: bool = False) -> None:
        if (tls_cert is None) != (tls_key is None):
            raise BrokerError("TLS needs both a certificate and a key")
        if client_ca is not None and tls_cert is None:
            raise BrokerError("a client CA (mutual TLS) needs --tls-cert and --tls-key")
        for path in (tls_cert, tls_key, client_ca):
            if path is not None and not Path(path).is_file():
                raise BrokerError(f"{path}: no such file")
        self.host = host
        self.port = port or free_port(host)
        self.tls_cert, self.tls_key, self.client_ca = tls_cert, tls_key, client_ca
        self.users = dict(users or {})
        self.log_path = log_path
        self.die_with_parent = die_with_parent
        inner_log = log_path.with_name(log_path.stem + "-tansu.log") if log_path is not None else None
        self.inner = EmbeddedBroker(host="127.0.0.1", storage=storage, log_path=inner_log, die_with_parent=die_with_parent,
                                    advertised=f"{host}:{self.port}")
        self._guard: subprocess.Popen[bytes] | None = None
        self._log_file = None

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def security_protocol(self) -> str:
        """What a client sets as ``TWINSTREAM_KAFKA_SECURITY_PROTOCOL`` for this listener."""
        return {(False, False): "PLAINTEXT", (True, False): "SSL", (False, True): "SASL_PLAINTEXT",
                (True, True): "SASL_SSL"}[(self.tls, bool(self.users))]

    @property
    def url(self) -> str:
        return f"kafka://{self.host}:{self.port}"

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.inner.running and self._guard is not None and self._guard.poll() is None

    @property
    def storage(self):  # noqa: ANN201 - the inner broker's BrokerStorage
        return self.inner.storage

    def guard_command(self) -> list[str]:
        command = [sys.executable, "-m", "twinstream.broker_guard", "--listen", f"{self.host}:{self.port}",
                   "--upstream", self.inner.bootstrap_servers]
        if self.tls:
            command += ["--cert", str(self.tls_cert), "--key", str(self.tls_key)]
        if self.client_ca is not None:
            command += ["--client-ca", str(self.client_ca)]
        return command

    def start(self, timeout_s: float = 15.0) -> SecuredBroker:
        if self.running:
            return self
        if not port_is_free(self.host, self.port):
            raise BrokerError(f"{self.host}:{self.port} is already in use; pick another port (or 0 for any)")
        self.inner.start(timeout_s)
        env = {**os.environ, USERS_ENV: json.dumps(self.users)}
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = self.log_path.open("ab")
        output = self._log_file if self._log_file is not None else subprocess.DEVNULL
        try:
            self._guard = subprocess.Popen(self.guard_command(), stdout=output, stderr=output, env=env,
                                           preexec_fn=_die_with_parent if self.die_with_parent else None)
            wait_for_port(self.host, self.port, timeout_s, self._guard)
        except BrokerError:
            self.stop()
            raise
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        guard, self._guard = self._guard, None
        stop_process(guard, timeout_s)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        self.inner.stop(timeout_s)

    def __enter__(self) -> SecuredBroker:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
