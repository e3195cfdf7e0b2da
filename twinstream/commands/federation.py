"""``twinstream federation``: the signed prior registry and federated rounds (Flower).

* ``serve`` runs the registry (FastAPI + uvicorn), with ``--superlink`` also the Flower
  SuperLink whose ServerApp publishes every aggregated prior to this registry;
* ``site --data DIR`` (or ``--csv FILE --entity-column E --time-column T``) runs a Flower
  SuperNode for one site's local data;
* ``round`` submits a federated run (``flwr run``) and streams its log; with ``--spec
  twins.yaml --kind K`` the run trains kind K's prior over its generic features (sites
  started with ``--csv ... --spec`` declaring the same kind) and publishes it as the
  kind's registry family;
* ``public-key`` prints the registry's Ed25519 public key (what workers set as
  ``TWINSTREAM_PRIOR_REGISTRY_PUBLIC_KEY``);
* ``publish DIR`` uploads a prior artifact (``manifest.json`` + weights) with the token.

TLS is the default for every Flower connection; ``--insecure`` (plain text, no
authentication of the SuperLink) is an explicit flag for tests and development.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(help="Federation: the signed prior registry and federated rounds.", no_args_is_help=True)
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
    dir: Annotated[Path | None, typer.Option("--dir", help="Storage directory (env TWINSTREAM_REGISTRY_DIR).")] = None,
    host: Annotated[str | None, typer.Option(help="Listen address (env TWINSTREAM_REGISTRY_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (env TWINSTREAM_REGISTRY_PORT).")] = None,
    superlink: Annotated[bool, typer.Option("--superlink/--no-superlink",
                                            help="Also run the Flower SuperLink (its ServerApp publishes here).")] = False,
    superlink_host: Annotated[str, typer.Option(help="SuperLink listen address (Fleet + Control API).")] = "127.0.0.1",
    superlink_port: Annotated[int, typer.Option(help="SuperLink port (Fleet + Control API).")] = 9093,
    superlink_dir: Annotated[Path | None, typer.Option(help="SuperLink state (database, log); default <dir>/superlink.")] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="SuperLink without TLS (tests/dev only).")] = False,
    ssl_certfile: Annotated[Path | None, typer.Option(help="SuperLink TLS certificate (PEM).")] = None,
    ssl_keyfile: Annotated[Path | None, typer.Option(help="SuperLink TLS private key (PEM).")] = None,
    ssl_ca_certfile: Annotated[Path | None, typer.Option(help="CA certificate of the SuperLink's certificate (PEM).")] = None,
    enable_supernode_auth: Annotated[bool, typer.Option(
        "--enable-supernode-auth", help="Only SuperNodes whose public keys are registered may connect.")] = False,
) -> None:
    """Run the prior registry (and with --superlink the Flower SuperLink).

    The publish token comes from TWINSTREAM_REGISTRY_PUBLISH_TOKEN only.
    """
    import uvicorn

    from twinstream.federation.registry import create_registry_app
    from twinstream.federation.signing import load_or_create_private_key
    from twinstream.federation.store import PriorStore

    settings = _settings(dir=dir, host=host, port=port)
    if superlink:
        _require_tls(insecure, {"--ssl-certfile": ssl_certfile, "--ssl-keyfile": ssl_keyfile, "--ssl-ca-certfile": ssl_ca_certfile})
    key = load_or_create_private_key(settings.signing_key_path)
    store = PriorStore(settings.dir, key)
    token = settings.publish_token.get_secret_value()
    if not token:
        console.print("[yellow]no TWINSTREAM_REGISTRY_PUBLISH_TOKEN: publishing is refused (401)[/yellow]")
    console.print(f"prior registry on http://{settings.host}:{settings.port} storing in {settings.dir}; "
                  f"public key {store.public_key}")
    link = None
    if superlink:
        link = _start_superlink(settings, superlink_host, superlink_port, superlink_dir, insecure, ssl_certfile, ssl_keyfile,
                                ssl_ca_certfile, enable_supernode_auth)

        def _interrupt(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        # uvicorn handles SIGTERM itself, then re-raises it: without this handler the
        # default action would end the process before the SuperLink is stopped.
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        uvicorn.run(create_registry_app(store, token, settings.max_upload_bytes), host=settings.host, port=settings.port,
                    log_level="info")
    except KeyboardInterrupt:
        pass
    finally:
        if link is not None:
            console.print("stopping the SuperLink")
            link.stop()


def _require_tls(insecure: bool, needed: dict[str, Path | None]) -> None:
    missing = [name for name, path in needed.items() if path is None]
    if not insecure and missing:
        console.print(f"[red]TLS needs {', '.join(missing)}[/red] (or pass --insecure for tests/development)")
        raise typer.Exit(2)


def _start_superlink(settings, host: str, port: int, state: Path | None, insecure: bool, certfile: Path | None,  # noqa: ANN001
                     keyfile: Path | None, ca_certfile: Path | None, supernode_auth: bool):  # -> ManagedProcess
    from twinstream.federation.runtime import ManagedProcess, superlink_command

    _require_tls(insecure, {"--ssl-certfile": certfile, "--ssl-keyfile": keyfile, "--ssl-ca-certfile": ca_certfile})
    state = state or settings.dir / "superlink"
    state.mkdir(parents=True, exist_ok=True)
    registry_host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    command = superlink_command(host, port, state / "superlink.db", insecure=insecure, ssl_certfile=certfile,
                                ssl_keyfile=keyfile, ssl_ca_certfile=ca_certfile, enable_supernode_auth=supernode_auth)
    link = ManagedProcess(command, state / "superlink.log",
                          env={"TWINSTREAM_REGISTRY_URL": f"http://{registry_host}:{settings.port}"}).start()
    console.print(f"SuperLink on {host}:{port} ({'INSECURE' if insecure else 'TLS'}), log {state / 'superlink.log'}")
    return link


@app.command("site")
def site(
    data: Annotated[Path | None, typer.Option(
        "--data", help="This site's C-MAPSS folder (train_<subset>.txt); stays on this machine.")] = None,
    superlink: Annotated[str, typer.Option("--superlink", help="SuperLink address host:port.")] = "127.0.0.1:9093",
    insecure: Annotated[bool, typer.Option("--insecure", help="No TLS to the SuperLink (tests/dev only).")] = False,
    root_certificates: Annotated[Path | None, typer.Option(help="CA certificate (PEM) that signed the SuperLink's certificate.")] = None,
    auth_private_key: Annotated[Path | None, typer.Option(help="This SuperNode's private key (SuperNode authentication).")] = None,
    subset: Annotated[str, typer.Option(help="C-MAPSS subset of the files in --data.")] = "FD001",
    bundled_site: Annotated[str | None, typer.Option(
        help="Demo without --data: this block (site-1..site-4) of the bundled FD001 lifetime split.")] = None,
    max_engines: Annotated[int, typer.Option(help="Use only the first N engines (0 = all; smoke runs).")] = 0,
    runtime_port: Annotated[int, typer.Option(help="Local port of the SuperNode's runtime API (0 = a free port).")] = 0,
    csv: Annotated[Path | None, typer.Option(
        "--csv", help="This site's own history table (CSV, or Parquet by suffix); stays on this machine.")] = None,
    entity_column: Annotated[str | None, typer.Option("--entity-column", help="With --csv: the entity of a row.")] = None,
    time_column: Annotated[str | None, typer.Option("--time-column", help="With --csv: orders an entity's rows.")] = None,
    label_column: Annotated[str | None, typer.Option(
        "--label-column", help="With --csv: the RUL label (default: the kind's label target).")] = None,
    rul_from_end: Annotated[bool, typer.Option(
        "--rul-from-end", help="With --csv: label = samples left until the entity's last row (run-to-failure).")] = False,
    spec: Annotated[Path | None, typer.Option("--spec", help="With --csv: twins.yaml declaring the site's kind.")] = None,
    kind: Annotated[str | None, typer.Option("--kind", help="With --spec: the kind (default: the spec's only kind).")] = None,
) -> None:
    """Run a Flower SuperNode for one site: it trains on its data locally and sends back only model updates and aggregate metrics."""
    from twinstream.broker import free_port as _free_port
    from twinstream.federation.runtime import ManagedProcess, supernode_command

    if sum(v is not None for v in (data, bundled_site, csv)) != 1:
        console.print("[red]give exactly one of --data DIR, --csv FILE or --bundled-site site-k[/red]")
        raise typer.Exit(2)
    if data is not None and not (data / f"train_{subset}.txt").is_file():
        console.print(f"[red]{data} has no train_{subset}.txt[/red]")
        raise typer.Exit(2)
    history: dict[str, str | int | bool] = {}
    if csv is not None:
        history = _history_config(csv, entity_column, time_column, label_column, rul_from_end, spec, kind, max_engines)
    _require_tls(insecure, {"--root-certificates": root_certificates})
    node_config: dict[str, str | int | bool] = {"data-dir": str(data.resolve()) if data else "", "site": bundled_site or "",
                                                "subset": subset, "max-engines": max_engines, **history}
    command = supernode_command(superlink, "127.0.0.1", runtime_port or _free_port(), node_config, insecure=insecure,
                                root_certificates=root_certificates, auth_private_key=auth_private_key)
    console.print(f"site SuperNode -> {superlink} ({'INSECURE' if insecure else 'TLS'}), data {data or csv or bundled_site}")
    node = ManagedProcess(command, None).start()
    raise typer.Exit(node.wait())


def _history_config(csv: Path, entity_column: str | None, time_column: str | None, label_column: str | None,
                    rul_from_end: bool, spec: Path | None, kind: str | None, max_engines: int) -> dict[str, str | int | bool]:
    """Node config of a site given by its own table; loaded once here, so a bad file stops the site before it connects."""
    from twinstream.federation.site_history import SiteHistoryError, load_history_site
    from twinstream.schemas.twin_spec import SpecError

    if entity_column is None or time_column is None:
        console.print("[red]--csv needs --entity-column and --time-column[/red]")
        raise typer.Exit(2)
    try:
        if spec is not None and not _declares_rul_sensors(spec, kind):  # a declared kind's round: its generic features
            from twinstream.federation.site_history import load_kind_site

            data = load_kind_site(csv, entity_column, time_column, spec, kind, label_column, rul_from_end,
                                  max_engines=max_engines or None)
        else:
            data = load_history_site(csv, entity_column, time_column, label_column, rul_from_end, spec, kind,
                                     max_engines=max_engines or None)
    except (SiteHistoryError, SpecError, ValueError, OSError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    console.print(f"{csv}: {len(data.engines)} entities, {data.n} labelled rows")
    return {"csv": str(csv.resolve()), "entity-column": entity_column, "time-column": time_column,
            "label-column": label_column or "", "rul-from-end": rul_from_end,
            "spec": str(spec.resolve()) if spec else "", "kind": kind or ""}


def _declares_rul_sensors(spec: Path, kind: str | None) -> bool:
    """Whether the site's kind can also feed a C-MAPSS ``rul-mlp`` round (it declares every sensor that prior reads)."""
    from twinstream.federation.site_history import site_kind
    from twinstream.models.features import RUL_SENSORS

    chosen = site_kind(spec, kind, rul_sensors=False)
    return all(s in chosen.metric_names for s in RUL_SENSORS)


