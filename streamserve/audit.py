"""Read topics back and reconcile them: `streamserve audit` and the load tools' accounting.

Counts come from reading every record, not from watermarks: some Kafka-compatible brokers (Tansu)
answer ListOffsets with the base offset of the last batch instead of the log end.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from streamserve.core.records import (
    HEADER_ERROR_CLASS,
    HEADER_ERROR_REASON,
    HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_TOPIC,
)
from streamserve.errors import StreamserveError


def from_beginning(
    bootstrap: str, topics: list[str], name: str, fetch_wait_ms: int = 10, eof: bool = False
) -> tuple[Consumer, list[str]]:
    """A consumer assigned to every partition of ``topics`` at offset 0 (the beginning of a
    fresh topic), in a group of its own; also returns the topics that do not exist. With ``eof``
    it reports reaching the end of each partition."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"streamserve-{name}-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",  # offset 0 already deleted: start at the first left
            "fetch.wait.max.ms": fetch_wait_ms,
            "enable.partition.eof": eof,
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


def read_to_end(
    bootstrap: str, topics: list[str], timeout_s: float = 60
) -> tuple[dict[str, list[Message]], list[str]]:
    """Every record of ``topics`` up to the end of each partition as the reader finds it, and the
    topics that do not exist (they read as empty).

    The end comes from fetch responses (end-of-partition events), which brokers get right even
    where ListOffsets is off. Gives up when nothing arrives for ``timeout_s``.
    """
    consumer, missing = from_beginning(bootstrap, topics, "audit", eof=True)
    try:
        found: dict[str, list[Message]] = {t: [] for t in topics}
        unfinished: set[tuple[str | None, int | None]] = {
            (tp.topic, tp.partition) for tp in consumer.assignment()
        }
        deadline = time.monotonic() + timeout_s
        while unfinished:
            if time.monotonic() > deadline:
                raise StreamserveError(f"reading {topics}: nothing arrived for {timeout_s} s")
            batch = consumer.consume(10_000, 0.2)
            if batch:
                deadline = time.monotonic() + timeout_s
            for message in batch:
                error = message.error()
                where = (message.topic(), message.partition())
                if error is None:
                    found[where[0]].append(message)  # type: ignore[index]
                    unfinished.add(where)  # more may have arrived
                elif error.code() == KafkaError._PARTITION_EOF:
                    unfinished.discard(where)
                else:
                    raise StreamserveError(f"reading {topics}: {error.str()}")
        return found, missing
    finally:
        consumer.close()


@dataclass
class AuditReport:
    """How the records of an input topic ended: each should have exactly one outcome."""

    input_topic: str
    events: int
    predictions: int
    dead_letters: int
    dead_letters_by_class: dict[str, int]
    dead_letters_without_reason: int
    dead_lettered: int  # distinct input records with a dead letter
    lost: int  # inputs with no prediction and no dead letter
    duplicated: int  # inputs with more than one outcome
    extra_outputs: int  # outcomes beyond the first, summed over the duplicated inputs
    lost_examples: list[tuple[int, int]] = field(default_factory=list)  # (partition, offset)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.dead_letters_without_reason == 0

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def render(self) -> str:
        """A few lines for a terminal."""
        classes = ", ".join(f"{k} {v:,}" for k, v in self.dead_letters_by_class.items())
        lines = [
            f"input {self.input_topic}: {self.events:,} records",
            f"  predictions   {self.predictions:,}",
            f"  dead letters  {self.dead_letters:,}" + (f" ({classes})" if classes else ""),
            f"  lost          {self.lost:,}"
            + (f"  e.g. {self.lost_examples}" if self.lost else ""),
            f"  duplicated    {self.duplicated:,} ({self.extra_outputs:,} extra outputs)",
        ]
        if self.dead_letters_without_reason:
            lines.append(f"  dead letters without a reason: {self.dead_letters_without_reason:,}")
        lines.append("OK" if self.ok else "FAILED")
        return "\n".join(lines)


def audit(
    bootstrap: str, input_topic: str, predictions: str, dead_letters: str, timeout_s: float = 120
) -> AuditReport:
    """Match every record of ``input_topic`` with its outcomes by provenance headers.

    Outputs that came from another topic (shared output topics) are not counted.
    """
    found, missing = read_to_end(bootstrap, [input_topic], timeout_s)
    if missing:
        raise StreamserveError(f"input topic {input_topic} does not exist")
    inputs = found[input_topic]
    found, _ = read_to_end(bootstrap, [predictions, dead_letters], timeout_s)
    sources: set[tuple[int, int]] = {(m.partition(), m.offset()) for m in inputs}  # type: ignore[misc]
    outcomes: Counter[tuple[int, int]] = Counter()
    classes: Counter[str] = Counter()
    counted = {predictions: 0, dead_letters: 0}
    without_reason = 0
    dead_lettered: set[tuple[int, int]] = set()
    for topic in (predictions, dead_letters):
        for message in found[topic]:
            headers = header_map(message)
            if headers.get(HEADER_SOURCE_TOPIC) != input_topic:
                continue
            counted[topic] += 1
            source = int(headers[HEADER_SOURCE_PARTITION]), int(headers[HEADER_SOURCE_OFFSET])
            outcomes[source] += 1
            if topic == dead_letters:
                dead_lettered.add(source)
                classes[headers.get(HEADER_ERROR_CLASS, "")] += 1
                without_reason += not headers.get(HEADER_ERROR_REASON)
    lost = sorted(sources - outcomes.keys())
    repeated = [n for key, n in outcomes.items() if n > 1 and key in sources]
    return AuditReport(
        input_topic=input_topic,
        events=len(sources),
        predictions=counted[predictions],
        dead_letters=counted[dead_letters],
        dead_letters_by_class=dict(sorted(classes.items())),
        dead_letters_without_reason=without_reason,
        dead_lettered=len(dead_lettered & sources),
        lost=len(lost),
        duplicated=len(repeated),
        extra_outputs=sum(repeated) - len(repeated),
        lost_examples=lost[:10],
    )


def header_map(message: Message) -> dict[str, str]:
    """A consumed record's headers as text."""
    raw = message.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    return {k: v.decode() if isinstance(v, bytes) else str(v) for k, v in pairs}


def source_of(message: Message) -> tuple[int, int]:
    """(partition, offset) of the input record an output came from, by its provenance headers."""
    headers = header_map(message)
    return int(headers[HEADER_SOURCE_PARTITION]), int(headers[HEADER_SOURCE_OFFSET])
