"""Run every docstring example of the installed package, so none of them rots.

Modules are imported by their package name (``twinstream.models.base``), not by file
path, because the top-level folders are mapped under ``twinstream``.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

SKIP = {"twinstream.cli", "twinstream.__main__"}  # typer app: examples are shell commands, documented in the README


def all_modules() -> list[str]:
    names = []
    for pkg in ("twinstream", "twinstream.schemas", "twinstream.models", "twinstream.streams", "twinstream.connectors",
                "twinstream.datasets", "twinstream.federation", "twinstream.evaluation"):
        module = importlib.import_module(pkg)
        names.append(pkg)
        for info in pkgutil.iter_modules(module.__path__, prefix=f"{pkg}."):
            if not info.ispkg and info.name not in SKIP:
                names.append(info.name)
    return sorted(set(names))


@pytest.mark.parametrize("module_name", all_modules())
def test_docstring_examples(module_name: str) -> None:
    module = importlib.import_module(module_name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {module_name}"


def test_every_layer_folder_is_installed_under_twinstream() -> None:
    """Each top-level folder is importable as ``twinstream.<folder>`` from that folder (pyproject's package-dir)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    for folder in ("schemas", "datasets", "models", "streams", "connectors", "federation", "evaluation"):
        package = importlib.import_module(f"twinstream.{folder}")
        assert Path(package.__file__).resolve().parent == root / folder, package.__file__
    assert {"twinstream.models.twin", "twinstream.datasets.cmapss", "twinstream.evaluation.cmapss_eval"} <= set(all_modules())
