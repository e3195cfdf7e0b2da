"""Failover and scale-out lose nothing: a worker killed, a worker joining, a worker on an
empty state dir taking over partitions (see failover_scenarios.py).

CI runs each scenario once; ``python benchmarks/failover_loop.py --runs 10`` repeats them
and writes the counts that docs/architecture.md reports.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from failover_scenarios import SCENARIOS, run_scenario

from twinstream.broker import EmbeddedBroker


@pytest.mark.slow
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rebalance_loses_nothing(scenario: str, kafka_broker: EmbeddedBroker, app_id: str, tmp_path: Path) -> None:
    result = run_scenario(scenario, kafka_broker.bootstrap_servers, kafka_broker.url, app_id, tmp_path)
    assert result.ok, "\n".join([repr(result), *result.details])
