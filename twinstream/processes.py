"""Stopping child processes (broker, workers, servers) the same way everywhere."""

from __future__ import annotations

import subprocess


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
