"""The confluent runtime's offset store: a completed batch's offsets are stored on the consumer,
which commits them on its timer (``enable.auto.commit`` commits only stored offsets), and when
the checkpoint asks (revoke, shutdown).

What a crash makes the group score again is every record whose outputs reached the broker but
whose offset was not committed: the batches in flight and the offsets stored since the last
commit that landed. ``Unconfirmed`` keeps that to about one commit interval of input per
partition, also while catching up (the worker then covers seconds of input in a fraction of
one) and in a rebalance (librdkafka holds commits until the group has rejoined; on Apache Kafka
a rebalance that waits for a dead member lasts its session timeout): commits go out by input
time (record timestamps) and by count as well as on the consumer's timer, the consumer reports
which offsets the group coordinator took (``on_commit``), and past the limit the store is
``behind``: the worker takes no more records until a commit lands.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from streamserve.core.batch import Position
from streamserve.runtime.pipeline import SentBatch

log = logging.getLogger("streamserve.worker")

MIN_COMMIT_SLACK_S = 0.25  # a commit may take this long to land before the worker holds
GIVE_UP_S = 60.0  # past a rebalance's longest wait (a session timeout): stop holding, say so
PAUSE_AFTER_S = 1.0  # held this long past the limit, pause (a resume costs a second's fetching)
Partition = tuple[str, int]


def next_offsets(positions: Sequence[Position]) -> dict[Partition, int]:
    """The offset to commit per (topic, partition): one past the batch's last record there."""
    last = {(topic, partition): offset for topic, partition, offset in positions}  # last wins
    return {tp: offset + 1 for tp, offset in last.items()}


@dataclass(frozen=True)
class BatchInput:
    """What a sent batch read, per partition: the offset to commit after it, and the first and
    last record timestamps (where the records have them)."""

    offsets: dict[Partition, int]
    input_ms: dict[Partition, tuple[int, int]]
    events: int

    @classmethod
    def of(cls, batch: SentBatch) -> BatchInput:
        positions, records = batch.positions, batch.records
        last = {(t, p): i for i, (t, p, _) in enumerate(positions)}
        first = {(t, p): i for i, (t, p, _) in reversed(list(enumerate(positions)))}
        input_ms = {}
        for key, i in first.items():
            (kind, start), (_, end) = records[i].timestamp(), records[last[key]].timestamp()
            if kind:  # a record without a timestamp says nothing of input time
                input_ms[key] = (start, end)
        offsets = {key: positions[i][2] + 1 for key, i in last.items()}
        return cls(offsets, input_ms, len(positions))


