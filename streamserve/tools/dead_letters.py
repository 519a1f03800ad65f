"""`streamserve dead-letters`: what is on the dead-letter topic, and replaying a selection of it.

A selection is a failure-time range (the ``streamserve-failed-at`` header; the record's own
timestamp for dead letters written before that header existed) and error classes. Replay sends
each selected dead letter's original key, value, timestamp and headers (without streamserve's)
back to a topic, with a ``streamserve-replay-of`` header naming where it came from. It is a dry
run unless told to execute, and a selection is replayed once: the replay keeps its position on
the dead-letter topic in a consumer group named from the selection, and commits it after the
broker acknowledged every replayed record (a replay stopped in between repeats, at least once).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from streamserve.core import records as rec
from streamserve.errors import DeliveryError, StreamserveError
from streamserve.io.kafka import Cluster
from streamserve.tools.audit import header_map, header_pairs, scan_to_end

HEADER_REPLAY_OF = "streamserve-replay-of"
_OURS = "streamserve-"


@dataclass(frozen=True)
class Selection:
    """Dead letters that failed in [since_ms, until_ms) with one of ``classes`` (all if empty)."""

    since_ms: int | None = None
    until_ms: int | None = None
    classes: frozenset[str] = frozenset()

    def picks(self, failed_at_ms: int, error_class: str) -> bool:
        return (
            (self.since_ms is None or failed_at_ms >= self.since_ms)
            and (self.until_ms is None or failed_at_ms < self.until_ms)
            and (not self.classes or error_class in self.classes)
        )

    def replay_group(self, topic: str, target: str) -> str:
        """The consumer group that remembers how far this selection was replayed to ``target``."""
        spec = f"{topic}|{target}|{self.since_ms}|{self.until_ms}|{sorted(self.classes)}"
        return f"streamserve-replay-{hashlib.sha256(spec.encode()).hexdigest()[:16]}"


def parse_time(text: str) -> int:
    """Epoch milliseconds from ISO 8601 (``2026-12-04T08:00:00Z``; UTC when no zone is given)
    or from epoch milliseconds themselves."""
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is neither ISO 8601 nor epoch milliseconds") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def failed_at_ms(message: Message, headers: dict[str, str]) -> int:
    """When a dead letter failed: its header, else the record's timestamp."""
    stamped = headers.get(rec.HEADER_FAILED_AT)
    if stamped is not None and stamped.isdigit():
        return int(stamped)
    return int(message.timestamp()[1])


@dataclass
class DeadLetterCounts:
    """The selected dead letters of a topic, by class and by (class, reason)."""

    topic: str
    read: int = 0  # dead letters read, selected or not
    by_class: Counter[str] = field(default_factory=Counter)
    by_reason: Counter[tuple[str, str]] = field(default_factory=Counter)

    @property
    def selected(self) -> int:
        return sum(self.by_class.values())

    def add(self, error_class: str, reason: str) -> None:
        self.by_class[error_class] += 1
        self.by_reason[error_class, reason] += 1

    def as_dict(self) -> dict[str, object]:
        return {
            "topic": self.topic,
            "read": self.read,
            "selected": self.selected,
            "by_class": dict(self.by_class.most_common()),
            "by_reason": [
                {"error_class": c, "reason": r, "count": n}
                for (c, r), n in self.by_reason.most_common()
            ],
        }

    def render(self, top: int = 20) -> str:
        lines = [f"{self.topic}: {self.selected:,} selected of {self.read:,} dead letters read"]
        lines += [f"  {c:<20} {n:>10,}" for c, n in self.by_class.most_common()]
        if self.by_reason:
            lines.append("most frequent reasons:")
            lines += [f"  {n:>10,}  {c}: {r}" for (c, r), n in self.by_reason.most_common(top)]
        return "\n".join(lines)


def count(
    cluster: Cluster, topic: str, selection: Selection, timeout_s: float = 60.0
) -> DeadLetterCounts:
    """Count the selected dead letters of ``topic``, read from its beginning to its end."""
    counts = DeadLetterCounts(topic)
    _scan(cluster, topic, selection, lambda m, h: None, counts, timeout_s)
    return counts


