"""The embedded broker's secured listener: TLS termination and SASL/SCRAM in front of Tansu.

Why a guard in front of Tansu instead of Tansu's own flags (measured on the bundled
Tansu 0.6.0): it declares ``--cert`` and ``--key`` in one exclusive argument group, so
it refuses to start with both and never serves TLS; its ``--authentication`` offers only
SCRAM, but its object-store engine (the only one compiled in: memory:// and s3://)
stores no SCRAM credentials (``upsert`` is a no-op, lookup returns none), so no user can
ever log in. The guard listens on the public port, terminates TLS with the given
certificate (optionally demanding a client certificate), runs the SASL handshake and the
SCRAM-SHA-256/512 exchange itself against the users it was given, refuses every other
request before a successful login, and then forwards frames to Tansu on a private
loopback port. Clients see an ordinary Kafka listener with ``SASL_SSL``.

Run as a child process (``python -m twinstream.broker_guard``); users come from the
``TWINSTREAM_GUARD_USERS`` environment variable (JSON ``{"name": "password"}``), never
from the command line, so ``ps`` does not show them.

>>> sasl_mechanism_of(bytes.fromhex("0011 0001 00000007 0003 616263 000d 534352414d2d5348412d353132".replace(" ", "")))
'SCRAM-SHA-512'
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
import ssl
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

log = logging.getLogger("twinstream.broker_guard")

API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
UNSUPPORTED_SASL_MECHANISM, ILLEGAL_SASL_STATE, SASL_AUTHENTICATION_FAILED = 33, 34, 58
SCRAM_HASHES = {"SCRAM-SHA-256": hashlib.sha256, "SCRAM-SHA-512": hashlib.sha512}
SCRAM_ITERATIONS = 4096
MAX_FRAME = 100 * 1024 * 1024
USERS_ENV = "TWINSTREAM_GUARD_USERS"


def sasl_mechanism_of(request: bytes) -> str | None:
    """The mechanism a SaslHandshakeRequest (without its size prefix) asks for, else None."""
    if len(request) < 10:
        return None
    api_key, _version, _correlation, client_id_len = struct.unpack(">hhih", request[:10])
    if api_key != SASL_HANDSHAKE:
        return None
    at = 10 + max(client_id_len, 0)
    (length,) = struct.unpack(">h", request[at:at + 2])
    return request[at + 2:at + 2 + length].decode("utf-8", "replace")


# --- SCRAM (RFC 5802 / 7677), server side -----------------------------------------------------

@dataclass(frozen=True)
class ScramCredential:
    salt: bytes
    stored_key: bytes
    server_key: bytes


def scram_credential(password: str, mechanism: str, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS) -> ScramCredential:
    digest = SCRAM_HASHES[mechanism]
    salt = salt or secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac(digest().name, password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", digest).digest()
    return ScramCredential(salt, digest(client_key).digest(), hmac.new(salted, b"Server Key", digest).digest())


def _attributes(message: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in message.split(",") if "=" in part)


class ScramServer:
    """One SCRAM exchange: ``first()`` then ``final()``; ``user`` is set once it succeeded."""

    def __init__(self, mechanism: str, credentials: Mapping[str, ScramCredential]) -> None:
        self.mechanism = mechanism
        self.credentials = credentials
        self.user: str | None = None
        self._state: tuple[str, str, str, ScramCredential | None] | None = None

    def first(self, client_first: bytes) -> bytes:
        text = client_first.decode()
        if not text.startswith(("n,", "y,")):
            raise ValueError("channel binding is not supported")
        bare = text.split(",", 2)[2]
        attrs = _attributes(bare)
        name = attrs["n"].replace("=2C", ",").replace("=3D", "=")
        nonce = attrs["r"] + base64.b64encode(secrets.token_bytes(18)).decode()
        credential = self.credentials.get(name)
        # An unknown user gets a plausible salt and fails at the proof, like a wrong password.
        salt = credential.salt if credential else hashlib.sha256(name.encode() + b"twinstream").digest()[:16]
        server_first = f"r={nonce},s={base64.b64encode(salt).decode()},i={SCRAM_ITERATIONS}"
        self._state = (name, bare, server_first, credential)
        return server_first.encode()

    def final(self, client_final: bytes) -> bytes | None:
        """The server-final message, or None if the proof is wrong."""
        if self._state is None:
            raise ValueError("client-final before client-first")
        name, bare, server_first, credential = self._state
        text = client_final.decode()
        without_proof, _, proof = text.rpartition(",p=")
        if _attributes(without_proof).get("r") != _attributes(server_first)["r"] or credential is None:
            return None
        digest = SCRAM_HASHES[self.mechanism]
        auth_message = f"{bare},{server_first},{without_proof}".encode()
        signature = hmac.new(credential.stored_key, auth_message, digest).digest()
        client_key = bytes(a ^ b for a, b in zip(base64.b64decode(proof), signature))
        if not hmac.compare_digest(digest(client_key).digest(), credential.stored_key):
            return None
        self.user = name
        return b"v=" + base64.b64encode(hmac.new(credential.server_key, auth_message, digest).digest())


# --- Kafka framing of the three requests the guard answers itself ------------------------------

def _uvarint(data: bytes, at: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7


def _put_uvarint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


@dataclass(frozen=True)
class Request:
    api_key: int
    version: int
    correlation_id: int
    body_at: int  # offset of the body after the header


def parse_header(frame: bytes) -> Request:
    api_key, version, correlation, client_id_len = struct.unpack(">hhih", frame[:10])
    at = 10 + max(client_id_len, 0)
    if api_key == SASL_AUTHENTICATE and version >= 2:  # flexible: header v2 has tagged fields
        count, at = _uvarint(frame, at)
        for _ in range(count):
            _tag, at = _uvarint(frame, at)
            size, at = _uvarint(frame, at)
            at += size
    return Request(api_key, version, correlation, at)


def auth_bytes_of(frame: bytes, request: Request) -> bytes:
    at = request.body_at
    if request.version >= 2:
        length, at = _uvarint(frame, at)
        return frame[at:at + length - 1]
    (length,) = struct.unpack(">i", frame[at:at + 4])
    return frame[at + 4:at + 4 + length]


def handshake_response(request: Request, error: int, mechanisms: Sequence[str]) -> bytes:
    body = struct.pack(">ih", request.correlation_id, error) + struct.pack(">i", len(mechanisms))
    for mechanism in mechanisms:
        body += struct.pack(">h", len(mechanism)) + mechanism.encode()
    return struct.pack(">i", len(body)) + body


def authenticate_response(request: Request, error: int, message: str | None, auth: bytes) -> bytes:
    if request.version >= 2:
        text = b"\x00" if message is None else _put_uvarint(len(message.encode()) + 1) + message.encode()
        body = (struct.pack(">i", request.correlation_id) + b"\x00" + struct.pack(">h", error) + text
                + _put_uvarint(len(auth) + 1) + auth + struct.pack(">q", 0) + b"\x00")
    else:
        text = struct.pack(">h", -1) if message is None else struct.pack(">h", len(message.encode())) + message.encode()
        body = struct.pack(">ih", request.correlation_id, error) + text + struct.pack(">i", len(auth)) + auth
        if request.version >= 1:
            body += struct.pack(">q", 0)
    return struct.pack(">i", len(body)) + body


# --- the proxy -----------------------------------------------------------------------------------

class Refused(Exception):
    """Close this client's connection (the reason is logged, never a password)."""


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readexactly(4)
    (size,) = struct.unpack(">i", head)
    if size < 0 or size > MAX_FRAME:
        raise Refused(f"frame size {size} is not Kafka")
    return head + await reader.readexactly(size)


