"""``twinstream federation public-key`` and ``publish`` against a registry served by uvicorn in a thread."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from federation_support import variant, write_artifact
from typer.testing import CliRunner

from twinstream.cli import app
from twinstream.federation.registry import create_registry_app
from twinstream.federation.signing import load_or_create_private_key, public_key_b64, verify
from twinstream.federation.store import PriorStore


def test_public_key_prints_the_stored_key(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["federation", "public-key", "--dir", str(tmp_path / "reg")])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == public_key_b64(load_or_create_private_key(tmp_path / "reg" / ".signing-key"))


def test_publish_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = load_or_create_private_key(tmp_path / "reg" / ".signing-key")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_registry_app(PriorStore(tmp_path / "reg", key), "tok"),
                                           host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while not server.started:
            assert time.monotonic() < deadline, "registry did not start"
            time.sleep(0.05)
        artifact = write_artifact(tmp_path / "artifact", *variant("7", shift=1.0))
        url = f"http://127.0.0.1:{port}"
        args = ["federation", "publish", str(artifact), "--url", url]
        monkeypatch.setenv("TWINSTREAM_REGISTRY_PUBLISH_TOKEN", "wrong")
        assert CliRunner().invoke(app, args).exit_code == 1  # 401
        monkeypatch.setenv("TWINSTREAM_REGISTRY_PUBLISH_TOKEN", "tok")
        assert CliRunner().invoke(app, args).exit_code == 0
        assert CliRunner().invoke(app, args).exit_code == 1  # 409: versions are immutable
        assert CliRunner().invoke(app, [*args, "--version", "8"]).exit_code == 0
        manifest = httpx.get(f"{url}/v1/priors/rul-mlp/latest").content
        signature = httpx.get(f"{url}/v1/priors/rul-mlp/8/signature").json()["signature"]
        verify(public_key_b64(key), manifest, signature)
        assert httpx.get(f"{url}/v1/priors/rul-mlp").json()["versions"] == ["7", "8"]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
