"""Produce events to Kafka: as fast as the client allows (pre-loading), or on a rate profile."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from confluent_kafka import Producer

from streamserve_loadgen.load.profile import RateProfile

PRODUCER_CONFIG = {
    "linger.ms": 20,
    "batch.num.messages": 10_000,
    "queue.buffering.max.messages": 1_000_000,
    "enable.idempotence": True,
}


def preload(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[bytes, bytes]],
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Produce every (key, value) and wait until the broker acknowledged all; returns the count.

    ``on_progress(count)`` is called every 10,000 records. Raises RuntimeError if any record
    was not delivered.
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
            if on_progress is not None:
                on_progress(count)
    remaining = producer.flush(60)
    if remaining or failures:
        raise RuntimeError(f"{remaining} undelivered, {len(failures)} failed: {failures[:3]}")
    return count


LIVE_LINGER_MS = 5.0
LIVE_PRODUCER_CONFIG = {
    # A record's timestamp is taken at produce(), so its send delay counts as latency. 5 ms, not
    # less: at 1 ms Tansu falls behind the flood of tiny produce requests at 10k events/s.
    "linger.ms": LIVE_LINGER_MS,
    "batch.num.messages": 10_000,
    "queue.buffering.max.messages": 1_000_000,
    "acks": "all",
}
TICK_S = 0.001


def produce_at_rate(
    bootstrap: str,
    topic: str,
    profile: RateProfile,
    records: Iterator[tuple[bytes, bytes]],
    on_tick: Callable[[int, float], None] | None = None,
    linger_ms: float = LIVE_LINGER_MS,
) -> dict[str, Any]:
    """Produce ``profile.total`` records on the profile's schedule; returns what was offered.

    Every record's Kafka timestamp is the moment it was handed to the client, which is where the
    watcher measures end-to-end latency from. ``on_tick(sent, elapsed_s)`` is called about every
    100 ms (progress bars). ``max_behind`` is the largest backlog against the schedule: if it is
    large, this process could not keep the rate and the numbers measure it, not the target.
    ``first_offsets`` (partition -> offset of the first event sent there) tells a watcher which
    outputs are this run's.
    """
    config = {**LIVE_PRODUCER_CONFIG, "linger.ms": linger_ms}
    producer = Producer({"bootstrap.servers": bootstrap, **config})
    first_offsets: dict[int, int] = {}  # partition -> offset of the first event this run wrote

    def delivered(error: object, message: Any) -> None:
        if error is None:
            partition, offset = message.partition(), message.offset()
            first_offsets[partition] = min(offset, first_offsets.get(partition, offset))

    producer.list_topics(topic, timeout=10)  # connect and learn the partitions before the clock
    total = profile.total
    sent = max_behind = 0
    started = time.monotonic()
    next_tick = 0.0
    while sent < total:
        elapsed = time.monotonic() - started
        due = min(profile.due(elapsed), total)
        max_behind = max(max_behind, due - sent)
        while sent < due:
            key, value = next(records)
            while True:
                try:
                    producer.produce(topic, value, key, on_delivery=delivered)
                    break
                except BufferError:  # the client's queue is full: let it drain
                    producer.poll(0.01)
            sent += 1
        producer.poll(0)
        if on_tick is not None and elapsed >= next_tick:
            on_tick(sent, elapsed)
            next_tick = elapsed + 0.1
        time.sleep(TICK_S)
    seconds = time.monotonic() - started
    remaining = producer.flush(60)
    if remaining:
        raise RuntimeError(f"{remaining} records were not delivered to {topic}")
    return {
        "sent": sent,
        "seconds": round(seconds, 3),
        "events_per_s": round(sent / seconds, 1),
        "max_behind": max_behind,
        "first_offsets": first_offsets,
    }
