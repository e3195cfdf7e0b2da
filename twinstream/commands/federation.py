"""``twinstream federation``: the signed prior registry.

* ``serve`` runs the registry (FastAPI + uvicorn);
* ``public-key`` prints its Ed25519 public key (what workers set as
  ``TWINSTREAM_PRIOR_REGISTRY_PUBLIC_KEY``);
* ``publish DIR`` uploads a prior artifact (``manifest.json`` + weights) with the token.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

app = typer.Typer(help="Federation: the signed prior registry.", no_args_is_help=True)
console = Console(stderr=True)


def _settings(**overrides: object):  # -> RegistrySettings
    from pydantic import ValidationError

    from twinstream.federation.config import RegistrySettings

    try:
        return RegistrySettings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        console.print(f"[red]invalid configuration:[/red]\n{exc}")
        raise typer.Exit(2) from None


@app.command("serve")
def serve(
    dir: Annotated[Optional[Path], typer.Option("--dir", help="Storage directory (env TWINSTREAM_REGISTRY_DIR).")] = None,
    host: Annotated[Optional[str], typer.Option(help="Listen address (env TWINSTREAM_REGISTRY_HOST).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Listen port (env TWINSTREAM_REGISTRY_PORT).")] = None,
) -> None:
    """Run the prior registry. The publish token comes from TWINSTREAM_REGISTRY_PUBLISH_TOKEN only (not a flag)."""
    import uvicorn

    from twinstream.federation.registry import create_registry_app
    from twinstream.federation.signing import load_or_create_private_key
    from twinstream.federation.store import PriorStore

    settings = _settings(dir=dir, host=host, port=port)
    key = load_or_create_private_key(settings.signing_key_path)
    store = PriorStore(settings.dir, key)
    token = settings.publish_token.get_secret_value()
    if not token:
        console.print("[yellow]no TWINSTREAM_REGISTRY_PUBLISH_TOKEN: publishing is refused (401)[/yellow]")
    console.print(f"prior registry on http://{settings.host}:{settings.port} storing in {settings.dir}; "
                  f"public key {store.public_key}")
    uvicorn.run(create_registry_app(store, token, settings.max_upload_bytes), host=settings.host, port=settings.port,
                log_level="info")


@app.command("public-key")
def public_key(
    dir: Annotated[Optional[Path], typer.Option("--dir", help="Storage directory (env TWINSTREAM_REGISTRY_DIR).")] = None,
) -> None:
    """Print the registry's public key (creates the signing key if absent)."""
    from twinstream.federation.signing import load_or_create_private_key, public_key_b64

    settings = _settings(dir=dir)
    print(public_key_b64(load_or_create_private_key(settings.signing_key_path)))


@app.command("publish")
def publish(
    artifact: Annotated[Path, typer.Argument(help="Prior artifact directory (manifest.json + weights file).")],
    url: Annotated[str, typer.Option("--url", help="Registry base URL.")] = "http://127.0.0.1:8780",
    version: Annotated[Optional[str], typer.Option("--version", help="Publish under this version (rewrites the manifest's).")] = None,
    token_env: Annotated[str, typer.Option(help="Environment variable holding the bearer token.")] = "TWINSTREAM_REGISTRY_PUBLISH_TOKEN",
) -> None:
    """Publish a prior artifact to a registry (PUT /v1/priors/{family}/{version})."""
    import os

    import httpx

    from twinstream.schemas.prior import MANIFEST_FILE, PriorManifest

    manifest = PriorManifest.model_validate_json((artifact / MANIFEST_FILE).read_bytes())
    if version is not None:
        manifest = manifest.model_copy(update={"version": version})
    weights = (artifact / manifest.weights_file).read_bytes()
    body = {"manifest": manifest.model_dump(mode="json"), "weights_base64": base64.b64encode(weights).decode()}
    response = httpx.put(f"{url.rstrip('/')}/v1/priors/{manifest.family}/{manifest.version}", json=body,
                         headers={"Authorization": f"Bearer {os.environ.get(token_env, '')}"}, timeout=60)
    if response.status_code != 201:
        console.print(f"[red]publish failed:[/red] HTTP {response.status_code} {response.text}")
        raise typer.Exit(1)
    console.print(f"[green]published[/green] {response.json()['prior_version']}")
