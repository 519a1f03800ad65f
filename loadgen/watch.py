"""Read output topics back: the accounting side of a load run.

Counts come from reading every record, not from watermarks: some Kafka-compatible brokers (Tansu)
answer ListOffsets with the base offset of the last batch instead of the log end.
"""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition


def read_topics(
    bootstrap: str, topics: list[str], expected: int, timeout_s: float = 60.0, idle_s: float = 3.0
) -> dict[str, list[Message]]:
    """Every record of ``topics`` from the beginning, until ``expected`` records were read and
    nothing more arrives for ``idle_s``, or ``timeout_s`` passes."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"streamserve-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
        }
    )
    try:
        metadata = consumer.list_topics(timeout=10).topics
        consumer.assign(
            [
                TopicPartition(t, p, 0)  # offset 0: the beginning of a fresh topic
                for t in topics
                for p in (metadata[t].partitions if t in metadata else {})
            ]
        )
        found: dict[str, list[Message]] = {t: [] for t in topics}
        total = 0
        deadline = time.monotonic() + timeout_s
        last_seen = time.monotonic()
        while time.monotonic() < deadline:
            batch = consumer.consume(10_000, 0.2)
            for message in batch:
                error = message.error()
                if error is None:
                    found[message.topic()].append(message)  # type: ignore[index]
                    total += 1
                elif error.code() != KafkaError._PARTITION_EOF:
                    raise RuntimeError(f"reading {topics}: {error.str()}")
            if batch:
                last_seen = time.monotonic()
            elif total >= expected and time.monotonic() - last_seen >= idle_s:
                break
        return found
    finally:
        consumer.close()
