"""At least once, a crash repeats about one commit interval of input plus the batches in flight,
also when it comes while the group rebalances. A rebalance that waits for a dead member holds
every commit until the group has rejoined (librdkafka queues them; Apache Kafka refuses them in
PreparingRebalance): a worker that went on scoring meanwhile left all of it to be scored again
when killed too (a single such kill repeated 4,400 events in a chaos run)."""

from __future__ import annotations

import threading

from streamserve.runtime.offsets import MIN_COMMIT_SLACK_S
from streamserve_loadgen.world import synthetic
from tests.integration.conftest import Scenario, wait_for
from tests.integration.helpers import Worker, all_outcomes, audited, produce_steadily

N_ENTITIES = 200
RATE = 2_000  # events/s offered
COMMIT_INTERVAL_S = 0.2
BATCH = 100


def test_a_kill_while_the_group_waits_for_a_dead_member_repeats_one_interval(
    scenario: Scenario,
) -> None:
    scenario = scenario.with_settings(max_batch_size=BATCH)
    scenario.load_features(N_ENTITIES, skip_every=0)
    env = {
        **scenario.env(),
        "STREAMSERVE_EXIT_WHEN_IDLE_S": "0",
        "STREAMSERVE_COMMIT_INTERVAL_MS": str(int(COMMIT_INTERVAL_S * 1000)),
        "STREAMSERVE_LOG_LEVEL": "INFO",
    }
    events = list(synthetic.generate_events(24_000, N_ENTITIES, malformed_every=0))
    first, second = Worker(env), Worker(env)
    first.wait_ready()
    second.wait_ready()
    producer = threading.Thread(target=produce_steadily, args=(scenario, events, RATE))
    producer.start()
    wait_for(lambda: audited(scenario).predictions >= 3_000, 30, "the workers' first outputs")
    first.proc.kill()  # its partitions stay its own until its session (6 s) times out
    replacement = Worker(env)  # joins: the group rebalances, waiting for the dead member
    held = "wait for a commit"  # the survivor's log line: it stopped taking records
    wait_for(lambda: held in second.log.text(), 30, "the survivor to hold for a commit")
    second.proc.kill()  # in the middle of that wait
    second_replacement = Worker(env)
    producer.join()
    try:
        wait_for(lambda: all_outcomes(scenario, len(events)), 120, "every event's outcome")
    finally:
        replacement.stop()
        second_replacement.stop()
    report = audited(scenario)
    held_s = COMMIT_INTERVAL_S + max(COMMIT_INTERVAL_S, MIN_COMMIT_SLACK_S)
    # in hand and in flight, plus the input held unconfirmed: each worker has half the rate
    per_kill = 3 * BATCH + held_s * RATE / 2
    print(f"two kills, one in a rebalance: {report.extra_outputs} duplicate outputs")
    assert report.lost == 0
    assert report.extra_outputs <= 2 * per_kill
