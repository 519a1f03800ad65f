"""STREAMSERVE_STATIC_MEMBERSHIP: a worker killed and back under the same id within the session
timeout gets its partitions back, and the other worker never gives any up (no rebalance)."""

from __future__ import annotations

import threading

from streamserve_loadgen.world import synthetic
from tests.integration.conftest import Scenario, wait_for
from tests.integration.helpers import Worker, all_outcomes, audited, produce_steadily

N_ENTITIES = 200


def test_a_static_member_back_within_its_session_keeps_its_partitions(scenario: Scenario) -> None:
    scenario.load_features(N_ENTITIES, skip_every=0)
    env = {
        **scenario.env(),
        "STREAMSERVE_EXIT_WHEN_IDLE_S": "0",
        "STREAMSERVE_STATIC_MEMBERSHIP": "true",
        "STREAMSERVE_RDKAFKA_CONSUMER_SESSION_TIMEOUT_MS": "45000",  # a restart on a busy machine
        "STREAMSERVE_LOG_LEVEL": "INFO",
    }
    first = Worker({**env, "STREAMSERVE_WORKER_ID": "static-a"})
    other = Worker({**env, "STREAMSERVE_WORKER_ID": "static-b"})
    first.wait_ready()
    other.wait_ready()
    wait_for(
        lambda: (
            first.metric("streamserve_assigned_partitions") > 0
            and first.metric("streamserve_assigned_partitions")
            + other.metric("streamserve_assigned_partitions")
            == 4
        ),
        30,
        "the four partitions shared",
    )
    held = first.metric("streamserve_assigned_partitions")
    events = list(synthetic.generate_events(6_000, N_ENTITIES, malformed_every=0))
    producer = threading.Thread(target=produce_steadily, args=(scenario, events, 1_000))
    producer.start()
    wait_for(lambda: audited(scenario).predictions >= 1_000, 30, "the first outputs")
    first.proc.kill()
    first.proc.wait()
    back = Worker({**env, "STREAMSERVE_WORKER_ID": "static-a"})
    try:
        wait_for(
            lambda: back.metric("streamserve_assigned_partitions") == held,
            40,  # inside the 45 s session: the broker hands them back, no rebalance
            "the restarted member to get its partitions back",
        )
        producer.join()
        wait_for(lambda: all_outcomes(scenario, len(events)), 60, "every event's outcome")
        assert "revoked" not in other.log.text() and "lost" not in other.log.text()
        assert audited(scenario).lost == 0
    finally:
        back.stop()
        other.stop()
