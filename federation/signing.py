"""Ed25519 signatures over a prior's manifest bytes.

What is signed: the exact bytes of ``manifest.json`` as the registry stores and serves
them. The manifest pins the weights' sha256, so a valid signature over the manifest
plus a matching weights digest authenticates the whole artifact. Keys are raw 32-byte
Ed25519 keys, written as base64 text.

>>> private = generate_private_key()
>>> public = public_key_b64(private)
>>> signature = sign(private, b'{"family": "rul-mlp"}')
>>> verify(public, b'{"family": "rul-mlp"}', signature)
>>> verify(public, b'{"family": "rul-mlp2"}', signature)
Traceback (most recent call last):
...
twinstream.federation.signing.SignatureError: Ed25519 signature does not verify with the configured public key
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALGORITHM = "ed25519"


class SignatureError(ValueError):
    """A signature is malformed or does not verify."""


def generate_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_key_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())


def public_key_b64(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def load_or_create_private_key(path: Path) -> Ed25519PrivateKey:
    """The signing key in ``path`` (base64 of the raw 32 bytes); created with mode 0600 if absent."""
    path = Path(path)
    if path.is_file():
        try:
            return Ed25519PrivateKey.from_private_bytes(base64.b64decode(path.read_text().strip(), validate=True))
        except (binascii.Error, ValueError) as exc:
            raise SignatureError(f"signing key {path} is not a base64 raw Ed25519 private key: {exc}") from None
    key = generate_private_key()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(base64.b64encode(private_key_bytes(key)).decode() + "\n")
    return key


def sign(key: Ed25519PrivateKey, data: bytes) -> str:
    """Base64 Ed25519 signature of ``data``."""
    return base64.b64encode(key.sign(data)).decode()


def verify(public_key: str, data: bytes, signature: str) -> None:
    """Raise :class:`SignatureError` unless ``signature`` (base64) signs ``data`` under ``public_key`` (base64)."""
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key, validate=True))
    except (binascii.Error, ValueError) as exc:
        raise SignatureError(f"public key is not a base64 raw Ed25519 key: {exc}") from None
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError(f"signature is not base64: {exc}") from None
    try:
        key.verify(raw, data)
    except InvalidSignature:
        raise SignatureError("Ed25519 signature does not verify with the configured public key") from None
