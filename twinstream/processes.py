"""Child processes (broker, workers, servers): their environment and how they stop."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping

from pydantic import SecretStr

from twinstream.settings import Settings


def settings_env(settings: Settings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment that gives a child process exactly these settings.

    >>> env = settings_env(Settings(partitions=3, influx_token="t0k"), base={})
    >>> env["TWINSTREAM_PARTITIONS"], env["TWINSTREAM_INFLUX_TOKEN"]
    ('3', 't0k')
    """
    env = dict(os.environ if base is None else base)
    for name, value in settings.model_dump().items():
        key = f"TWINSTREAM_{name.upper()}"
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if value is None:
            env.pop(key, None)
        elif isinstance(value, (dict, list)):
            env[key] = json.dumps(value)
        else:
            env[key] = str(value)
    return env


def stop_process(process: subprocess.Popen | None, timeout_s: float = 15.0) -> None:
    """SIGTERM, wait up to ``timeout_s`` for a clean exit, then SIGKILL.

    >>> import sys
    >>> child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    >>> stop_process(child, timeout_s=5)
    >>> child.poll() is not None
    True
    """
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
