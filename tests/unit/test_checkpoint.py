"""The checkpoint with fakes: offsets are stored strictly in input order, only once every output
of a batch is acknowledged, and never past a refused one."""

from __future__ import annotations

from types import SimpleNamespace

import msgspec
import pytest
from confluent_kafka import KafkaError, TopicPartition

from streamserve.core.model import ModelBundle
from streamserve.errors import DeliveryError
from streamserve.io.sink import KafkaSink
from streamserve.runtime.checkpoint import Checkpoint
from streamserve.runtime.offsets import (
    GIVE_UP_S,
    BatchInput,
    ConsumerOffsets,
    Unconfirmed,
    next_offsets,
)
from streamserve.runtime.pipeline import BatchLedger, BatchPipeline, SentBatch
from streamserve.runtime.summary import RunSummary
from streamserve.telemetry.interval import MetricsInterval
from streamserve.telemetry.prometheus import Telemetry
from streamserve_loadgen.world import synthetic
from tests.unit.fakes import FakeProducer, MemoryStore, Record, pipeline

BATCH = 20


class StoredOffsets:
    """OffsetStore that remembers what was stored and what was committed."""

    def __init__(self) -> None:
        self.stored: list[dict[tuple[str, int], int]] = []
        self.position: dict[tuple[str, int], int] = {}
        self.committed: dict[tuple[str, int], int] = {}

    def store(self, batch: SentBatch) -> None:
        offsets = next_offsets(batch.positions)
        self.stored.append(offsets)
        self.position.update(offsets)

    def commit(self) -> None:
        self.committed = dict(self.position)

    def sent(self, batch: SentBatch) -> None:
        pass

    behind = False

    def retry_commit(self) -> None:
        pass


