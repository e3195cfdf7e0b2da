"""``twinstream connect``: plant connectors (MQTT, OPC UA, Modbus TCP, file replay) into the telemetry topic.

``--config FILE`` runs every source of the connectors file until stopped (file replays:
until replayed and delivered); ``--check FILE`` only validates it, and with ``--browse``
also connects to each OPC UA server and prints the variables it offers, as candidates
for ``node_id`` / ``browse_path``. See docs/connectors.md.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

console = Console(stderr=True)


def _load(path: Path):  # -> ConnectorsConfig
    from twinstream.connectors.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        console.print(f"[red]invalid connectors file {path}:[/red]")
        console.print(str(exc), markup=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _describe(config) -> Table:
    table = Table(title="sources")
    for column in ("source", "type", "acquisition", "devices", "values"):
        table.add_column(column)
    for source in config.sources:
        if source.type == "file":
            acquisition = f"replay {source.file_format}" + (f" at {source.rate:g}/s" if source.rate else " as fast as possible")
            devices, values = "-", str(len(source.values) or "all numeric columns")
        else:
            acquisition = ("subscribe" if source.type == "mqtt" or getattr(source, "mode", "") == "subscribe"
                           else f"poll every {source.interval_s:g} s")
            devices, values = str(len(source.devices)), str(sum(len(d.values) for d in source.devices))
        table.add_row(source.name, source.type, acquisition, devices, values)
    return table


async def _browse(config) -> None:
    from twinstream.connectors.opcua import browse_candidates

    for source in config.sources:
        if source.type != "opcua":
            continue
        try:
            found = await browse_candidates(source)
        except Exception as exc:  # an unreachable server is reported, not a crash
            console.print(f"[red]{source.name}: cannot browse {source.url}: {type(exc).__name__}: {exc}[/red]")
            continue
        table = Table(title=f"{source.name}: variables under Objects ({source.url})")
        for column in ("browse_path", "node_id", "type"):
            table.add_column(column)
        for path, node_id, data_type in found:
            table.add_row(path, node_id, data_type)
        Console().print(table)


def connect(
    config: Annotated[Path | None, typer.Option("--config", help="Run the sources of this connectors file.")] = None,
    check: Annotated[Path | None, typer.Option("--check", help="Only validate this connectors file.")] = None,
    browse: Annotated[bool, typer.Option("--browse", help="With --check: list the variables of each OPC UA server.")] = False,
    broker: Annotated[str | None, typer.Option("--broker", help="kafka://host:port (env TWINSTREAM_BROKER).")] = None,
    topic_namespace: Annotated[str | None, typer.Option("--topic-namespace", help="Leading name of the catalog topics.")] = None,
) -> None:
    """Plant connectors: MQTT, OPC UA, Modbus TCP and CSV/Parquet replay into the telemetry topic."""
    if (config is None) == (check is None):
        console.print("[red]give exactly one of --config FILE, --check FILE[/red]")
        raise typer.Exit(2)
    if check is not None:
        loaded = _load(check)
        Console().print(_describe(loaded))
        console.print(f"[green]{check}: valid[/green]")
        if browse:
            asyncio.run(_browse(loaded))
        return
    assert config is not None
    loaded = _load(config)

    from twinstream.connectors.runner import Connectors
    from twinstream.schemas.topics import TELEMETRY
    from twinstream.settings import Settings

    try:
        settings = Settings(**{k: v for k, v in {"broker": broker, "topic_namespace": topic_namespace}.items() if v is not None})
    except ValidationError as exc:
        console.print(f"[red]invalid configuration:[/red]\n{exc}")
        raise typer.Exit(2) from None
    if settings.broker is None:
        console.print("[red]no broker:[/red] pass --broker kafka://host:port or set TWINSTREAM_BROKER")
        raise typer.Exit(2)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for noisy in ("asyncua", "aiokafka", "pymodbus"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    topic = loaded.kafka.topic or TELEMETRY.in_namespace(settings.topic_namespace).name
    from twinstream.kafka_security import KafkaSecurityError, KafkaUnreachableError, check_connection, client_options

    try:  # wrong credentials or TLS settings end here; an unreachable broker is an outage the buffer rides out
        check_connection(settings, wait_for_broker=False)
    except KafkaUnreachableError as exc:
        console.print(f"[yellow]Kafka not reachable yet, buffering:[/yellow] {exc}")
    except KafkaSecurityError as exc:
        console.print(f"[red]Kafka connection failed:[/red] {exc}")
        raise typer.Exit(1) from None
    connectors = Connectors(loaded, settings.broker_servers, topic, security=client_options(settings))
    if loaded.metrics_port is not None:
        connectors.metrics.serve(loaded.metrics_port, settings.metrics_addr)

    async def main() -> None:
        task = asyncio.create_task(connectors.run())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: connectors.stop.set() if hasattr(connectors, "stop") else task.cancel())
        await task

    console.print(f"{len(loaded.sources)} sources -> {topic} via {settings.broker} (buffer {loaded.buffer.path})")
    asyncio.run(main())
    console.print(f"stopped; {connectors.sender.sent} samples sent to {topic}")
