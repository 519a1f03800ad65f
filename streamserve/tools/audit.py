"""Read topics back and reconcile them: `streamserve audit` and the load tools' accounting.

Counts come from reading every record, not from watermarks: some Kafka-compatible brokers (Tansu)
answer ListOffsets with the base offset of the last batch instead of the log end.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import msgspec
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from streamserve.core.decoding.formats import WriterSchemas
from streamserve.core.decoding.wire import HEADER, HEADER_BYTES, MAGIC_BYTE
from streamserve.core.records import (
    HEADER_ERROR_CLASS,
    HEADER_ERROR_REASON,
    HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_TOPIC,
    Provenance,
)
from streamserve.errors import StreamserveError
from streamserve.io.kafka import Cluster


def from_beginning(
    cluster: Cluster, topics: list[str], fetch_wait_ms: int = 10, eof: bool = False
) -> tuple[Consumer, list[str]]:
    """A consumer assigned to every partition of ``topics`` at offset 0 (the beginning of a
    fresh topic), in a group of its own; also returns the topics that do not exist. With ``eof``
    it reports reaching the end of each partition."""
    consumer = cluster.reader(
        {
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
    cluster: Cluster, topics: list[str], expected: int, timeout_s: float = 60.0, idle_s: float = 3.0
) -> dict[str, list[Message]]:
    """Every record of ``topics`` from the beginning, until ``expected`` records were read and
    nothing more arrives for ``idle_s``, or ``timeout_s`` passes."""
    consumer, _missing = from_beginning(cluster, topics)
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


def scan_to_end(
    cluster: Cluster,
    topics: list[str],
    visit: Callable[[Message], None],
    timeout_s: float = 60,
    reader: Consumer | None = None,
) -> list[str]:
    """Pass every record of ``topics`` to ``visit``, up to the end of each partition as the reader
    finds it; returns the topics that do not exist (they read as empty). ``reader``: a consumer
    already assigned where to start, with ``enable.partition.eof`` (left open), instead of one
    from the beginning.

    The end comes from fetch responses (end-of-partition events), which brokers get right even
    where ListOffsets is off. Records are not kept, so a topic of millions costs no memory here.
    Gives up when nothing arrives for ``timeout_s``, naming where each unfinished partition is.
    """
    consumer, missing = (reader, []) if reader else from_beginning(cluster, topics, eof=True)
    try:
        position = {(tp.topic, tp.partition): -1 for tp in consumer.assignment()}
        unfinished = set(position)
        deadline = time.monotonic() + timeout_s
        while unfinished:
            if time.monotonic() > deadline:
                behind = ", ".join(
                    f"{t}[{p}] after offset {position[t, p]}" for t, p in sorted(unfinished)
                )
                raise StreamserveError(
                    f"reading {topics}: nothing arrived for {timeout_s:g} s; "
                    f"not at the end: {behind}"
                )
            batch = consumer.consume(10_000, 0.2)
            if batch:
                deadline = time.monotonic() + timeout_s
            for message in batch:
                error = message.error()
                where: tuple[str, int] = (message.topic(), message.partition())  # type: ignore[assignment]
                if error is None:
                    visit(message)
                    position[where] = message.offset()  # type: ignore[assignment]
                    unfinished.add(where)  # more may have arrived
                elif error.code() == KafkaError._PARTITION_EOF:
                    unfinished.discard(where)
                else:
                    raise StreamserveError(f"reading {topics}: {error.str()}")
        return missing
    finally:
        if reader is None:
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
    cluster: Cluster,
    input_topic: str,
    predictions: str,
    dead_letters: str,
    timeout_s: float = 120,
    schemas: WriterSchemas | None = None,
) -> AuditReport:
    """Match every record of ``input_topic`` with its outcomes by their provenance.

    Outputs that came from another topic (shared output topics) are not counted. ``schemas``
    reads predictions written in a Schema Registry format (STREAMSERVE_OUTPUT_FORMAT).
    """
    sources: set[tuple[int, int]] = set()
    if scan_to_end(cluster, [input_topic], lambda m: sources.add(_where(m)), timeout_s):
        raise StreamserveError(f"input topic {input_topic} does not exist")
    outcomes: Counter[tuple[int, int]] = Counter()
    classes: Counter[str] = Counter()
    counted = {predictions: 0, dead_letters: 0}
    without_reason = 0
    dead_lettered: set[tuple[int, int]] = set()

    def count(message: Message) -> None:
        nonlocal without_reason
        where = provenance(message, schemas)
        if where is None or where[0] != input_topic:
            return
        topic = message.topic()
        counted[topic] += 1  # type: ignore[index]
        source = where[1], where[2]
        outcomes[source] += 1
        if topic == dead_letters:
            headers = header_map(message)
            dead_lettered.add(source)
            classes[headers.get(HEADER_ERROR_CLASS, "")] += 1
            without_reason += not headers.get(HEADER_ERROR_REASON)

    scan_to_end(cluster, [predictions, dead_letters], count, timeout_s)
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


def _where(message: Message) -> tuple[int, int]:
    return message.partition(), message.offset()  # type: ignore[return-value]


def header_pairs(message: Message) -> list[tuple[str, str | bytes | None]]:
    """A consumed record's headers as (name, bytes) pairs, in their order."""
    raw = message.headers() or []
    return list(raw.items() if isinstance(raw, dict) else raw)


def header_map(message: Message) -> dict[str, str]:
    """A consumed record's headers as text."""
    return {k: v.decode() if isinstance(v, bytes) else str(v) for k, v in header_pairs(message)}


_decode_provenance = msgspec.json.Decoder(Provenance).decode


def provenance(
    message: Message, schemas: WriterSchemas | None = None
) -> tuple[str, int, int] | None:
    """(topic, partition, offset) of the input record an output came from: a dead letter's
    provenance headers, or a prediction's provenance fields (JSON, or with ``schemas`` a
    registry format); None for anything else."""
    headers = header_map(message)
    if HEADER_SOURCE_TOPIC in headers:
        return (
            headers[HEADER_SOURCE_TOPIC],
            int(headers[HEADER_SOURCE_PARTITION]),
            int(headers[HEADER_SOURCE_OFFSET]),
        )
    value = message.value() or b""
    if schemas is not None and value[:1] == bytes([MAGIC_BYTE]):
        return _framed_provenance(value, schemas)
    try:
        found = _decode_provenance(value)
    except msgspec.MsgspecError:
        return None
    return found.source_topic, found.source_partition, found.source_offset


def _framed_provenance(value: bytes, schemas: WriterSchemas) -> tuple[str, int, int] | None:
    """A prediction in the Confluent wire format, read with its writer schema."""
    _, schema_id = HEADER.unpack_from(value)
    schema = schemas.resolve({schema_id}).get(schema_id)
    if schema is None:
        raise StreamserveError(f"a prediction names schema id {schema_id}, not in the registry")
    try:
        if schema.read is None:  # JSON Schema: the JSON prediction after the framing
            found = _decode_provenance(value[HEADER_BYTES:])
            return found.source_topic, found.source_partition, found.source_offset
        fields = schema.read(value)
        return fields["source_topic"], int(fields["source_partition"]), int(fields["source_offset"])
    except (msgspec.MsgspecError, LookupError, ValueError, TypeError):
        return None


def source_of(message: Message) -> tuple[int, int]:
    """(partition, offset) of the input record an output came from."""
    where = provenance(message)
    if where is None:
        raise StreamserveError(f"record without provenance on {message.topic()}")
    return where[1], where[2]
