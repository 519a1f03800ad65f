"""A worker whose outputs cannot be delivered stops, and commits none of the events behind them.

Found with this test: the confluent runtime, failing, closed its consumer, whose revoke handler
settled the failed batch a second time (its errors were cleared by then) and committed it.
"""

from __future__ import annotations

import pytest

from streamserve_loadgen.world.embedded import free_port
from tests.integration.conftest import Scenario
from tests.integration.helpers import audited, run


@pytest.mark.parametrize("runtime", ["faust", "confluent"])
def test_undelivered_outputs_stop_the_worker_and_their_events_are_read_again(
    scenario: Scenario, runtime: str
) -> None:
    scenario.load_features(100, skip_every=0)
    scenario.preload(300, 100)
    unreachable = {  # outputs go to a closed port: every one times out after 2 s
        "STREAMSERVE_RDKAFKA_PRODUCER_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "STREAMSERVE_RDKAFKA_PRODUCER_MESSAGE_TIMEOUT_MS": "2000",
    }

    env = {**scenario.env(), "STREAMSERVE_RUNTIME": runtime, "STREAMSERVE_EXIT_WHEN_IDLE_S": "3"}
    failed = run("worker", env={**env, **unreachable}, timeout=120)
    healthy = run("worker", env=env, timeout=120)

    assert failed.returncode == 5, failed.stderr[-3000:]
    assert "not delivered" in failed.stderr and "timed out" in failed.stderr
    assert healthy.returncode == 0, healthy.stderr[-3000:]
    report = audited(scenario)
    assert (report.events, report.lost, report.duplicated) == (300, 0, 0), report.render()
