"""Kafka connection security in one place: Settings -> what each client library needs.

Why one module: twinstream talks to Kafka through four client libraries (Faust,
aiokafka, kafka-python, and confluent-kafka in tests and benchmarks). Each spells TLS
and SASL differently; if every creation site built its own options, one of them would
be forgotten and connect in clear. Every site calls one function here instead:

- :func:`client_options` -> kwargs for aiokafka *and* kafka-python clients (they share
  ``security_protocol``, ``ssl_context``, ``sasl_mechanism``, ``sasl_plain_username``,
  ``sasl_plain_password``);
- :func:`faust_credentials` -> ``broker_credentials`` for ``faust.App``;
- :func:`confluent_options` -> librdkafka configuration keys;
- :func:`require_kafka` -> a start-up probe that ends a misconfigured process within
  ``kafka_connect_timeout_s`` with a message naming the setting, instead of a client
  that retries forever.

The password is read here (from ``kafka_sasl_password_file`` or ``kafka_sasl_password``)
and handed only to the client constructors; nothing here logs it.

>>> client_options(Settings())
{'security_protocol': 'PLAINTEXT'}
>>> sorted(confluent_options(Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_username="u",
...                                   kafka_sasl_password="p")))
['sasl.mechanisms', 'sasl.password', 'sasl.username', 'security.protocol']
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
import time
from pathlib import Path
from typing import Any

from twinstream.settings import Settings

ENV = "TWINSTREAM_"


class KafkaSecurityError(RuntimeError):
    """Kafka security settings that cannot work, or a broker that refused them; the message names the setting."""


class KafkaUnreachableError(KafkaSecurityError):
    """Nothing answered at the bootstrap address (an outage, not a configuration error)."""


def _env(field: str) -> str:
    return ENV + field.upper()


def uses_tls(settings: Settings) -> bool:
    return settings.kafka_security_protocol in ("SSL", "SASL_SSL")


def uses_sasl(settings: Settings) -> bool:
    return settings.kafka_security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")


def sasl_password(settings: Settings) -> str:
    """The SASL password: the file's content (a mounted Secret) if set, else the setting."""
    path = settings.kafka_sasl_password_file
    if path is not None:
        try:
            return path.read_text().rstrip("\r\n")
        except OSError as exc:
            raise KafkaSecurityError(f"{_env('kafka_sasl_password_file')}={path}: cannot read it ({exc.strerror})") from exc
    return settings.kafka_sasl_password.get_secret_value()


def _readable(settings: Settings, field: str) -> Path | None:
    path: Path | None = getattr(settings, field)
    if path is not None and not path.is_file():
        raise KafkaSecurityError(f"{_env(field)}={path}: no such file")
    return path


