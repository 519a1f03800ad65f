"""Exactly-once on the embedded broker (Tansu): outputs and input offsets committed in one
transaction. A read_committed reader (the audit's) finds every input's outcome exactly once
after a clean stop and restart under load and through a rebalance under load.

Tansu 0.6 returns the records of aborted transactions to read_committed consumers (its fetch
response lists no aborted transactions; README, "Exactly-once"). So where a transaction is
aborted (an exception mid-transaction, a commit that fails) the tests leave out the outputs of
the aborted batches, as a broker that honours aborts would, and check the rest: offsets unmoved,
every event scored once. A SIGKILL is run too, with default identities: the restarted worker
fences its predecessor; Tansu does not abort the killed worker's open transaction nor hide it,
so there the duplicates are held to one transaction's worth."""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, Message

from streamserve.core.records import HEADER_BATCH_ID
from streamserve.io.kafka import Cluster
from streamserve.runtime.confluent import Worker
from streamserve.runtime.pipeline import OpenBatch, SentBatch
from streamserve.runtime.scoring import ScoredBatch
from streamserve.runtime.startup import build_worker
from streamserve.runtime.transactions import TransactionalCheckpoint
from streamserve.tools.audit import header_map, scan_to_end, source_of
from streamserve_loadgen.load.produce import preload
from streamserve_loadgen.world import synthetic
from tests.integration.conftest import Scenario, value_json, wait_for
from tests.integration.helpers import Worker as WorkerProcess
from tests.integration.helpers import all_outcomes, audited, produce_steadily

N_ENTITIES = 200
# one transaction for the whole test: open for a minute (the broker must keep it that long),
# and never full (on a busy machine batches close by time, small, and 16 would fill it)
LONG_TXN: dict[str, Any] = {
    "commit_interval_ms": 60_000,
    "max_batches_in_flight": 1_000,
    "rdkafka_producer": {"transaction.timeout.ms": "120000"},
}


def exactly_once(scenario: Scenario, **more: Any) -> Scenario:
    scenario = scenario.with_settings(processing_guarantee="exactly-once", **more)
    scenario.load_features(N_ENTITIES, skip_every=0)
    return scenario


def in_thread(worker: Worker) -> threading.Thread:
    runner = threading.Thread(target=worker.run, daemon=True)
    runner.start()
    return runner


def test_a_clean_stop_and_restart_under_load_gives_no_duplicates(scenario: Scenario) -> None:
    scenario = exactly_once(scenario, exit_when_idle_s=0)
    events = list(synthetic.generate_events(6_000, N_ENTITIES, malformed_every=50))
    producer = threading.Thread(target=produce_steadily, args=(scenario, events, 2_000))
    producer.start()
    first = build_worker(scenario.settings)
    runner = in_thread(first)
    wait_for(lambda: first.summary.events >= 1_500, 30, "the first worker's first events")
    first.stop()
    runner.join(60)
    second = build_worker(scenario.settings)
    runner = in_thread(second)
    producer.join()
    try:
        wait_for(lambda: all_outcomes(scenario, 6_000), 60, "every event's outcome")
    finally:
        second.stop()
        runner.join(60)
    report = audited(scenario)
    assert (report.lost, report.duplicated, report.dead_lettered) == (0, 0, 120)
    assert first.summary.events + second.summary.events == 6_000  # none read twice


def test_an_exception_mid_transaction_leaves_its_offsets_unmoved_and_a_restart_scores_once(
    scenario: Scenario,
) -> None:
    # a transaction open for a minute: the batches before the failure are all in it
    scenario = exactly_once(scenario, max_batch_size=100, **LONG_TXN)
    scenario.preload(1_000, N_ENTITIES)
    worker = build_worker(scenario.settings)
    aborted = aborted_batches(worker)
    send, sent = worker.pipeline.send, list[SentBatch]()

    def failing_send(batch: OpenBatch, predicted: ScoredBatch) -> SentBatch:
        if len(sent) == 3:
            raise RuntimeError("the test broke the pipeline")
        sent.append(send(batch, predicted))
        return sent[-1]

    worker.pipeline.send = failing_send  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="the test broke the pipeline"):
        worker.run()
    assert aborted == [b.batch_id for b in sent]  # the open transaction held all three
    assert outputs_per_input(scenario, aborted) == Counter()  # none counts (see the module doc)

    # another worker id: batch ids (worker id and sequence) must not repeat the aborted ones
    restarted = build_worker(scenario.settings.model_copy(update={"worker_id": "again"})).run()

    assert restarted.events == 1_000  # the offsets had not moved: every event read again
    outcomes = outputs_per_input(scenario, aborted)
    assert len(outcomes) == 1_000 and set(outcomes.values()) == {1}