class Unconfirmed:
    """Sent batches whose offsets no commit has confirmed yet, oldest first: in flight (outputs
    with the producer), then stored (on the consumer, waiting for a commit to land).

    A commit is ``due`` once the batches stored since the last one span a commit interval of
    record time in some partition, or ``commit_every_events`` events. The store is ``behind``
    when the unconfirmed records of a partition span more than a commit interval plus slack
    (at least ``MIN_COMMIT_SLACK_S``) of record time, when the oldest stored batch waited that
    long, or when more than twice ``commit_every_events`` stored events wait.
    """

    def __init__(
        self,
        commit_interval_s: float,
        commit_every_events: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval_ms = commit_interval_s * 1000
        self.max_age_s = commit_interval_s + max(commit_interval_s, MIN_COMMIT_SLACK_S)
        self.commit_every = commit_every_events
        self._clock = clock
        self._in_flight: deque[tuple[SentBatch, BatchInput]] = deque()
        self._stored: deque[tuple[BatchInput, float]] = deque()  # and when (monotonic)
        self._committed: dict[Partition, int] = {}
        self._held: set[Partition] | None = None  # the partitions assigned (None: not told)
        self._unrequested_ms: dict[Partition, tuple[int, int]] = {}  # stored, not asked for
        self._unrequested = 0  # events stored since the last commit request
        self.stored_events = 0  # events whose offsets wait for a commit
        self.on_failure: Callable[[], None] = lambda: None  # a commit failed (for the metrics)

    def sent(self, batch: SentBatch) -> None:
        """A batch whose outputs went to the producer."""
        self._in_flight.append((batch, BatchInput.of(batch)))

    def completed(self, batch: SentBatch) -> BatchInput:
        """The oldest batch in flight is acknowledged and completed: what it read."""
        if self._in_flight and self._in_flight[0][0] is batch:
            return self._in_flight.popleft()[1]
        return BatchInput.of(batch)  # not seen by ``sent`` (a checkpoint fed directly)

    def stored(self, read: BatchInput) -> None:
        """Its offsets are stored on the consumer: they wait for a commit (those of partitions
        this worker lost meanwhile never will be: they are left out)."""
        if self._held is not None:
            for key in set(read.offsets) - self._held:
                del read.offsets[key]
                read.input_ms.pop(key, None)
        self._stored.append((read, self._clock()))
        self.stored_events += read.events
        self._unrequested += read.events
        for key, (first_ms, last_ms) in read.input_ms.items():
            span = self._unrequested_ms.get(key)
            self._unrequested_ms[key] = (span[0] if span else first_ms, last_ms)

    @property
    def due(self) -> bool:
        """Whether to commit now (the consumer's timer commits besides)."""
        if self._unrequested >= self.commit_every:
            return True
        return any(
            last - first >= self.interval_ms for first, last in self._unrequested_ms.values()
        )

    def requested(self) -> None:
        """A commit of everything stored so far was asked for (or landed)."""
        self._unrequested, self._unrequested_ms = 0, {}

    @property
    def behind(self) -> bool:
        if self._stored and self.oldest_age_s > GIVE_UP_S:
            self._give_up()
        if self._stored and (
            self.stored_events > 2 * self.commit_every or self.oldest_age_s > self.max_age_s
        ):
            return True
        return self.input_span_s() > self.max_age_s  # in flight, too: acks bring commits

    def _give_up(self) -> None:
        """No commit confirmed for longer than any rebalance should last: holding on would
        stall the worker for good; go on (the offsets stay stored, to be committed later)."""
        log.warning("%s: not holding any longer", self.describe())
        self.nothing_to_commit()

    @property
    def oldest_age_s(self) -> float:
        """How long the oldest stored batch has waited for a commit."""
        return self._clock() - self._stored[0][1] if self._stored else 0.0

    def input_span_s(self) -> float:
        """The most record time one partition holds unconfirmed (in flight or stored)."""
        first: dict[Partition, int] = {}
        last: dict[Partition, int] = {}
        for read in self._reads():
            for key, (start, end) in read.input_ms.items():
                first.setdefault(key, start)
                last[key] = end
        return max((last[k] - ms for k, ms in first.items()), default=0) / 1000

    def describe(self) -> str:
        """Why the store is behind, for the log."""
        return (
            f"offsets of {self.stored_events} events wait for a commit (the oldest for "
            f"{self.oldest_age_s:.2f} s; {self.input_span_s():.2f} s of input unconfirmed)"
        )

    @property
    def stalled(self) -> bool:
        """The oldest stored offset waited well past the limit: no commit lands (a rebalance,
        most likely), unlike a moment's wait for acknowledgements and a commit while catching
        up or a slow commit."""
        return self.oldest_age_s > self.max_age_s + PAUSE_AFTER_S

    def on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """The consumer's ``on_commit`` callback (auto and explicit commits alike; served by
        ``consume`` on the loop's thread): confirm what the commit covered."""
        if error is not None and error.code() == KafkaError._NO_OFFSET:
            self.nothing_to_commit()
            return
        if error is not None:
            self.failed(error)
        landed = False
        for tp in partitions:
            if tp.error is None and tp.offset >= 0:
                key = (tp.topic, tp.partition)
                self._committed[key] = max(self._committed.get(key, -1), tp.offset)
                landed = True
        if landed and error is None:  # the timer's commits count too: none due right after
            self.requested()
        self._confirm()

    def failed(self, error: KafkaError) -> None:
        """A commit failed: the next one covers its offsets."""
        log.warning("commit failed: %s", error.str())
        self.on_failure()

    def nothing_to_commit(self) -> None:
        """The consumer has no stored offset newer than its committed ones: whatever waits was
        committed (a report this store did not see)."""
        self._stored.clear()
        self.stored_events = 0
        self.requested()

    def assigned(self, partitions: list[TopicPartition]) -> None:
        """Partitions this worker now holds (their offsets are its to commit)."""
        self._held = (self._held or set()) | {(tp.topic, tp.partition) for tp in partitions}

    def forget(self, partitions: list[TopicPartition]) -> None:
        """Partitions revoked or lost: their offsets are no longer this worker's to commit
        (a batch in flight when they were lost still completes later: see ``stored``)."""
        gone = {(tp.topic, tp.partition) for tp in partitions}
        if self._held is not None:
            self._held -= gone
        for read in self._reads():
            for key in gone.intersection(read.offsets):
                del read.offsets[key]
                read.input_ms.pop(key, None)
        for key in gone:
            self._committed.pop(key, None)
            self._unrequested_ms.pop(key, None)
        self._confirm()

    def _reads(self) -> Iterable[BatchInput]:
        yield from (read for read, _ in self._stored)
        yield from (read for _, read in self._in_flight)

    def _confirm(self) -> None:
        committed, stored = self._committed, self._stored
        while stored and all(
            committed.get(key, -1) >= offset for key, offset in stored[0][0].offsets.items()
        ):
            self.stored_events -= stored.popleft()[0].events


class ConsumerOffsets:
    """``OffsetStore`` on a confluent-kafka consumer: stored offsets are committed on the
    consumer's timer (STREAMSERVE_COMMIT_INTERVAL_MS), and also, without waiting, once
    ``unconfirmed`` says a commit is due (a commit interval of input time, or
    ``commit_every_events`` events, stored since the last one), so a worker catching up after
    an outage, many times faster than the offered rate, still commits about every commit
    interval of input. ``unconfirmed`` hears the consumer's commit reports (its ``on_commit``
    is the consumer's callback)."""

    def __init__(self, consumer: Consumer, unconfirmed: Unconfirmed) -> None:
        self.consumer = consumer
        self.unconfirmed = unconfirmed
        self._retried_at = 0.0

    @property
    def behind(self) -> bool:
        return self.unconfirmed.behind

    def sent(self, batch: SentBatch) -> None:
        self.unconfirmed.sent(batch)

    def store(self, batch: SentBatch) -> None:
        read = self.unconfirmed.completed(batch)
        offsets = [TopicPartition(t, p, o) for (t, p), o in read.offsets.items()]
        try:
            self.consumer.store_offsets(offsets=offsets)
        except KafkaException as exc:  # partition no longer ours: its new owner re-reads
            log.warning("could not store offsets %s: %s", offsets, exc.args[0].str())
            return
        self.unconfirmed.stored(read)
        if self.unconfirmed.due:
            self._commit(asynchronous=True)

    def commit(self) -> None:
        self._commit(asynchronous=False)

    def retry_commit(self) -> None:
        """While behind: ask for a commit again, at most once a commit interval; its report
        confirms what waits (or says nothing waits)."""
        now = time.monotonic()
        if now - self._retried_at >= self.unconfirmed.interval_ms / 1000:
            self._retried_at = now
            self._commit(asynchronous=True)

    def _commit(self, asynchronous: bool) -> None:
        self.unconfirmed.requested()
        try:
            if asynchronous:
                self.consumer.commit(asynchronous=True)  # reported to ``on_commit``
            else:
                committed = self.consumer.commit(asynchronous=False)
                self.unconfirmed.on_commit(None, committed or [])
        except KafkaException as exc:
            if exc.args[0].code() == KafkaError._NO_OFFSET:
                self.unconfirmed.nothing_to_commit()
            else:
                self.unconfirmed.failed(exc.args[0])
