"""The federated training recipe: rounds, local steps and learning rate that production rounds use.

Why here: the production ServerApp (:mod:`.server_config`) and the evaluation harness
(``twinstream eval federated``) must train with the same recipe, and the product must
not import the harness. So the recipe lives with the federation services and the
harness takes its defaults from it. How it was chosen (short rounds with server
momentum against too few global steps and client drift on non-IID sites) is told in
``docs/decisions.md``; its measured quality is in ``docs/federation.md``.

>>> federated_rounds(RECIPE), RECIPE.local_steps, RECIPE.lr
(320, 5, 0.3)
>>> federated_rounds(Recipe(local_steps=0))  # whole passes per round: one round per pass
80
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Recipe:
    """Budget and local-step options of a federated training run."""

    rounds: int = 80  # passes over their data of local-only and centralized runs; federated: rounds x rounds_per_pass rounds
    epochs: int = 1  # local epochs per round
    lr: float = 0.3  # round-1 learning rate, cosine-decayed to a tenth by the last round
    optimizer: str = "sgd"  # local optimizer (models.federated.OPTIMIZERS)
    two_phase: bool = False  # first half of the rounds: prior head only; second half: twin head on the frozen prior head
    equal_steps: bool = True  # every site takes the same number of local steps per round
    local_steps: int = 5  # with equal_steps: local steps per site and round (0 = epochs passes over the mean site)
    rounds_per_pass: int = 4  # rounds per pass (with local_steps > 0): 4 x 5 steps ~ one pass over FD001's mean site


RECIPE = Recipe()


class _Rounds(Protocol):
    rounds: int
    rounds_per_pass: int
    equal_steps: bool
    local_steps: int


def federated_rounds(cfg: _Rounds) -> int:
    """Federated rounds: ``rounds x rounds_per_pass`` with short rounds of ``local_steps`` equal steps, else ``rounds``."""
    return cfg.rounds * cfg.rounds_per_pass if cfg.equal_steps and cfg.local_steps > 0 else cfg.rounds