def test_a_refused_output_aborts_and_stops_and_a_restart_scores_once(scenario: Scenario) -> None:
    """The producer refuses an output (a dead letter over its message size limit): the worker
    aborts the open transaction and stops; with the limit raised, a restart scores every event
    once."""
    scenario = exactly_once(scenario, max_batch_size=100, **LONG_TXN)
    pairs = list(synthetic.generate_events(1_000, N_ENTITIES, malformed_every=0))
    pairs[450] = (b"big", b"{" + b"x" * 20_000)  # malformed: its dead letter keeps the bytes
    preload(scenario.stack.kafka_bootstrap, scenario.settings.input_topic, pairs)
    limited = scenario.settings.model_copy(
        update={"rdkafka_producer": {"message.max.bytes": "10000"}}
    )
    worker = build_worker(limited)
    aborted = aborted_batches(worker)
    with pytest.raises(KafkaException, match="MSG_SIZE_TOO_LARGE"):
        worker.run()
    assert aborted  # the open transaction, with the batches before the refused one
    # the refused batch's predictions went into the transaction too, before its dead letter
    # was refused: with a minute-long transaction, every output of this worker was aborted
    first_worker = f"{worker.worker_id}-"

    restarted = build_worker(scenario.settings.model_copy(update={"worker_id": "again"})).run()

    assert (restarted.events, restarted.dead_letters) == (1_000, 1)  # offsets had not moved
    outcomes = outputs_per_input(scenario, lambda batch: batch.startswith(first_worker))
    assert len(outcomes) == 1_000 and set(outcomes.values()) == {1}


def test_a_commit_that_fails_aborts_rewinds_and_scores_every_event_once(
    scenario: Scenario,
) -> None:
    # 40 batches of 50, at most 16 in a transaction: several transactions
    scenario = exactly_once(scenario, max_batch_size=50, max_batches_in_flight=16)
    scenario.preload(2_000, N_ENTITIES, malformed_every=40)
    worker = build_worker(scenario.settings)
    aborted = aborted_batches(worker)
    assert isinstance(worker.checkpoint, TransactionalCheckpoint)
    worker.checkpoint.producer = FailsOneCommit(worker.checkpoint.producer, 2)  # type: ignore[assignment]

    summary = worker.run()

    assert aborted, "a transaction was aborted"
    assert summary.events == 2_000  # aborted batches are not counted; they were read again
    outcomes = outputs_per_input(scenario, aborted)
    assert len(outcomes) == 2_000 and set(outcomes.values()) == {1}


def test_a_rebalance_under_load_gives_no_duplicates(scenario: Scenario) -> None:
    scenario = exactly_once(scenario, exit_when_idle_s=0, max_batch_size=200)
    events = list(synthetic.generate_events(8_000, N_ENTITIES, malformed_every=0))
    producer = threading.Thread(target=produce_steadily, args=(scenario, events, 800))
    producer.start()  # for 10 s
    first = build_worker(scenario.settings)
    first_runner = in_thread(first)
    wait_for(lambda: first.summary.events >= 1_000, 30, "the first worker's first events")
    second = build_worker(scenario.settings.model_copy(update={"worker_id": "second"}))
    second_runner = in_thread(second)  # joins: the group rebalances under load
    wait_for(lambda: second.telemetry.health.assigned > 0, 30, "the second worker's partitions")
    producer.join()
    try:
        wait_for(lambda: all_outcomes(scenario, 8_000), 60, "every event's outcome")
    finally:
        for worker, runner in ((first, first_runner), (second, second_runner)):
            worker.stop()
            runner.join(60)
    report = audited(scenario)
    assert (report.predictions, report.lost, report.duplicated) == (8_000, 0, 0)
    assert first.summary.events > 1_000 and second.summary.events > 0  # both took a share


