"""The checkpoint with fakes: offsets are stored strictly in input order, only once every output
of a batch is acknowledged, and never past a refused one."""

from __future__ import annotations

import msgspec
import pytest
from confluent_kafka import KafkaError, TopicPartition

from streamserve.core.model import ModelBundle
from streamserve.errors import DeliveryError
from streamserve.io.sink import KafkaSink
from streamserve.runtime.checkpoint import Checkpoint
from streamserve.runtime.offsets import ConsumerOffsets, next_offsets
from streamserve.runtime.pipeline import BatchLedger, BatchPipeline, SentBatch
from streamserve.runtime.summary import RunSummary
from streamserve.telemetry.interval import MetricsWindow
from streamserve.telemetry.prometheus import Telemetry
from streamserve_loadgen import synthetic
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


class Harness:
    def __init__(self, bundle: ModelBundle, max_in_flight: int = 8) -> None:
        pairs = list(synthetic.generate_events(BATCH * 6, 30))
        # two input partitions, records interleaved as a consumer returns them
        self.records = [Record(v, i // 2, _partition=i % 2) for i, (_, v) in enumerate(pairs)]
        self.producer = FakeProducer(auto_ack=False)
        self.pipeline: BatchPipeline = pipeline(bundle, MemoryStore({}, 24), self.producer)
        self.offsets = StoredOffsets()
        self.summary = RunSummary()
        ledger = BatchLedger(self.summary, MetricsWindow("w", "m", "1"), Telemetry("m", "1"))
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
    """The two consumer calls ConsumerOffsets makes, recorded."""

    def __init__(self) -> None:
        self.stored: list[TopicPartition] = []
        self.commits: list[bool] = []  # asynchronous, per commit

    def store_offsets(self, offsets: list[TopicPartition]) -> None:
        self.stored += offsets

    def commit(self, asynchronous: bool) -> None:
        self.commits.append(asynchronous)


def test_offsets_are_also_committed_by_count_without_waiting(harness: Harness) -> None:
    """A worker catching up runs faster than any commit interval expects: every
    ``commit_every_events`` stored events are committed at once (asynchronously)."""
    consumer = CommitRecordingConsumer()
    offsets = ConsumerOffsets(consumer, commit_every_events=2 * BATCH)  # type: ignore[arg-type]
    for batch in harness.send(5):
        offsets.store(batch)
    assert consumer.commits == [True, True]  # after the 2nd and the 4th batch
    offsets.commit()  # revoke, shutdown: waits
    assert consumer.commits == [True, True, False]
    assert max(tp.offset for tp in consumer.stored if tp.partition == 0) == 5 * BATCH // 2
