"""Configuration of the registry server process (``twinstream federation serve``).

Separate from :class:`twinstream.settings.Settings` on purpose: the registry is its own
process, and its publish token is a secret that must not land in the worker's
ConfigMap (the Helm chart renders every ``Settings`` field into one). Environment
prefix ``TWINSTREAM_REGISTRY_``; CLI flags override.

>>> RegistrySettings(dir="/srv/priors").signing_key_path.as_posix()
'/srv/priors/.signing-key'
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class RegistrySettings(BaseSettings):
    """Registry server settings (env prefix ``TWINSTREAM_REGISTRY_``)."""

    model_config = SettingsConfigDict(env_prefix="TWINSTREAM_REGISTRY_", frozen=True, extra="forbid")

    dir: Path = Field(default=Path(".twinstream-registry"), description="Storage directory of published priors (kept across restarts).")
    signing_key: Path | None = Field(
        default=None, description="Ed25519 private key file (base64 raw); created on first start if absent. Default: <dir>/.signing-key."
    )
    publish_token: SecretStr = Field(
        default=SecretStr(""), description="Bearer token required to publish. Empty: publishing is refused (401) for everyone."
    )
    host: str = Field(default="127.0.0.1", description="Listen address.")
    port: int = Field(default=8780, ge=0, le=65535, description="Listen port.")
    max_upload_bytes: int = Field(default=64 * 1024 * 1024, ge=1024, description="Largest weights file accepted.")

    @property
    def signing_key_path(self) -> Path:
        return self.signing_key if self.signing_key is not None else self.dir / ".signing-key"
