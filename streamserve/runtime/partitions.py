"""Moving a consumer back over its partitions, so records in hand are read again, and naming
partitions in logs."""

from __future__ import annotations

from collections.abc import Sequence

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition


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
