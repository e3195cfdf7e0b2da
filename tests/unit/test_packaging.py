"""The built wheel installs one top-level package, ``twinstream``, with its data."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO)],
        check=True,
    )
    (path,) = out.glob("twinstream-*.whl")
    return path


def test_only_twinstream_at_top_level(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/", 1)[0] for name in names if not name.split("/", 1)[0].endswith(".dist-info")}
    assert top == {"twinstream"}, f"wheel installs {sorted(top)} at top level"


def test_layer_folders_are_subpackages_with_data(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in ("schemas", "datasets", "models", "streams", "connectors", "federation", "evaluation"):
        assert f"twinstream/{package}/__init__.py" in names
    for data in ("train_FD001.txt", "test_FD001.txt", "RUL_FD001.txt", "readme.txt"):
        assert f"twinstream/datasets/cmapss/{data}" in names
    assert "twinstream/schemas/json/telemetry.schema.json" in names


def test_console_script(wheel: Path) -> None:
    entry_points = next(n for n in zipfile.ZipFile(wheel).namelist() if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "twinstream = twinstream.cli:app" in text