@dataclass
class ReplayReport:
    """What a replay did (or, in a dry run, would do)."""

    counts: DeadLetterCounts
    target: str
    group: str
    executed: bool
    replayed: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            **self.counts.as_dict(),
            "target": self.target,
            "replay_group": self.group,
            "executed": self.executed,
            "replayed": self.replayed,
        }

    def render(self) -> str:
        head = self.counts.render()
        if not self.executed:
            return f"{head}\ndry run: {self.counts.selected:,} would go to {self.target}"
        return f"{head}\nreplayed {self.replayed:,} to {self.target} (group {self.group})"


def replay(
    cluster: Cluster,
    producer: Producer,
    topic: str,
    selection: Selection,
    target: str,
    execute: bool = False,
    timeout_s: float = 60.0,
) -> ReplayReport:
    """Replay the selected dead letters of ``topic`` that this selection has not replayed yet,
    through ``producer`` (the worker's: its idempotence and security options)."""
    group = selection.replay_group(topic, target)
    report = ReplayReport(DeadLetterCounts(topic), target, group, execute)
    reader = _resume(cluster, topic, group)
    refused: list[KafkaError] = []

    def on_delivery(error: KafkaError | None, _: Message) -> None:
        if error is not None:
            refused.append(error)

    def send(message: Message, headers: dict[str, str]) -> None:
        if not execute:
            return
        original = [(k, v) for k, v in header_pairs(message) if not k.startswith(_OURS)]
        where = f"{message.topic()}:{message.partition()}:{message.offset()}"
        kind, timestamp = message.timestamp()
        producer.produce(
            target,
            message.value(),
            message.key(),
            headers=[*original, (HEADER_REPLAY_OF, where)],
            timestamp=timestamp if kind and timestamp > 0 else 0,
            on_delivery=on_delivery,
        )
        producer.poll(0)
        report.replayed += 1

    try:
        ends = _scan(cluster, topic, selection, send, report.counts, timeout_s, reader)
        if not execute:
            return report
        left = producer.flush(timeout_s)
        if left or refused:
            reason = refused[0].str() if refused else f"{left} records unacknowledged"
            raise DeliveryError(f"replay to {target} stopped, nothing committed: {reason}")
        if ends:  # this selection is replayed up to here
            reader.commit(offsets=ends, asynchronous=False)
        return report
    finally:
        reader.close()


def _resume(cluster: Cluster, topic: str, group: str) -> Consumer:
    """A reader in ``group``, assigned to every partition of ``topic`` where the group left off
    (the beginning if it never committed)."""
    reader = cluster.reader(
        {"auto.offset.reset": "earliest", "enable.partition.eof": True}, group=group
    )
    metadata = reader.list_topics(topic, timeout=10).topics.get(topic)
    if metadata is None or metadata.error is not None:
        reader.close()
        raise StreamserveError(f"topic {topic} does not exist")
    partitions = [TopicPartition(topic, p) for p in metadata.partitions]
    committed = reader.committed(partitions, timeout=10)
    reader.assign([TopicPartition(topic, tp.partition, max(tp.offset, 0)) for tp in committed])
    return reader


def _scan(
    cluster: Cluster,
    topic: str,
    selection: Selection,
    on_selected: Callable[[Message, dict[str, str]], None],
    counts: DeadLetterCounts,
    timeout_s: float,
    reader: Consumer | None = None,
) -> list[TopicPartition]:
    """Read ``topic`` to its end, counting and handing on the selected dead letters; returns
    the position after the last record read in each partition."""
    ends: dict[int, int] = {}

    def visit(message: Message) -> None:
        headers = header_map(message)
        counts.read += 1
        ends[message.partition()] = message.offset() + 1  # type: ignore[index,operator]
        error_class = headers.get(rec.HEADER_ERROR_CLASS, "")
        if selection.picks(failed_at_ms(message, headers), error_class):
            counts.add(error_class, headers.get(rec.HEADER_ERROR_REASON, ""))
            on_selected(message, headers)

    missing = scan_to_end(cluster, [topic], visit, timeout_s, reader=reader)
    if missing:
        raise StreamserveError(f"topic {topic} does not exist")
    return [TopicPartition(topic, p, o) for p, o in sorted(ends.items())]
