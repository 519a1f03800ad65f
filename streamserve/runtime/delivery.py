"""Delivery of a batch's outputs: produce them, and store the input offsets they cover only once
the broker acknowledged every one (ARCHITECTURE.md, Delivery semantics). At most one batch waits
for acknowledgement, so offsets are stored in batch order."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from streamserve.core.batch import OutputRecord
from streamserve.core.window import Trigger
from streamserve.errors import DeliveryError

log = logging.getLogger("streamserve.worker")

FLUSH_SLICE_S = 1.0


@dataclass(frozen=True)
class InFlight:
    """A batch whose outputs were produced but not yet acknowledged by the broker."""

    next_offsets: dict[tuple[str, int], int]  # (topic, partition) -> offset to commit
    events: int
    predictions: int
    dead_letters: int
    trigger: Trigger


def undelivered(errors: list[KafkaError]) -> DeliveryError:
    """The error for output records the broker refused (or that timed out)."""
    return DeliveryError(f"{len(errors)} output records were not delivered: {errors[0].str()}")


def next_offsets(records: list[Message]) -> dict[tuple[str, int], int]:
    """The offset to commit per (topic, partition): one past the batch's last record there."""
    last = {(m.topic(), m.partition()): m.offset() for m in records}  # later records win
    return {tp: offset + 1 for tp, offset in last.items()}  # type: ignore[misc,operator]


class Delivery:
    """The producer side of the worker, and the offsets it may store for the consumer."""

    def __init__(self, producer: Producer, consumer: Consumer, errors: list[KafkaError]) -> None:
        self.producer = producer
        self.consumer = consumer
        self.in_flight: InFlight | None = None
        self._errors = errors  # filled by the producer's delivery callback

    def produce(self, topic: str, outputs: list[OutputRecord]) -> None:
        produce = self.producer.produce
        for key, value, headers in outputs:
            while True:
                try:
                    produce(topic, value, key, headers=headers)
                    break
                except BufferError:  # local queue full: let deliveries drain, then retry
                    self.producer.poll(0.05)

    def settle(self, wait: bool = True) -> InFlight | None:
        """Once every output of the batch in flight is acknowledged, store its offsets and
        return it.

        With ``wait`` false it only checks (for an idle loop); otherwise it waits. A delivery
        failure raises DeliveryError and leaves the batch's offsets unstored, so a restart
        re-reads it.
        """
        batch = self.in_flight
        if batch is None:
            return None
        if wait:
            while self.producer.flush(FLUSH_SLICE_S) > 0:
                log.info("waiting for the broker to acknowledge outputs")
        else:
            self.producer.poll(0)
            if len(self.producer) > 0:
                return None
        if self._errors:  # kept: the batch stays in flight, and every later settle fails too
            raise undelivered(self._errors)
        self._store_offsets(batch.next_offsets)
        self.in_flight = None
        return batch

    def _store_offsets(self, next_offsets: dict[tuple[str, int], int]) -> None:
        offsets = [TopicPartition(t, p, o) for (t, p), o in next_offsets.items()]
        try:
            self.consumer.store_offsets(offsets=offsets)
        except KafkaException as exc:  # partition no longer ours: its new owner re-reads
            log.warning("could not store offsets %s: %s", offsets, exc.args[0].str())
