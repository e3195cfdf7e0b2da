"""The ``twinstream`` command line (typer + rich).

Every command builds one :class:`~twinstream.settings.Settings` from ``TWINSTREAM_*``
environment variables, overridden by the flags given on the command line.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console

from twinstream.commands import connect as connect_command
from twinstream.commands import eval_scarcity as eval_scarcity_command
from twinstream.commands import eval_stream as eval_stream_command
from twinstream.commands import evaluate as eval_commands
from twinstream.commands import federation as federation_commands
from twinstream.commands import prior as prior_commands
from twinstream.commands import synth as synth_commands
from twinstream.settings import Settings

app = typer.Typer(help="twinstream: streaming digital twins that learn per entity.", no_args_is_help=True)
topics_app = typer.Typer(help="Topic catalog.", no_args_is_help=True)
replay_app = typer.Typer(help="Replay data sets as live telemetry.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")
app.add_typer(replay_app, name="replay")
app.add_typer(prior_commands.app, name="prior")
app.add_typer(eval_commands.app, name="eval")
eval_commands.app.command("stream")(eval_stream_command.stream)
eval_commands.app.command("scarcity")(eval_scarcity_command.scarcity)
app.add_typer(federation_commands.app, name="federation")
app.add_typer(synth_commands.app, name="synth")
app.command("connect")(connect_command.connect)
console = Console(stderr=True)

BrokerOpt = Annotated[str | None, typer.Option("--broker", help="kafka://host:port (env TWINSTREAM_BROKER).")]
AppIdOpt = Annotated[str | None, typer.Option("--app-id", help="Faust app id / consumer group.")]
NamespaceOpt = Annotated[str | None, typer.Option("--topic-namespace", help="Leading name of the catalog topics.")]
PartitionsOpt = Annotated[int | None, typer.Option("--partitions", help="Partitions of keyed topics.")]


def load_settings(**overrides: Any) -> Settings:
    """Settings from env, with non-None CLI values on top; exits with a readable error."""
    try:
        return Settings(**{key: value for key, value in overrides.items() if value is not None})
    except ValidationError as exc:
        console.print(f"[red]invalid configuration:[/red]\n{exc}")
        raise typer.Exit(2) from None


def require_broker(settings: Settings) -> Settings:
    if settings.broker is None:
        console.print("[red]no broker:[/red] pass --broker kafka://host:port or set TWINSTREAM_BROKER "
                      "(`twinstream broker` starts an embedded one)")
        raise typer.Exit(2)
    return settings


@app.command()
def broker(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0 = any free port).")] = 9092,
    host: Annotated[str, typer.Option(help="Listen address.")] = "127.0.0.1",
    storage: Annotated[str | None, typer.Option(
        help="memory:// (default), a directory (durable) or s3://bucket/ (env TWINSTREAM_BROKER_STORAGE).")] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="Serve TLS with this certificate (PEM); needs --tls-key.")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="The certificate's private key (PEM).")] = None,
    tls_client_ca: Annotated[Path | None, typer.Option(
        help="Mutual TLS: demand a client certificate signed by this CA (PEM).")] = None,
    user: Annotated[list[str] | None, typer.Option(
        help="Require SASL/SCRAM login; NAME:PASSWORD, repeatable (a local test broker: argv is visible to `ps`).")] = None,
) -> None:
    """Run the embedded Kafka-protocol broker (Tansu) in the foreground, in memory or durable; optionally TLS + SCRAM users."""
    from twinstream.broker import BrokerError, EmbeddedBroker
    from twinstream.broker_storage import StorageError
    from twinstream.secure_broker import SecuredBroker, parse_user

    settings = load_settings(broker_storage=storage)
    try:
        users = dict(parse_user(entry) for entry in user or [])
    except ValueError as exc:
        console.print(f"[red]broker not started:[/red] --user: {exc}")
        raise typer.Exit(2) from None
    try:
        if tls_cert or tls_key or tls_client_ca or users:
            embedded = SecuredBroker(port=port or None, host=host, tls_cert=tls_cert, tls_key=tls_key, client_ca=tls_client_ca,
                                     users=users, storage=settings.broker_storage, die_with_parent=True)
        else:
            embedded = EmbeddedBroker(port=port or None, host=host, storage=settings.broker_storage, die_with_parent=True)
        embedded.start()
    except (BrokerError, StorageError) as exc:
        console.print(f"[red]broker not started:[/red] {exc}")
        raise typer.Exit(2) from None
    with embedded:
        where = {"memory": "memory only", "directory": f"durable in {embedded.storage.directory}",
                 "bucket": f"durable in {embedded.storage.engine_url}"}[embedded.storage.kind]
        secured = f"; clients use TWINSTREAM_KAFKA_SECURITY_PROTOCOL={embedded.security_protocol}" \
            if isinstance(embedded, SecuredBroker) else ""
        console.print(f"embedded broker listening on [bold]{embedded.url}[/bold] ({where}{secured}; Ctrl-C stops it)")
        stop = False

        def _stop(*_: object) -> None:
            nonlocal stop
            stop = True

        signal.signal(signal.SIGTERM, _stop)
        try:
            while not stop and embedded.running:
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass


@app.command()
def worker(
    broker: BrokerOpt = None,
    app_id: AppIdOpt = None,
    topic_namespace: NamespaceOpt = None,
    partitions: PartitionsOpt = None,
    data_dir: Annotated[Path | None, typer.Option(help="State directory (RocksDB).")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Serve Prometheus /metrics here.")] = None,
    api_port: Annotated[int | None, typer.Option(help="Serve the twin API and inspector page here.")] = None,
) -> None:
    """Run the twin worker (Faust): telemetry in, twins updated, predictions out."""
    from twinstream.streams.worker import run_worker

    settings = require_broker(load_settings(broker=broker, app_id=app_id, topic_namespace=topic_namespace,
                                            partitions=partitions, data_dir=data_dir, metrics_port=metrics_port,
                                            api_port=api_port))
    run_worker(settings)


@app.command()
def sink(
    broker: BrokerOpt = None,
    app_id: AppIdOpt = None,
    topic_namespace: NamespaceOpt = None,
    influx_url: Annotated[str | None, typer.Option(help="InfluxDB URL.")] = None,
) -> None:
    """Run the InfluxDB sink (Faust): predictions topic -> InfluxDB, nothing lost on outages."""
    from twinstream.streams.influx_sink import run_sink

    settings = require_broker(load_settings(broker=broker, app_id=app_id, topic_namespace=topic_namespace,
                                            influx_url=influx_url))
    if settings.influx_url is None:
        console.print("[red]no InfluxDB:[/red] pass --influx-url or set TWINSTREAM_INFLUX_URL")
        raise typer.Exit(2)
    run_sink(settings)


@app.command()
def sidecar(
    broker: BrokerOpt = None,
    app_id: AppIdOpt = None,
    topic_namespace: NamespaceOpt = None,
    partitions: PartitionsOpt = None,
    metrics_port: Annotated[int | None, typer.Option(help="Serve Prometheus /metrics here.")] = None,
) -> None:
    """Run the synthetic-data sidecar (Faust): gaps in, synthetic fills out (docs/sidecar.md)."""
    from twinstream.streams.sidecar import run_sidecar

    settings = require_broker(load_settings(broker=broker, app_id=app_id, topic_namespace=topic_namespace,
                                            partitions=partitions, metrics_port=metrics_port))
    run_sidecar(settings)


@topics_app.command("create")
def topics_create(broker: BrokerOpt = None, topic_namespace: NamespaceOpt = None, partitions: PartitionsOpt = None) -> None:
    """Create the topic catalog (idempotent)."""
    from twinstream.streams.topic_admin import ensure_topics

    settings = require_broker(load_settings(broker=broker, topic_namespace=topic_namespace, partitions=partitions))
    for name, status in ensure_topics(settings).items():
        console.print(f"{name}: {status}")


@topics_app.command("list")
def topics_list(topic_namespace: NamespaceOpt = None, partitions: PartitionsOpt = None) -> None:
    """Print the topic catalog as JSON."""
    from twinstream.schemas.topics import topic_catalog

    settings = load_settings(topic_namespace=topic_namespace, partitions=partitions)
    print(json.dumps([spec.model_dump() for spec in topic_catalog(settings.partitions, settings.topic_namespace)], indent=2))


@replay_app.command("cmapss")
def replay_cmapss(
    broker: BrokerOpt = None,
    topic_namespace: NamespaceOpt = None,
    subset: Annotated[str, typer.Option(help="C-MAPSS subset.")] = "FD001",
    data: Annotated[Path | None, typer.Option(help="Directory in NASA's layout (default: bundled FD001).")] = None,
    rate: Annotated[float, typer.Option(help="Events per second; 0 = as fast as possible.")] = 0.0,
    labels: Annotated[bool, typer.Option(help="Attach known RUL to training engines.")] = True,
) -> None:
    """Replay C-MAPSS engines as telemetry, interleaved in fleet time order."""
    from twinstream.connectors.cmapss_replay import cmapss_events
    from twinstream.connectors.producer import send_all
    from twinstream.schemas.topics import TELEMETRY

    settings = require_broker(load_settings(broker=broker, topic_namespace=topic_namespace))
    events = cmapss_events(subset, data_dir=data, labels=labels)
    topic = TELEMETRY.in_namespace(settings.topic_namespace).name
    from twinstream.kafka_security import client_options, require_kafka

    require_kafka(settings)
    sent = asyncio.run(send_all(settings.broker_servers, topic, events, rate=rate, description=f"{subset} -> {topic}",
                                security=client_options(settings)))
    console.print(f"sent {sent} events to {topic}")


@app.command()
def demo(
    broker: BrokerOpt = None,
    influx_url: Annotated[str | None, typer.Option(help="Also write predictions to this InfluxDB.")] = None,
    summary_json: Annotated[Path | None, typer.Option(help="Write the summary as JSON here.")] = None,
    report_dir: Annotated[Path, typer.Option(help="Plot, logs and worker state go here.")] = Path("twinstream-report"),
    rate: Annotated[float, typer.Option(help="Replay rate in events/s; 0 = as fast as possible.")] = 0.0,
    timeout: Annotated[float, typer.Option(help="Give up waiting for the outputs after this many seconds.")] = 600.0,
    gaps: Annotated[bool, typer.Option(
        "--gaps/--no-gaps", help="Blank one sensor of one engine for a stretch; the sidecar fills it.")] = True,
    broker_storage: Annotated[str | None, typer.Option(
        help="Embedded broker's storage: memory:// (default), a directory or s3://bucket/ (env TWINSTREAM_BROKER_STORAGE).")] = None,
    keep_running: Annotated[bool, typer.Option(
        help="After the summary, keep the broker, worker and inspector page running until Ctrl-C.")] = False,
) -> None:
    """Broker + worker + gap-filling sidecar + C-MAPSS FD001 replay; waits for every event, prints a summary."""
    from twinstream.demo import DemoOptions, print_summary, run_demo

    def show(summary: dict) -> None:
        print_summary(summary, console)
        if summary_json is not None:
            summary_json.parent.mkdir(parents=True, exist_ok=True)
            summary_json.write_text(json.dumps(summary, indent=2) + "\n")
            console.print(f"summary written to {summary_json}")

    settings = load_settings(broker=broker, influx_url=influx_url, broker_storage=broker_storage)
    options = DemoOptions(rate=rate, timeout_s=timeout, report_dir=report_dir, gaps=gaps, keep_running=keep_running)
    run_demo(settings, options, console, on_summary=show)


def main() -> None:  # pragma: no cover
    app()