def test_a_worker_killed_and_restarted_with_default_settings_fences_its_predecessor(
    scenario: Scenario,
) -> None:
    """Two workers on one host with no identity settings; one is SIGKILLed mid-transaction and
    started again. It comes back under the killed one's worker id (its slot on this host), so
    its transactional.id fences the dead producer, and a read_committed reader sees every
    event's outcome. With a new id (the host-pid default of before) the dead transaction held
    every partition's last stable offset: on Tansu for good, on Apache Kafka for
    transaction.timeout.ms. Tansu does not abort the fenced transaction, so its outputs may
    surface: duplicates are held to one transaction's worth (0 on Apache Kafka)."""
    scenario = exactly_once(
        scenario, exit_when_idle_s=0, max_batch_size=200, max_batches_in_flight=16
    )
    events = list(synthetic.generate_events(6_000, N_ENTITIES, malformed_every=0))
    env = scenario.env()
    assert "STREAMSERVE_WORKER_ID" not in env and "STREAMSERVE_TRANSACTIONAL_ID" not in env
    first, other = WorkerProcess(env), WorkerProcess(env)
    first.wait_ready()
    other.wait_ready()
    producer = threading.Thread(target=produce_steadily, args=(scenario, events, 2_000))
    producer.start()
    wait_for(lambda: audited(scenario).predictions >= 1_500, 30, "the workers' first outputs")
    first.proc.kill()
    first.proc.wait(10)
    restarted = WorkerProcess(env)
    restarted.wait_ready()  # on a busy machine the others may have scored every event already
    producer.join()
    try:
        wait_for(lambda: all_outcomes(scenario, 6_000), 90, "every event's outcome")
    finally:
        restarted.stop()
        other.stop()
    ids = [started_as(worker) for worker in (first, other, restarted)]
    assert ids[0] == ids[2] != ids[1], ids
    report = audited(scenario)
    one_transaction = 16 * 200  # a transaction holds at most 16 batches of 200 here
    print(f"SIGKILL under exactly-once on Tansu: {report.extra_outputs} duplicate outputs")
    assert report.lost == 0
    assert report.extra_outputs <= one_transaction


def started_as(worker: WorkerProcess) -> str:
    """The worker id a worker process's start-up banner names."""
    found = re.search(r"worker (\S+) starting", worker.log.text())
    assert found, worker.log.text()
    return found.group(1)


def aborted_batches(worker: Worker) -> list[str]:
    """The ids of the batches in every transaction ``worker`` aborts, filled as it runs."""
    checkpoint = worker.checkpoint
    assert isinstance(checkpoint, TransactionalCheckpoint)
    aborted: list[str] = []
    abandon = checkpoint.abandon

    def recording_abandon() -> None:
        aborted.extend(batch.batch_id for batch in checkpoint)
        abandon()

    checkpoint.abandon = recording_abandon  # type: ignore[method-assign]
    return aborted


def outputs_per_input(
    scenario: Scenario, aborted: list[str] | Callable[[str], bool]
) -> Counter[tuple[int, int]]:
    """Outputs per input (partition, offset), leaving out those of aborted batches (by id, or
    those whose id ``aborted`` says yes to)."""
    s = scenario.settings
    topics = [s.predictions_topic, s.dead_letter_topic]
    counts: Counter[tuple[int, int]] = Counter()
    skip = aborted if callable(aborted) else set(aborted).__contains__

    def count(message: Message) -> None:
        batch = header_map(message).get(HEADER_BATCH_ID) or value_json(message)["batch_id"]
        if not skip(batch):
            counts[source_of(message)] += 1

    scan_to_end(Cluster.of(s), topics, count)
    return counts


class FailsOneCommit:
    """A transactional producer whose ``fail_at``-th commit fails as a broker timeout does: an
    error that requires the transaction to be aborted."""

    def __init__(self, producer: Any, fail_at: int) -> None:
        self._producer = producer
        self._commits = 0
        self._fail_at = fail_at

    def commit_transaction(self, *args: Any) -> None:
        self._commits += 1
        if self._commits == self._fail_at:
            error = KafkaError(
                KafkaError._TIMED_OUT, "the test timed it out", txn_requires_abort=True
            )
            raise KafkaException(error)
        self._producer.commit_transaction(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._producer, name)
