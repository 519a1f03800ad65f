"""The partitions a worker holds and which of them it paused; moving a consumer back over its
partitions, so records in hand are read again; naming partitions in logs."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

log = logging.getLogger("streamserve.worker")


class Assignment:
    """The partitions a consumer holds, and the ones paused while scoring is behind (Redis
    slow or down, the Schema Registry away): a partition assigned meanwhile is paused too.
    ``on_count`` hears how many partitions are held after every change."""

    def __init__(self, consumer: Consumer, on_count: Callable[[int], None]) -> None:
        self._consumer = consumer
        self._on_count = on_count
        self._held: set[tuple[str, int]] = set()
        self._paused: list[TopicPartition] = []

    @property
    def paused(self) -> bool:
        return bool(self._paused)

    @property
    def held(self) -> list[tuple[str, int]]:
        return sorted(self._held)

    def assigned(self, partitions: list[TopicPartition]) -> None:
        """New partitions wait with the others while paused, and flow otherwise: librdkafka
        keeps a partition's pause across a revoke, so one paused here, revoked, then assigned
        back after a resume would never be fetched again."""
        self._held.update((tp.topic, tp.partition) for tp in partitions)
        self._on_count(len(self._held))
        if not partitions:
            return
        if self._paused:  # still waiting (scoring, a commit): the new ones wait too
            self._consumer.pause(partitions)
            self._paused += partitions
        else:
            self._consumer.resume(partitions)

    def unassigned(self, partitions: list[TopicPartition]) -> None:
        self._held.difference_update((tp.topic, tp.partition) for tp in partitions)
        self._on_count(len(self._held))

    def pause(self, why: str = "scoring is behind (feature store slow or down)") -> None:
        """Pause every partition held (a resume costs librdkafka about a second before records
        flow again: for waits longer than a moment)."""
        if self._paused:
            return
        self._paused = self._consumer.assignment()
        self._consumer.pause(self._paused)
        log.info("%s: paused %s", why, names(self._paused))

    def resume(self) -> None:
        if not self._paused:
            return
        self._consumer.resume(self._consumer.assignment())
        log.info("resumed %s", names(self._paused))
        self._paused = []


def seek_to_first(consumer: Consumer, records: Sequence[Message]) -> None:
    """Back to the first of ``records`` in each partition still assigned (a revoked one's next
    owner starts from the committed offset, which is behind them)."""
    first: dict[tuple[str, int], int] = {}
    for m in records:
        first.setdefault((m.topic(), m.partition()), m.offset())  # type: ignore[arg-type]
    ours = {(tp.topic, tp.partition) for tp in consumer.assignment()}
    for (topic, partition), offset in first.items():
        if (topic, partition) in ours:
            consumer.seek(TopicPartition(topic, partition, offset))


def seek_to_committed(consumer: Consumer) -> list[TopicPartition]:
    """Every assigned partition back to its committed offset; returns them."""
    assigned = consumer.assignment()
    for tp in consumer.committed(assigned, timeout=30):
        # nothing committed yet: from the start (never past a record not yet scored)
        offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
        consumer.seek(TopicPartition(tp.topic, tp.partition, offset))
    return assigned


def names(partitions: list[TopicPartition]) -> str:
    return ", ".join(listed(partitions)) or "nothing"


def listed(partitions: list[TopicPartition]) -> list[str]:
    return [f"{tp.topic}[{tp.partition}]" for tp in partitions]
