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
    """``OffsetStore`` on a confluent-kafka consumer."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer

    def store(self, batch: SentBatch) -> None:
        offsets = [TopicPartition(t, p, o) for (t, p), o in next_offsets(batch.positions).items()]
        try:
            self.consumer.store_offsets(offsets=offsets)
        except KafkaException as exc:  # partition no longer ours: its new owner re-reads
            log.warning("could not store offsets %s: %s", offsets, exc.args[0].str())

    def commit(self) -> None:
        try:
            self.consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("commit failed: %s", exc.args[0].str())
