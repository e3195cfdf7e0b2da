"""Shared fixtures.

Unit tests (tests/unit) need no server. Integration tests (tests/integration, marked
``integration``) get real servers from the session fixtures defined in
``tests/integration/conftest.py``; nothing here starts a process.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT
