"""Produce events to Kafka as fast as the client allows (pre-loading a topic)."""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import Producer

PRODUCER_CONFIG = {
    "linger.ms": 20,
    "batch.num.messages": 10_000,
    "queue.buffering.max.messages": 1_000_000,
    "enable.idempotence": True,
}


def preload(bootstrap: str, topic: str, records: Iterable[tuple[bytes, bytes]]) -> int:
    """Produce every (key, value) and wait until the broker acknowledged all; returns the count.

    Raises RuntimeError if any record was not delivered.
    """
    failures: list[str] = []

    def on_delivery(error: object, _message: object) -> None:
        if error is not None:
            failures.append(str(error))

    producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER_CONFIG})
    count = 0
    for key, value in records:
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        count += 1
        if count % 10_000 == 0:
            producer.poll(0)
    remaining = producer.flush(60)
    if remaining or failures:
        raise RuntimeError(f"{remaining} undelivered, {len(failures)} failed: {failures[:3]}")
    return count
