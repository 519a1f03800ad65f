"""`streamserve lag`: a consumer group's committed offset, log end and lag per partition.

The log end comes from a fetch response, not from ListOffsets alone: some Kafka-compatible brokers
(Tansu) answer ListOffsets with the base offset of the last record batch. The reader starts at
what ListOffsets said and reads to the end-of-partition event (at most one batch), then takes the
high watermark that fetch reported. On Apache Kafka that reads nothing.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, TopicPartition

from streamserve.errors import StreamserveError
from streamserve.io.kafka import Cluster


@dataclass(frozen=True)
class PartitionOffsets:
    partition: int
    committed: int | None  # None: the group has committed nothing here
    log_start: int
    log_end: int

    @property
    def lag(self) -> int:
        """Records the group has still to read (from the log start if it committed nothing)."""
        start = self.log_start if self.committed is None else self.committed
        return max(self.log_end - start, 0)


@dataclass(frozen=True)
class GroupLag:
    group: str
    topic: str
    partitions: list[PartitionOffsets]

    @property
    def total(self) -> int:
        return sum(p.lag for p in self.partitions)

    def as_dict(self) -> dict[str, object]:
        return {
            "group": self.group,
            "topic": self.topic,
            "partitions": [{**asdict(p), "lag": p.lag} for p in self.partitions],
            "total_lag": self.total,
        }

    def render(self) -> str:
        lines = [
            f"group {self.group}, topic {self.topic}",
            f"{'partition':>9}  {'committed':>12}  {'log end':>12}  {'lag':>10}",
        ]
        for p in self.partitions:
            committed = "-" if p.committed is None else f"{p.committed:,}"
            lines.append(f"{p.partition:>9}  {committed:>12}  {p.log_end:>12,}  {p.lag:>10,}")
        lines.append(f"total lag {self.total:,}")
        return "\n".join(lines)


def group_lag(cluster: Cluster, group: str, topic: str, timeout_s: float = 10.0) -> GroupLag:
    """Committed offsets of ``group`` on ``topic`` against the log end of each partition.

    The reader uses the group's id to look up its commits but never joins the group (it assigns
    partitions itself) and never commits, so the group's members are not disturbed.
    """
    consumer = cluster.reader({"enable.partition.eof": True}, group)
    try:
        try:
            metadata = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        except KafkaException as exc:
            raise StreamserveError(f"cannot reach the Kafka cluster: {exc.args[0].str()}") from None
        if metadata is None or metadata.error is not None or not metadata.partitions:
            raise StreamserveError(f"topic {topic} does not exist")
        tps = [TopicPartition(topic, p) for p in sorted(metadata.partitions)]
        committed = {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=timeout_s)}
        listed = {tp.partition: consumer.get_watermark_offsets(tp, timeout_s) for tp in tps}
        ends = _log_ends(consumer, topic, listed, timeout_s)
        return GroupLag(
            group,
            topic,
            [
                PartitionOffsets(
                    p,
                    None if committed[p] == OFFSET_INVALID else committed[p],
                    listed[p][0],
                    ends[p],
                )
                for p in sorted(listed)
            ],
        )
    finally:
        consumer.close()


def _log_ends(
    consumer: Consumer, topic: str, listed: dict[int, tuple[int, int]], timeout_s: float
) -> dict[int, int]:
    """Read from each partition's listed end to its end-of-partition event; the high watermark
    that fetch reported is the log end."""
    consumer.assign([TopicPartition(topic, p, max(high, low)) for p, (low, high) in listed.items()])
    unfinished = set(listed)
    deadline = time.monotonic() + timeout_s
    while unfinished and time.monotonic() < deadline:
        for message in consumer.consume(1_000, 0.2):
            error = message.error()
            if error is not None and error.code() == KafkaError._PARTITION_EOF:
                unfinished.discard(message.partition())
    if unfinished:
        raise StreamserveError(
            f"no end of partition {sorted(unfinished)} of {topic} within {timeout_s:g} s"
        )
    ends = {}
    for partition, (_, listed_high) in listed.items():
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
        ends[partition] = max(high, listed_high)
    return ends
