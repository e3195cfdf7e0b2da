from __future__ import annotations

import pytest
from pydantic import ValidationError

from twinstream.settings import Settings


def test_env_and_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWINSTREAM_BROKER", "127.0.0.1:9999")
    monkeypatch.setenv("TWINSTREAM_PARTITIONS", "8")
    monkeypatch.setenv("TWINSTREAM_LEARNER_PARAMS", '{"clip_min": 1.0}')
    settings = Settings(partitions=2)
    assert settings.broker == "kafka://127.0.0.1:9999"
    assert settings.broker_servers == "127.0.0.1:9999"
    assert settings.partitions == 2  # explicit value beats the env var
    assert settings.learner_params == {"clip_min": 1.0}


def test_frozen_and_strict() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.partitions = 3  # type: ignore[misc]
    with pytest.raises(ValidationError):
        Settings(no_such_option=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        Settings(broker="http://localhost:9092")
    with pytest.raises(ValueError):
        _ = Settings().broker_servers