class Connection:
    """One client connection: SASL first (if users are configured), then frames to the broker."""

    def __init__(self, credentials: Mapping[str, Mapping[str, ScramCredential]] | None, peer: str) -> None:
        self.credentials = credentials
        self.peer = peer
        self.authenticated = credentials is None
        self.scram: ScramServer | None = None

    def answer(self, frame: bytes) -> tuple[bytes | None, bool]:
        """Before login: (reply to the client or None to forward, whether to close after the reply)."""
        request = parse_header(frame[4:])
        if request.api_key == API_VERSIONS:
            return None, False
        if request.api_key == SASL_HANDSHAKE:
            mechanism = sasl_mechanism_of(frame[4:])
            offered = sorted(SCRAM_HASHES)
            if request.version < 1 or mechanism not in SCRAM_HASHES:
                log.warning("%s: SASL mechanism %s (handshake v%d) refused", self.peer, mechanism, request.version)
                return handshake_response(request, UNSUPPORTED_SASL_MECHANISM, offered), True
            assert self.credentials is not None
            self.scram = ScramServer(mechanism, self.credentials[mechanism])
            return handshake_response(request, 0, offered), False
        if request.api_key == SASL_AUTHENTICATE and self.scram is not None:
            token = auth_bytes_of(frame[4:], request)
            try:
                if self.scram._state is None:
                    return authenticate_response(request, 0, None, self.scram.first(token)), False
                final = self.scram.final(token)
            except (ValueError, KeyError, UnicodeDecodeError) as exc:
                log.warning("%s: malformed SCRAM message (%s)", self.peer, exc)
                return authenticate_response(request, ILLEGAL_SASL_STATE, "malformed SCRAM message", b""), True
            if final is None:
                log.warning("%s: authentication failed for user %r (%s)", self.peer, self.scram._state[0] if self.scram._state else "?",
                            self.scram.mechanism)
                return authenticate_response(request, SASL_AUTHENTICATION_FAILED,
                                             "Authentication failed: invalid username or password", b""), True
            self.authenticated = True
            log.info("%s: user %r authenticated (%s)", self.peer, self.scram.user, self.scram.mechanism)
            return authenticate_response(request, 0, None, final), False
        raise Refused(f"request api_key={request.api_key} before SASL authentication")


async def _serve_one(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter, upstream: tuple[str, int],
                     credentials: Mapping[str, Mapping[str, ScramCredential]] | None) -> None:
    peer = str(client_w.get_extra_info("peername"))
    connection = Connection(credentials, peer)
    try:
        broker_r, broker_w = await asyncio.open_connection(*upstream)
    except OSError as exc:
        log.error("broker at %s:%d unreachable: %s", *upstream, exc)
        client_w.close()
        return

    async def requests() -> None:
        while True:
            frame = await _read_frame(client_r)
            if not connection.authenticated:
                reply, close = connection.answer(frame)
                if reply is not None:
                    client_w.write(reply)
                    await client_w.drain()
                    if close:
                        return
                    continue
            broker_w.write(frame)
            await broker_w.drain()

    async def responses() -> None:
        while True:
            client_w.write(await _read_frame(broker_r))  # whole frames: never interleaved with the guard's replies
            await client_w.drain()

    tasks = [asyncio.ensure_future(requests()), asyncio.ensure_future(responses())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if isinstance(task.exception(), Refused):
                log.warning("closing %s: %s", peer, task.exception())
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for writer in (client_w, broker_w):
            writer.close()


def server_ssl_context(cert: str, key: str, client_ca: str | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    if client_ca:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(client_ca)
    return context


def credentials_for(users: Mapping[str, str]) -> dict[str, dict[str, ScramCredential]]:
    """Per mechanism, per user: the salted keys (the guard keeps no password)."""
    return {mechanism: {name: scram_credential(password, mechanism) for name, password in users.items()}
            for mechanism in SCRAM_HASHES}


async def serve(listen: tuple[str, int], upstream: tuple[str, int], context: ssl.SSLContext | None,
                users: Mapping[str, str] | None) -> None:
    credentials = credentials_for(users) if users else None

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            await _serve_one(r, w, upstream, credentials)
        except (ssl.SSLError, ConnectionError, asyncio.IncompleteReadError) as exc:  # e.g. a client without TLS
            log.info("connection from %s ended: %s", w.get_extra_info("peername"), exc)

    server = await asyncio.start_server(handle, *listen, ssl=context, ssl_handshake_timeout=10.0 if context else None)
    async with server:
        await server.serve_forever()


def _address(text: str) -> tuple[str, int]:
    host, port = text.rsplit(":", 1)
    return host, int(port)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="TLS and SASL/SCRAM listener in front of the embedded broker.")
    parser.add_argument("--listen", required=True, type=_address)
    parser.add_argument("--upstream", required=True, type=_address)
    parser.add_argument("--cert", help="server certificate (PEM); with --key: TLS")
    parser.add_argument("--key", help="server private key (PEM)")
    parser.add_argument("--client-ca", help="demand a client certificate signed by this CA (mutual TLS)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # one line per failed handshake from handle() is enough
    users = json.loads(os.environ.pop(USERS_ENV, "") or "{}") or None
    context = server_ssl_context(args.cert, args.key, args.client_ca) if args.cert and args.key else None
    asyncio.run(serve(args.listen, args.upstream, context, users))


if __name__ == "__main__":  # pragma: no cover
    main()
