"""The confluent runtime's offset store: a completed batch's offsets are stored on the consumer,
which commits them on its timer (``enable.auto.commit`` commits only stored offsets), and when
the checkpoint asks (revoke, shutdown)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from streamserve.core.batch import Position
from streamserve.runtime.pipeline import SentBatch

log = logging.getLogger("streamserve.worker")


def next_offsets(positions: Sequence[Position]) -> dict[tuple[str, int], int]:
    """The offset to commit per (topic, partition): one past the batch's last record there."""
    last = {(topic, partition): offset for topic, partition, offset in positions}  # last wins
    return {tp: offset + 1 for tp, offset in last.items()}


class ConsumerOffsets:
    """``OffsetStore`` on a confluent-kafka consumer: stored offsets are committed on the
    consumer's timer (STREAMSERVE_COMMIT_INTERVAL_MS), and also, without waiting, once
    ``commit_every_events`` events were stored since the last commit. At the offered rate the
    timer commits first; catching up after an outage, the worker runs many times faster, and
    the count keeps what a kill can make it repeat to ``commit_every_events``."""

    def __init__(self, consumer: Consumer, commit_every_events: int) -> None:
        self.consumer = consumer
        self._commit_every = commit_every_events
        self._stored = 0  # events stored since this object last committed

    def store(self, batch: SentBatch) -> None:
        offsets = [TopicPartition(t, p, o) for (t, p), o in next_offsets(batch.positions).items()]
        try:
            self.consumer.store_offsets(offsets=offsets)
        except KafkaException as exc:  # partition no longer ours: its new owner re-reads
            log.warning("could not store offsets %s: %s", offsets, exc.args[0].str())
            return
        self._stored += len(batch.positions)
        if self._stored >= self._commit_every:
            self._commit(asynchronous=True)

    def commit(self) -> None:
        self._commit(asynchronous=False)

    def _commit(self, asynchronous: bool) -> None:
        self._stored = 0
        try:
            if asynchronous:
                self.consumer.commit(asynchronous=True)
            else:
                self.consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("commit failed: %s", exc.args[0].str())
