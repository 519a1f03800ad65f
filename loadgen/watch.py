"""Read output topics back: the accounting side of a load run.

Counts come from reading every record, not from watermarks: some Kafka-compatible brokers (Tansu)
answer ListOffsets with the base offset of the last batch instead of the log end.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from streamserve.core.records import (
    HEADER_ERROR_CLASS,
    HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_PARTITION,
)


def from_beginning(
    bootstrap: str, topics: list[str], name: str, fetch_wait_ms: int = 10
) -> tuple[Consumer, list[str]]:
    """A consumer assigned to every partition of ``topics`` at offset 0 (the beginning of a
    fresh topic), in a group of its own; also returns the topics that do not exist."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"streamserve-{name}-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": fetch_wait_ms,
        }
    )
    metadata = consumer.list_topics(timeout=10).topics
    consumer.assign(
        [TopicPartition(t, p, 0) for t in topics if t in metadata for p in metadata[t].partitions]
    )
    return consumer, [t for t in topics if t not in metadata]


def read_topics(
    bootstrap: str, topics: list[str], expected: int, timeout_s: float = 60.0, idle_s: float = 3.0
) -> dict[str, list[Message]]:
    """Every record of ``topics`` from the beginning, until ``expected`` records were read and
    nothing more arrives for ``idle_s``, or ``timeout_s`` passes."""
    consumer, _missing = from_beginning(bootstrap, topics, "reader")
    try:
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


def account(
    bootstrap: str, input_topic: str, predictions: str, dead_letters: str, timeout_s: float = 120
) -> dict[str, object]:
    """Match every input record with its outcomes by provenance headers.

    lost: inputs with no prediction and no dead letter; duplicated: inputs with more than one.
    """
    inputs = read_topics(bootstrap, [input_topic], 0, timeout_s, idle_s=1.0)[input_topic]
    found = read_topics(bootstrap, [predictions, dead_letters], len(inputs), timeout_s, 1.0)
    outcomes: Counter[tuple[int, int]] = Counter()
    classes: Counter[str] = Counter()
    for topic in (predictions, dead_letters):
        for message in found[topic]:
            outcomes[source_of(message)] += 1
            if topic == dead_letters:
                classes[header_map(message)[HEADER_ERROR_CLASS]] += 1
    sources = {(m.partition(), m.offset()) for m in inputs}
    return {
        "events": len(sources),
        "predictions": len(found[predictions]),
        "dead_letters": len(found[dead_letters]),
        "dead_letters_by_class": dict(sorted(classes.items())),
        "lost": len(sources - outcomes.keys()),
        "duplicated": sum(1 for key, n in outcomes.items() if n > 1 and key in sources),
    }


def header_map(message: Message) -> dict[str, str]:
    """A consumed record's headers as text."""
    raw = message.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    return {k: v.decode() if isinstance(v, bytes) else str(v) for k, v in pairs}


def source_of(message: Message) -> tuple[int, int]:
    """(partition, offset) of the input record an output came from, by its provenance headers."""
    headers = header_map(message)
    return int(headers[HEADER_SOURCE_PARTITION]), int(headers[HEADER_SOURCE_OFFSET])
