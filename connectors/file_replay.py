"""File replay source: any CSV or Parquet file as live telemetry, one sample per row.

Columns are named in the connectors file: the entity (``entity_column`` or a constant
``entity_id``), the event time (``time_column``, ISO or epoch), optionally the sequence
number (``seq_column``: a re-replay of the same file is then idempotent downstream) and
the metrics (``values``, each with ``scale`` / ``offset``; by default every other
numeric column). ``rate`` paces the replay in samples per second (0: as fast as the
buffer takes them); a rich progress bar shows how far it is.

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "plant.csv"
>>> _ = p.write_text("machine,t,temp,state\\nm1,2026-01-01T00:00:00Z,20.5,ok\\nm2,2026-01-01T00:00:01Z,,ok\\n")
>>> from twinstream.connectors.config import FileSource
>>> cfg = FileSource(type="file", name="f", path=p, entity_column="machine", time_column="t")
>>> [(e, v) for e, _, _, v in rows_of(cfg)]
[('m1', {'temp': 20.5}), ('m2', {'temp': None})]
"""

from __future__ import annotations

import asyncio
import csv
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from twinstream.connectors.buffer import DiskBuffer
from twinstream.connectors.config import FileSource, FileValue, Reconnect
from twinstream.connectors.convert import number, to_datetime
from twinstream.connectors.metrics import ConnectorMetrics
from twinstream.connectors.source import PlantSource

log = logging.getLogger(__name__)
Row = tuple[str, datetime, "int | None", dict[str, "float | None"]]


def _records(cfg: FileSource) -> Iterator[dict[str, Any]]:
    if cfg.file_format == "parquet":
        import pyarrow.parquet as pq  # only needed for Parquet

        for batch in pq.ParquetFile(cfg.path).iter_batches(batch_size=10_000):
            yield from batch.to_pylist()
    else:
        with cfg.path.open(newline="") as handle:
            yield from csv.DictReader(handle)


def count_rows(cfg: FileSource) -> int:
    """Rows in the file (Parquet: from its metadata), for the progress bar."""
    if cfg.file_format == "parquet":
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(cfg.path).metadata.num_rows)
    with cfg.path.open("rb") as handle:
        return max(0, sum(1 for _ in handle) - 1)


def _metric_columns(cfg: FileSource, first: dict[str, Any]) -> list[FileValue]:
    if cfg.values:
        missing = [v.column or v.name for v in cfg.values if (v.column or v.name) not in first]
        if missing:
            raise ValueError(f"source {cfg.name!r}: columns {missing} not in {cfg.path}")
        return list(cfg.values)
    reserved = {cfg.entity_column, cfg.time_column, cfg.seq_column}
    return [FileValue(name=col) for col, value in first.items() if col not in reserved and number(value) is not None]


def rows_of(cfg: FileSource) -> Iterator[Row]:
    """(entity, event time, seq or None, metrics) per row; empty cells are missing values."""
    columns: list[FileValue] | None = None
    for record in _records(cfg):
        if columns is None:
            columns = _metric_columns(cfg, record)
        entity = cfg.entity_id or str(record[cfg.entity_column])
        moment = (to_datetime(record[cfg.time_column], cfg.time_unit) if cfg.time_column
                  else datetime.now(UTC))
        seq = int(record[cfg.seq_column]) if cfg.seq_column else None
        values: dict[str, float | None] = {}
        for value in columns:
            reading = number(record.get(value.column or value.name))
            values[value.name] = None if reading is None else value.apply(reading)
        yield entity, moment, seq, values


class FileReplaySource(PlantSource):
    """Replays the file once, then returns (the runner stops when all finite sources are done)."""

    kind = "file"

    def __init__(self, config: FileSource, buffer: DiskBuffer, metrics: ConnectorMetrics) -> None:
        super().__init__(config.name, Reconnect(), buffer, metrics)
        self.config = config
        self.total = 0

    async def run(self) -> None:
        cfg = self.config
        self.total = count_rows(cfg)
        loop = asyncio.get_running_loop()
        progress = Progress(
            TextColumn(f"[bold]{cfg.name}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>8.0f} rows/s"), TimeRemainingColumn(),
            disable=not cfg.progress, transient=False,
        )
        self.on_connected()
        started = loop.time()
        with progress:
            task = progress.add_task(cfg.name, total=self.total, rate=0.0)
            for index, (entity, moment, seq, values) in enumerate(rows_of(cfg), start=1):
                self.metrics.values_read.labels(self.name).inc(len(values))
                await self.emit(entity, moment, values, seq=seq)
                if cfg.rate > 0:
                    ahead = index / cfg.rate - (loop.time() - started)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
                elif index % 256 == 0:
                    await asyncio.sleep(0)  # let the sender run while replaying flat out
                if index % 500 == 0 or index == self.total:
                    progress.update(task, completed=index, rate=index / max(loop.time() - started, 1e-9))
        log.info("file source %s: replayed %d rows of %s", self.name, self.samples, cfg.path)
