"""Loader for NASA's C-MAPSS turbofan degradation data (one place parses the files).

Each row of ``train_FD00X.txt`` / ``test_FD00X.txt`` is one operating cycle of one
engine: unit number, cycle, three operational settings and 21 sensors (see the
bundled ``readme.txt`` and the citation there). Training engines run to failure;
test engines stop earlier and ``RUL_FD00X.txt`` gives their true remaining useful
life at their last cycle.

>>> fd = load_subset("FD001")
>>> len(fd.train), len(fd.test), len(fd.test_rul)
(20631, 13096, 100)
>>> fd.train[0].unit, fd.train[0].cycle, round(fd.train[0].sensors["s2"], 2)
(1, 1, 641.82)
>>> fd.train_rul_at(fd.train[0])  # engine 1 fails after cycle 192
191
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

SETTING_COLUMNS: tuple[str, ...] = ("setting1", "setting2", "setting3")
SENSOR_COLUMNS: tuple[str, ...] = tuple(f"s{i}" for i in range(1, 22))
COLUMNS: tuple[str, ...] = ("unit", "cycle", *SETTING_COLUMNS, *SENSOR_COLUMNS)
# Sensors that vary in FD001 (the other seven are constant up to rounding); the
# usual 14 in the literature.
INFORMATIVE_SENSORS: tuple[str, ...] = (
    "s2", "s3", "s4", "s7", "s8", "s9", "s11", "s12", "s13", "s14", "s15", "s17", "s20", "s21",
)
SUBSETS = ("FD001", "FD002", "FD003", "FD004")


class CmapssFormatError(ValueError):
    """A C-MAPSS file does not have the documented layout."""


@dataclass(frozen=True, slots=True)
class Cycle:
    """One row: one engine, one operating cycle."""

    unit: int
    cycle: int
    settings: dict[str, float]
    sensors: dict[str, float]


@dataclass(frozen=True)
class CmapssSubset:
    """One subset (e.g. FD001): train and test rows, true RUL of each test engine."""

    name: str
    train: list[Cycle]
    test: list[Cycle]
    test_rul: dict[int, int]
    train_life: dict[int, int] = field(default_factory=dict)

    def train_rul_at(self, row: Cycle) -> int:
        """True RUL of a training row: cycles left until its engine's failure."""
        return self.train_life[row.unit] - row.cycle

    def test_rul_at(self, row: Cycle, last_cycle: int) -> int:
        """True RUL of a test row, given the engine's last observed cycle."""
        return self.test_rul[row.unit] + last_cycle - row.cycle


def bundled_dir() -> Path:
    """Directory of the C-MAPSS files shipped inside the package."""
    return Path(str(files("twinstream.datasets") / "cmapss"))


def parse_rows(path: Path) -> list[Cycle]:
    """Parse a whitespace-separated C-MAPSS file into rows."""
    rows: list[Cycle] = []
    with path.open() as handle:
        for line_number, line in enumerate(handle, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != len(COLUMNS):
                raise CmapssFormatError(f"{path}:{line_number}: expected {len(COLUMNS)} columns, got {len(parts)}")
            try:
                values = [float(part) for part in parts]
            except ValueError as exc:
                raise CmapssFormatError(f"{path}:{line_number}: {exc}") from exc
            rows.append(
                Cycle(
                    unit=int(values[0]),
                    cycle=int(values[1]),
                    settings=dict(zip(SETTING_COLUMNS, values[2:5])),
                    sensors=dict(zip(SENSOR_COLUMNS, values[5:])),
                )
            )
    return rows


def parse_rul(path: Path) -> list[int]:
    with path.open() as handle:
        return [int(float(line)) for line in handle if line.strip()]


def subset_files(name: str = "FD001", data_dir: Path | None = None) -> dict[str, Path]:
    """Paths of a subset's ``train``, ``test`` and ``RUL`` files in NASA's layout (not checked to exist).

    >>> sorted(p.name for p in subset_files("FD001").values())
    ['RUL_FD001.txt', 'test_FD001.txt', 'train_FD001.txt']
    """
    if name not in SUBSETS:
        raise ValueError(f"unknown C-MAPSS subset {name!r}; expected one of {', '.join(SUBSETS)}")
    directory = Path(data_dir) if data_dir is not None else bundled_dir()
    return {kind: directory / f"{kind}_{name}.txt" for kind in ("train", "test", "RUL")}


def load_subset(name: str = "FD001", data_dir: Path | None = None) -> CmapssSubset:
    """Load one subset from ``data_dir`` (NASA's file layout) or the bundled copy."""
    paths = subset_files(name, data_dir)
    missing = [str(path) for path in paths.values() if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"C-MAPSS {name}: missing {', '.join(missing)}")
    train = parse_rows(paths["train"])
    test = parse_rows(paths["test"])
    ruls = parse_rul(paths["RUL"])
    test_units = sorted({row.unit for row in test})
    if len(ruls) != len(test_units):
        raise CmapssFormatError(f"{paths['RUL']}: {len(ruls)} RUL values for {len(test_units)} test engines")
    train_life: dict[int, int] = {}
    for row in train:
        train_life[row.unit] = max(train_life.get(row.unit, 0), row.cycle)
    return CmapssSubset(
        name=name,
        train=train,
        test=test,
        test_rul=dict(zip(test_units, ruls)),
        train_life=train_life,
    )