def _kind_overrides(spec: Path, kind: str | None, cap: float | None) -> dict[str, object]:
    """Run-config keys of a round for a declared kind: the kind as JSON, its label cap."""
    from twinstream.commands.history_options import pick_kind
    from twinstream.models.federated import kind_layout

    chosen = pick_kind(console, spec, kind)
    try:
        kind_layout(chosen)
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    from twinstream.federation.server_config import kind_family

    return {"kind-spec": chosen.model_dump_json(), "family": kind_family(chosen), **({"target-cap": cap} if cap is not None else {})}


def _parse_sets(items: list[str]) -> dict[str, object]:
    """``KEY=VALUE`` pairs; VALUE as a TOML scalar (``3``, ``0.5``, ``true``, ``"x"``), else as a plain string."""
    import tomllib

    out: dict[str, object] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        out[key.strip()] = value
    return out


@app.command("round")
def round_(
    rounds: Annotated[int | None, typer.Option("--rounds", min=1, help="Federated rounds (default: the evaluated recipe's).")] = None,
    strategy: Annotated[str, typer.Option(
        help="fedavgm (the evaluated recipe) | fedavg | fedprox | fedadam | fedmedian | krum.")] = "fedavgm",
    server_momentum: Annotated[float | None, typer.Option(help="FedAvgM server momentum (default 0.9).")] = None,
    proximal_mu: Annotated[float | None, typer.Option(help="FedProx proximal weight.")] = None,
    server_lr: Annotated[float | None, typer.Option(help="FedAdam server learning rate.")] = None,
    num_malicious: Annotated[int | None, typer.Option(help="Krum: sites assumed Byzantine.")] = None,
    dp_clip_norm: Annotated[float | None, typer.Option(help="Server-side DP: L2 clip norm of each site's update.")] = None,
    dp_noise_multiplier: Annotated[float | None, typer.Option(help="Server-side DP: noise multiplier.")] = None,
    min_sites: Annotated[int | None, typer.Option(help="Wait for this many sites (default: 1; all connected take part).")] = None,
    local_epochs: Annotated[int | None, typer.Option(help="Local epochs per round at each site (default: the evaluated recipe's).")] = None,
    lr: Annotated[float | None, typer.Option(
        help="Local learning rate, cosine-decayed over rounds (default: the evaluated recipe's).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of fresh weights and local shuffling.")] = None,
    start_from: Annotated[str | None, typer.Option(help="latest (the registry's latest federated prior) | init.")] = None,
    registry_url: Annotated[str | None, typer.Option(
        help="Registry the ServerApp publishes to (default: the SuperLink's TWINSTREAM_REGISTRY_URL).")] = None,
    publish: Annotated[bool, typer.Option("--publish/--no-publish", help="Publish the aggregated prior.")] = True,
    version: Annotated[str | None, typer.Option(help="Version to publish (default: next integer).")] = None,
    superlink: Annotated[str, typer.Option("--superlink", help="SuperLink address host:port.")] = "127.0.0.1:9093",
    insecure: Annotated[bool, typer.Option("--insecure", help="No TLS to the SuperLink (tests/dev only).")] = False,
    root_certificates: Annotated[Path | None, typer.Option(help="CA certificate (PEM) of the SuperLink's certificate.")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Any run-config key, e.g. local.optimizer=adamw or out-dir=/srv/out (repeatable).")] = None,
    spec: Annotated[Path | None, typer.Option(
        "--spec", help="twins.yaml: train the prior of a declared kind (--kind) over its generic features.")] = None,
    kind: Annotated[str | None, typer.Option("--kind", help="With --spec: the kind (default: the spec's only kind).")] = None,
    cap: Annotated[float | None, typer.Option(
        "--cap", help="With --spec: labels are capped here (default 125); the prior predicts [0, cap].")] = None,
) -> None:
    """Submit one federated run (flwr run) to the SuperLink, stream its log; exit 1 unless it finished completed."""
    import tempfile

    from pydantic import ValidationError

    from twinstream.federation.runtime import submit_round, write_app_dir, write_flwr_home, write_run_config
    from twinstream.federation.server_config import RoundConfig, run_config_overrides
    from twinstream.federation.strategies import StrategyConfig

    _require_tls(insecure, {"--root-certificates": root_certificates})
    try:
        fields = {"name": strategy, "proximal_mu": proximal_mu, "server_lr": server_lr, "num_malicious": num_malicious,
                  "server_momentum": server_momentum, "dp_clip_norm": dp_clip_norm, "dp_noise_multiplier": dp_noise_multiplier,
                  "min_nodes": min_sites}
        strategy_cfg = StrategyConfig(**{k: v for k, v in fields.items() if v is not None})
        overrides = run_config_overrides(strategy_cfg, num_server_rounds=rounds, local_epochs=local_epochs, lr=lr, seed=seed,
                                         start_from=start_from, registry_url=registry_url, publish=publish, version=version)
        if spec is not None:
            overrides.update(_kind_overrides(spec, kind, cap))
        overrides.update(_parse_sets(set_ or []))
        RoundConfig.from_run_config(overrides)  # refuse a bad value here, not in the ServerApp
    except (ValidationError, ValueError) as exc:
        console.print(f"[red]invalid round options:[/red] {exc}")
        raise typer.Exit(2) from None
    with tempfile.TemporaryDirectory(prefix="twinstream-round-") as tmp:
        root = Path(tmp)
        home = write_flwr_home(root / "flwr-home", superlink, insecure=insecure, root_certificates=root_certificates)
        config = write_run_config(root / "run-config.toml", overrides)
        rounds_total = overrides.get("num-server-rounds", RoundConfig.from_run_config({}).num_server_rounds)
        console.print(f"submitting {strategy_cfg.label}, {rounds_total} round(s) to {superlink}")
        seen: list[str] = []

        def echo(line: str) -> None:
            seen.append(line)
            print(line, flush=True)

        try:
            outcome = submit_round(write_app_dir(root), home, config, echo=echo)
        except KeyboardInterrupt:
            from twinstream.federation.runtime import RUN_ID

            started = [m.group(1) for m in map(RUN_ID.search, seen) if m]
            where = f"run {started[0]} goes on on the SuperLink (flwr stop {started[0]} stops it)" if started else "no run was started"
            console.print(f"[yellow]stopped following the round; {where}[/yellow]")
            raise typer.Exit(130) from None
    if not outcome.ok:
        console.print(f"[red]federated run {outcome.run_id} ended {outcome.status}[/red]")
        raise typer.Exit(1)
    console.print(f"[green]federated run {outcome.run_id} {outcome.status}[/green]")


@app.command("public-key")
def public_key(
    dir: Annotated[Path | None, typer.Option("--dir", help="Storage directory (env TWINSTREAM_REGISTRY_DIR).")] = None,
) -> None:
    """Print the registry's public key (creates the signing key if absent)."""
    from twinstream.federation.signing import load_or_create_private_key, public_key_b64

    settings = _settings(dir=dir)
    print(public_key_b64(load_or_create_private_key(settings.signing_key_path)))


@app.command("publish")
def publish(
    artifact: Annotated[Path, typer.Argument(help="Prior artifact directory (manifest.json + weights file).")],
    url: Annotated[str, typer.Option("--url", help="Registry base URL.")] = "http://127.0.0.1:8780",
    version: Annotated[str | None, typer.Option("--version", help="Publish under this version (rewrites the manifest's).")] = None,
    token_env: Annotated[str, typer.Option(help="Environment variable holding the bearer token.")] = "TWINSTREAM_REGISTRY_PUBLISH_TOKEN",
) -> None:
    """Publish a prior artifact to a registry (PUT /v1/priors/{family}/{version})."""
    import os

    from twinstream.federation.publish import PublishError, publish_artifact

    try:
        answer = publish_artifact(artifact, url, os.environ.get(token_env, ""), version=version)
    except PublishError as exc:
        console.print(f"[red]publish failed:[/red] {exc}")
        raise typer.Exit(1) from None
    console.print(f"[green]published[/green] {answer['prior_version']}")
