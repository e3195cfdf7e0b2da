"""Jittered exponential backoff, capped: how long to wait before the next reconnect.

Why capped and jittered: an operator sets ``max_s`` as the promise "after the server is
back, we are back within this long"; doubling without a cap turns a short blip into
minutes of silence. Jitter keeps many connectors from reconnecting in lock-step.

>>> b = Backoff(initial_s=1.0, max_s=8.0, rng=lambda: 1.0)
>>> [b.next_delay() for _ in range(6)]
[1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
>>> b.reset(); b.next_delay()
1.0
>>> b = Backoff(initial_s=1.0, max_s=8.0, rng=lambda: 0.0)
>>> [b.next_delay() for _ in range(4)]
[0.5, 1.0, 2.0, 4.0]
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable


class Backoff:
    """Delay ``d = min(max_s, initial_s * 2**n)``, drawn uniformly from ``[d/2, d]``."""

    def __init__(self, initial_s: float, max_s: float, rng: Callable[[], float] = random.random) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.rng = rng
        self.attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.max_s, self.initial_s * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return ceiling * (0.5 + 0.5 * self.rng())

    def reset(self) -> None:
        """After a successful connection the next failure starts from ``initial_s`` again."""
        self.attempt = 0

    async def wait(self) -> float:
        delay = self.next_delay()
        await asyncio.sleep(delay)
        return delay