def check_settings(settings: Settings) -> None:
    """Raise :class:`KafkaSecurityError` for settings that cannot work, before any connection."""
    if uses_sasl(settings):
        if not settings.kafka_sasl_username:
            raise KafkaSecurityError(f"{_env('kafka_security_protocol')}={settings.kafka_security_protocol} "
                                     f"needs {_env('kafka_sasl_username')}")
        if not sasl_password(settings):
            raise KafkaSecurityError(f"{_env('kafka_security_protocol')}={settings.kafka_security_protocol} needs "
                                     f"{_env('kafka_sasl_password_file')} or {_env('kafka_sasl_password')}")
        if settings.kafka_sasl_mechanism == "PLAIN" and not uses_tls(settings):
            raise KafkaSecurityError(f"{_env('kafka_sasl_mechanism')}=PLAIN sends the password in clear: use "
                                     f"{_env('kafka_security_protocol')}=SASL_SSL or a SCRAM mechanism")
    if uses_tls(settings):
        for field in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile"):
            _readable(settings, field)
        if (settings.kafka_ssl_certfile is None) != (settings.kafka_ssl_keyfile is None):
            raise KafkaSecurityError(f"mutual TLS needs both {_env('kafka_ssl_certfile')} and {_env('kafka_ssl_keyfile')}")


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The client TLS context (None without TLS): CA bundle, optional client certificate, hostname check."""
    if not uses_tls(settings):
        return None
    check_settings(settings)
    cafile = settings.kafka_ssl_cafile
    try:
        context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    except ssl.SSLError as exc:
        raise KafkaSecurityError(f"{_env('kafka_ssl_cafile')}={cafile}: not a PEM CA bundle ({exc.reason})") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = settings.kafka_ssl_check_hostname
    if settings.kafka_ssl_certfile is not None:
        try:
            context.load_cert_chain(str(settings.kafka_ssl_certfile), str(settings.kafka_ssl_keyfile))
        except ssl.SSLError as exc:
            raise KafkaSecurityError(f"{_env('kafka_ssl_certfile')} / {_env('kafka_ssl_keyfile')}: cannot load "
                                     f"the client certificate and key ({exc.reason})") from exc
    return context


def client_options(settings: Settings) -> dict[str, Any]:
    """Security kwargs for aiokafka and kafka-python clients (producer, consumer, admin)."""
    check_settings(settings)
    options: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    if uses_tls(settings):
        options["ssl_context"] = ssl_context(settings)
    if uses_sasl(settings):
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = sasl_password(settings)
    return options


def faust_credentials(settings: Settings) -> Any:
    """``broker_credentials`` for ``faust.App`` (None: plaintext)."""
    check_settings(settings)
    if not uses_tls(settings) and not uses_sasl(settings):
        return None
    from faust.auth import SASLCredentials, SSLCredentials

    context = ssl_context(settings)
    if not uses_sasl(settings):
        return SSLCredentials(context)
    return SASLCredentials(username=settings.kafka_sasl_username, password=sasl_password(settings),
                           ssl_context=context, mechanism=settings.kafka_sasl_mechanism)


def confluent_options(settings: Settings) -> dict[str, str]:
    """librdkafka (confluent-kafka) configuration keys for the same settings."""
    check_settings(settings)
    options = {"security.protocol": settings.kafka_security_protocol.lower()}
    if uses_tls(settings):
        if settings.kafka_ssl_cafile is not None:
            options["ssl.ca.location"] = str(settings.kafka_ssl_cafile)
        if settings.kafka_ssl_certfile is not None:
            options["ssl.certificate.location"] = str(settings.kafka_ssl_certfile)
            options["ssl.key.location"] = str(settings.kafka_ssl_keyfile)
        options["ssl.endpoint.identification.algorithm"] = "https" if settings.kafka_ssl_check_hostname else "none"
    if uses_sasl(settings):
        options["sasl.mechanisms"] = settings.kafka_sasl_mechanism
        options["sasl.username"] = settings.kafka_sasl_username
        options["sasl.password"] = sasl_password(settings)
    return options


# --- start-up probe ------------------------------------------------------------------------

_CLIENT_ID = b"twinstream-probe"
_API_VERSIONS_V0 = struct.pack(">ihhih", 2 + 2 + 4 + 2 + len(_CLIENT_ID), 18, 0, 1, len(_CLIENT_ID)) + _CLIENT_ID


def _first_server(settings: Settings) -> tuple[str, int]:
    host, port = settings.broker_servers.split(",")[0].rsplit(":", 1)
    return host.strip("[]"), int(port)


def _connect(host: str, port: int, deadline: float, wait: bool) -> socket.socket:
    """A TCP connection; with ``wait``, retried until ``deadline`` (a broker still starting is not an error yet)."""
    while True:
        try:
            return socket.create_connection((host, port), timeout=max(0.1, deadline - time.monotonic()))
        except OSError as exc:
            if not wait or time.monotonic() + 0.5 > deadline:
                raise KafkaUnreachableError(f"cannot reach the broker at {host}:{port} ({exc}); check {_env('broker')}") from exc
            time.sleep(0.5)


def _probe_transport(settings: Settings, deadline: float, wait: bool = True) -> None:
    """TCP + (TLS handshake | one plaintext ApiVersions round trip) to the first bootstrap server."""
    host, port = _first_server(settings)
    protocol = _env("kafka_security_protocol")
    sock = _connect(host, port, deadline, wait)
    sock.settimeout(max(0.1, deadline - time.monotonic()))
    try:
        if uses_tls(settings):
            context = ssl_context(settings)
            assert context is not None
            try:
                sock = context.wrap_socket(sock, server_hostname=host)
            except ssl.SSLCertVerificationError as exc:
                hint = (f"{_env('kafka_ssl_check_hostname')} (the certificate does not name {host})"
                        if "hostname" in str(exc.verify_message).lower() or "match" in str(exc.verify_message).lower()
                        else f"{_env('kafka_ssl_cafile')} (the broker's certificate does not chain to it)")
                raise KafkaSecurityError(f"TLS to {host}:{port} refused: {exc.verify_message}; check {hint}") from exc
            except (ssl.SSLError, TimeoutError, OSError) as exc:
                raise KafkaSecurityError(
                    f"TLS handshake with {host}:{port} failed ({exc}); is that listener plaintext? check {protocol}"
                    f"={settings.kafka_security_protocol} (and {_env('kafka_ssl_certfile')} if it wants a client certificate)"
                ) from exc
        else:
            try:
                sock.sendall(_API_VERSIONS_V0)
                reply = sock.recv(5)
            except (TimeoutError, OSError) as exc:
                raise KafkaSecurityError(f"the broker at {host}:{port} did not answer a plaintext request ({exc}); "
                                         f"if its listener uses TLS set {protocol}=SSL or SASL_SSL") from exc
            if not reply or reply[:1] == b"\x15":  # closed, or a TLS alert record
                raise KafkaSecurityError(f"the broker at {host}:{port} refused a plaintext connection "
                                         f"({'TLS alert' if reply else 'connection closed'}); its listener wants TLS: "
                                         f"set {protocol}=SSL or SASL_SSL and {_env('kafka_ssl_cafile')}")
    finally:
        sock.close()


def _client_cert_hint(settings: Settings) -> str:
    if uses_tls(settings) and settings.kafka_ssl_certfile is None:
        return f" (a listener that demands a client certificate closes the connection: {_env('kafka_ssl_certfile')})"
    return ""


async def _probe_login(settings: Settings, deadline: float) -> None:
    """One aiokafka connection with the configured credentials (TLS, the SASL exchange), then a metadata bootstrap."""
    from aiokafka import errors as kafka_errors
    from aiokafka.client import AIOKafkaClient
    from aiokafka.conn import create_conn

    host, port = _first_server(settings)
    options = client_options(settings)
    protocol = f"{_env('kafka_security_protocol')}={settings.kafka_security_protocol}"

    def remaining_ms() -> int:
        return int(max(0.5, deadline - time.monotonic()) * 1000)

    try:
        conn = await asyncio.wait_for(create_conn(host, port, client_id=f"{settings.app_id}-probe",
                                                  request_timeout_ms=remaining_ms(), **options), remaining_ms() / 1000)
        conn.close()
    except kafka_errors.SaslAuthenticationFailed as exc:
        raise KafkaSecurityError(f"the broker refused user {settings.kafka_sasl_username!r} ({settings.kafka_sasl_mechanism}): "
                                 f"{exc}; check {_env('kafka_sasl_username')} and {_env('kafka_sasl_password_file')} / "
                                 f"{_env('kafka_sasl_password')}") from exc
    except (kafka_errors.UnsupportedSaslMechanismError, kafka_errors.IllegalSaslStateError) as exc:
        raise KafkaSecurityError(f"the broker does not accept {_env('kafka_sasl_mechanism')}={settings.kafka_sasl_mechanism}: "
                                 f"{exc}") from exc
    except (TimeoutError, kafka_errors.KafkaError, OSError) as exc:
        raise KafkaSecurityError(f"could not open a {settings.kafka_security_protocol} connection to {host}:{port} within "
                                 f"{_env('kafka_connect_timeout_s')}={settings.kafka_connect_timeout_s:g} "
                                 f"({type(exc).__name__}: {exc}); check {protocol}{_client_cert_hint(settings)}") from exc
    client = AIOKafkaClient(bootstrap_servers=settings.broker_servers, client_id=f"{settings.app_id}-probe",
                            request_timeout_ms=remaining_ms(), **options)
    try:
        await asyncio.wait_for(client.bootstrap(), remaining_ms() / 1000)
    except (TimeoutError, kafka_errors.KafkaError, OSError) as exc:
        hint = "" if uses_sasl(settings) else f" (the listener may require SASL: {_env('kafka_security_protocol')}=SASL_SSL)"
        raise KafkaSecurityError(f"the broker at {settings.broker_servers} closed the connection before answering metadata "
                                 f"with {protocol}{hint}: {type(exc).__name__}: {exc}") from exc
    finally:
        await client.close()


async def check_connection_async(settings: Settings, wait_for_broker: bool = True) -> None:
    """Connect and authenticate once, within ``kafka_connect_timeout_s``; raise :class:`KafkaSecurityError`.

    ``wait_for_broker``: a refused TCP connection is retried until the timeout (a broker
    still starting); without it, :class:`KafkaUnreachableError` comes at once.
    """
    check_settings(settings)
    deadline = time.monotonic() + settings.kafka_connect_timeout_s
    await asyncio.get_running_loop().run_in_executor(None, _probe_transport, settings, deadline, wait_for_broker)
    await _probe_login(settings, deadline)


def check_connection(settings: Settings, wait_for_broker: bool = True) -> None:
    """:func:`check_connection_async` from synchronous code (no event loop running in this thread)."""
    asyncio.run(check_connection_async(settings, wait_for_broker))


def require_kafka(settings: Settings) -> None:
    """:func:`check_connection` for a process entry point: exit 1 with the cause instead of a traceback."""
    try:
        check_connection(settings)
    except KafkaSecurityError as exc:
        raise SystemExit(f"Kafka connection failed: {exc}") from exc