class Harness:
    def __init__(self, bundle: ModelBundle, max_in_flight: int = 8) -> None:
        pairs = list(synthetic.generate_events(BATCH * 6, 30))
        # two input partitions, records interleaved as a consumer returns them
        self.records = [Record(v, i // 2, _partition=i % 2) for i, (_, v) in enumerate(pairs)]
        self.producer = FakeProducer(auto_ack=False)
        self.pipeline: BatchPipeline = pipeline(bundle, MemoryStore({}, 24), self.producer)
        self.offsets = StoredOffsets()
        self.summary = RunSummary()
        self.telemetry = Telemetry("m", "1")
        ledger = BatchLedger(self.summary, MetricsInterval("w", "m", "1"), self.telemetry)
        sink = KafkaSink(self.producer)  # type: ignore[arg-type]
        self.checkpoint = Checkpoint(sink, self.offsets, ledger, max_in_flight)

    def send(self, batches: int) -> list[SentBatch]:
        sent = []
        for k in range(batches):
            batch = self.pipeline.run(self.records[k * BATCH : (k + 1) * BATCH])
            self.checkpoint.add(batch)
            sent.append(batch)
        return sent

    def acknowledge(self, batch_id: str, error: KafkaError | None = None) -> None:
        def of_batch(produced: object) -> bool:
            return msgspec.json.decode(produced.value)["batch_id"] == batch_id  # type: ignore[attr-defined]

        self.producer.acknowledge(of_batch, error)


@pytest.fixture
def harness(bundle: ModelBundle) -> Harness:
    return Harness(bundle)


def test_offsets_are_stored_in_input_order_with_batches_in_flight(harness: Harness) -> None:
    first, second, third = harness.send(3)
    harness.acknowledge(third.batch_id)
    harness.acknowledge(second.batch_id)
    assert harness.checkpoint.advance() == 0  # the oldest is still out: nothing moves
    assert harness.offsets.stored == [] and harness.summary.events == 0
    harness.acknowledge(first.batch_id)
    assert harness.checkpoint.advance() == 3
    assert harness.offsets.stored == [next_offsets(b.positions) for b in (first, second, third)]
    assert harness.offsets.position == {("events", 0): 30, ("events", 1): 30}
    assert (harness.summary.events, harness.summary.batches) == (60, 3)  # counted once, now


def test_a_refused_output_stores_nothing_from_its_batch_on(harness: Harness) -> None:
    first, second, third = harness.send(3)
    harness.acknowledge(first.batch_id)
    harness.acknowledge(second.batch_id, KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
    harness.acknowledge(third.batch_id)
    with pytest.raises(DeliveryError, match="not delivered"):
        harness.checkpoint.advance()
    with pytest.raises(DeliveryError):  # and it never moves on
        harness.checkpoint.advance()
    assert harness.offsets.stored == [next_offsets(first.positions)]
    harness.checkpoint.commit()
    assert harness.offsets.committed == {("events", 0): 10, ("events", 1): 10}
    assert harness.summary.events == BATCH
    refused = len(second.stats.outputs.predictions) + len(second.stats.outputs.dead_letters)
    scraped = harness.telemetry.registry.get_sample_value("streamserve_delivery_failures_total")
    assert scraped == refused  # counted once


def test_a_revoke_with_batches_in_flight_commits_exactly_what_was_acknowledged(
    harness: Harness,
) -> None:
    sent = harness.send(4)
    harness.acknowledge(sent[0].batch_id)
    harness.acknowledge(sent[1].batch_id)
    harness.checkpoint.advance()
    harness.checkpoint.commit()  # what a revoke before the rest is acknowledged commits
    assert harness.offsets.committed == {("events", 0): 20, ("events", 1): 20}
    harness.producer.auto_ack = True  # the broker answers the rest while the revoke waits
    harness.checkpoint.drain()
    harness.checkpoint.commit()
    assert len(harness.checkpoint) == 0
    assert harness.offsets.committed == {("events", 0): 40, ("events", 1): 40}


def test_a_full_checkpoint_waits_for_the_oldest_batch(bundle: ModelBundle) -> None:
    harness = Harness(bundle, max_in_flight=2)
    first, _ = harness.send(2)
    assert harness.checkpoint.full
    harness.producer.auto_ack = True
    harness.checkpoint.before_produce()
    assert not harness.checkpoint.full
    assert harness.offsets.stored[0] == next_offsets(first.positions)


class CommitRecordingConsumer:
    """The consumer calls ConsumerOffsets makes, recorded."""

    def __init__(self) -> None:
        self.stored: list[TopicPartition] = []
        self.commits: list[bool] = []  # asynchronous, per commit

    def store_offsets(self, offsets: list[TopicPartition]) -> None:
        self.stored += offsets

    def commit(self, asynchronous: bool) -> list[TopicPartition] | None:
        self.commits.append(asynchronous)
        return None if asynchronous else self.stored


def test_offsets_are_also_committed_by_count_without_waiting(harness: Harness) -> None:
    """A worker catching up runs faster than any commit interval expects: every
    ``commit_every_events`` stored events are committed at once (asynchronously)."""
    consumer = CommitRecordingConsumer()
    unconfirmed = Unconfirmed(60.0, 2 * BATCH)  # the records were written in the same second
    offsets = ConsumerOffsets(consumer, unconfirmed)  # type: ignore[arg-type]
    for batch in harness.send(5):
        offsets.sent(batch)
        offsets.store(batch)
    assert consumer.commits == [True, True]  # after the 2nd and the 4th batch
    assert unconfirmed.stored_events == 5 * BATCH  # no commit reported yet
    offsets.commit()  # revoke, shutdown: waits
    assert consumer.commits == [True, True, False]
    assert max(tp.offset for tp in consumer.stored if tp.partition == 0) == 5 * BATCH // 2
    assert unconfirmed.stored_events == 0  # the synchronous commit's answer confirmed them all


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def read(events: int, input_ms: tuple[int, int] = (0, 0), **offsets: int) -> BatchInput:
    """What a batch of ``events`` in partitions p0, p1... read (``p0=10``: the next offset
    is 10), each partition spanning ``input_ms`` of record time."""
    at = {("events", int(name[1:])): offset for name, offset in offsets.items()}
    return BatchInput(at, dict.fromkeys(at, input_ms), events)


def test_stored_offsets_that_no_commit_confirms_for_too_long_hold_the_worker() -> None:
    """A rebalance holds commits until the group has rejoined (seconds on Tansu, a dead
    member's session timeout on Apache Kafka): the worker must stop scoring more input that a
    second crash would repeat, and go on once a commit lands."""
    clock = Clock()
    unconfirmed = Unconfirmed(commit_interval_s=0.2, commit_every_events=1_000, clock=clock)
    assert unconfirmed.max_age_s == pytest.approx(0.45)  # the interval plus at least 250 ms
    unconfirmed.stored(read(10, p0=10))
    clock.now += 0.2
    unconfirmed.stored(read(15, p0=20, p1=5))
    assert not unconfirmed.behind
    unconfirmed.on_commit(None, [TopicPartition("events", 0, 10)])  # the timer's commit
    assert unconfirmed.stored_events == 15 and not unconfirmed.behind
    clock.now += 0.46  # no commit lands: a rebalance, or a slow commit
    assert unconfirmed.behind and not unconfirmed.stalled
    assert unconfirmed.oldest_age_s == pytest.approx(0.46)
    clock.now += 1  # still none: worth pausing the partitions
    assert unconfirmed.stalled
    unconfirmed.on_commit(None, [TopicPartition("events", 0, 20)])  # partition 1's missing
    assert unconfirmed.behind
    unconfirmed.on_commit(None, [TopicPartition("events", 1, 5), TopicPartition("events", 0, 20)])
    assert not unconfirmed.behind and unconfirmed.stored_events == 0


def test_catching_up_commits_by_input_time_and_holds_past_an_interval_of_it() -> None:
    """After an outage the worker reads a backlog many times faster than it was written: a
    commit is due once the stored records span a commit interval of their own timestamps, and
    if it does not land the worker holds before a crash could repeat much more than that."""
    clock = Clock()
    unconfirmed = Unconfirmed(commit_interval_s=0.2, commit_every_events=10_000, clock=clock)
    unconfirmed.stored(read(500, (1_000, 1_100), p0=500))
    assert not unconfirmed.due
    unconfirmed.stored(read(500, (1_101, 1_200), p0=1_000))
    assert unconfirmed.due  # 200 ms of input in no wall time at all
    unconfirmed.requested()
    assert not unconfirmed.due
    unconfirmed.stored(read(1_000, (1_201, 1_400), p0=2_000))
    assert not unconfirmed.behind  # 400 ms of input wait: within the interval plus slack
    unconfirmed.stored(read(500, (1_401, 1_460), p0=2_500))
    assert unconfirmed.behind and unconfirmed.input_span_s() == pytest.approx(0.46)
    assert not unconfirmed.stalled  # a moment's wait, not a rebalance
    unconfirmed.on_commit(None, [TopicPartition("events", 0, 2_000)])
    assert not unconfirmed.behind  # what waits now spans 59 ms


def test_batches_in_flight_count_towards_what_a_crash_would_repeat(harness: Harness) -> None:
    """Outputs with the producer may reach the broker before a crash: their records weigh like
    stored ones, so a worker catching up cannot send seconds of input ahead of its commits."""
    unconfirmed = Unconfirmed(commit_interval_s=0.2, commit_every_events=10_000, clock=Clock())
    first, second = harness.send(2)
    # the backlog's records were written 0.4 s apart, one batch a second ago, one now
    for batch, written_ms in ((first, 1_000), (second, 1_400)):
        for record in batch.records:
            record._timestamp = written_ms  # type: ignore[attr-defined]
        unconfirmed.sent(batch)
    unconfirmed.stored(unconfirmed.completed(first))
    assert unconfirmed.input_span_s() == pytest.approx(0.4) and not unconfirmed.behind
    third = harness.send(1)[0]
    for record in third.records:
        record._timestamp = 1_500  # type: ignore[attr-defined]
    unconfirmed.sent(third)
    assert unconfirmed.behind  # 0.5 s of input unconfirmed, most of it in flight


def test_too_many_events_waiting_for_a_commit_hold_the_worker_too() -> None:
    """Records without timestamps: past twice commit_every_events the worker waits."""
    unconfirmed = Unconfirmed(commit_interval_s=1.0, commit_every_events=100, clock=Clock())
    unconfirmed.stored(BatchInput({("events", 0): 150}, {}, 150))
    assert unconfirmed.due and not unconfirmed.behind
    unconfirmed.stored(BatchInput({("events", 0): 250}, {}, 100))
    assert unconfirmed.behind


def test_revoked_partitions_no_longer_hold_the_worker_and_failed_commits_confirm_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    unconfirmed = Unconfirmed(commit_interval_s=0.2, commit_every_events=1_000, clock=clock)
    unconfirmed.stored(read(12, p0=10, p3=7))
    clock.now += 1
    refused = KafkaError(KafkaError.REBALANCE_IN_PROGRESS)
    failed = SimpleNamespace(topic="events", partition=0, offset=10, error=refused)
    failures = []
    unconfirmed.on_failure = lambda: failures.append(1)
    unconfirmed.on_commit(refused, [failed])  # type: ignore[list-item]
    assert unconfirmed.behind and "commit failed" in caplog.text and failures == [1]
    unconfirmed.forget([TopicPartition("events", 0), TopicPartition("events", 3)])
    assert not unconfirmed.behind and unconfirmed.stored_events == 0


def test_a_consumer_with_nothing_to_commit_releases_what_waits() -> None:
    """Had a commit report been missed, the worker would hold for good: librdkafka's "no
    offset stored" (nothing newer than committed) confirms everything."""
    clock = Clock()
    unconfirmed = Unconfirmed(commit_interval_s=0.2, commit_every_events=1_000, clock=clock)
    unconfirmed.stored(read(12, p0=10))
    clock.now += 1
    assert unconfirmed.behind
    unconfirmed.on_commit(KafkaError(KafkaError._NO_OFFSET), [])
    assert not unconfirmed.behind and unconfirmed.stored_events == 0


def test_a_batch_completing_after_its_partition_was_lost_waits_for_no_commit_of_it() -> None:
    """Partitions lost (a missed session) are forgotten at once, but a batch in flight then
    still completes: its offsets there will never be committed by this worker, and waiting for
    them would hold it for good (its other partitions stalled: a chaos run saw it)."""
    clock = Clock()
    unconfirmed = Unconfirmed(commit_interval_s=0.2, commit_every_events=1_000, clock=clock)
    unconfirmed.assigned([TopicPartition("events", 0), TopicPartition("events", 1)])
    unconfirmed.forget([TopicPartition("events", 0)])  # on_lost
    unconfirmed.stored(read(20, p0=10, p1=10))  # the batch in flight completes after that
    clock.now += 1
    unconfirmed.on_commit(None, [TopicPartition("events", 1, 10)])
    assert not unconfirmed.behind and unconfirmed.stored_events == 0
    unconfirmed.assigned([TopicPartition("events", 0)])  # back: its offsets count again
    unconfirmed.stored(read(5, p0=30))
    clock.now += 1
    assert unconfirmed.behind


def test_a_worker_never_holds_for_good(caplog: pytest.LogCaptureFixture) -> None:
    """Whatever keeps a commit from landing (a broker that never confirms one), the worker
    stops holding after GIVE_UP_S and says so."""
    clock = Clock()
    unconfirmed = Unconfirmed(commit_interval_s=0.2, commit_every_events=1_000, clock=clock)
    unconfirmed.stored(read(12, p0=10))
    clock.now += 30
    assert unconfirmed.behind
    clock.now += GIVE_UP_S
    assert not unconfirmed.behind and "not holding any longer" in caplog.text
