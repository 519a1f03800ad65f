"""The worker's partition bookkeeping: what it holds and what it paused (a fake consumer of the
three calls it makes)."""

from __future__ import annotations

from confluent_kafka import TopicPartition

from streamserve.runtime.partitions import Assignment


class Consumer:
    def __init__(self) -> None:
        self.owned: list[TopicPartition] = []
        self.paused: set[int] = set()

    def assignment(self) -> list[TopicPartition]:
        return list(self.owned)

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused.update(tp.partition for tp in partitions)

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused.difference_update(tp.partition for tp in partitions)


def test_a_partition_assigned_while_paused_waits_with_the_others() -> None:
    consumer, counts = Consumer(), list[int]()
    partitions = Assignment(consumer, counts.append)  # type: ignore[arg-type]
    consumer.owned = [TopicPartition("in", 0), TopicPartition("in", 1)]
    partitions.assigned(consumer.owned)
    partitions.pause()
    assert partitions.paused and consumer.paused == {0, 1}
    consumer.owned.append(TopicPartition("in", 2))
    partitions.assigned(consumer.owned[2:])  # a rebalance while scoring is behind
    assert consumer.paused == {0, 1, 2}
    partitions.unassigned(consumer.owned[:1])
    consumer.owned = consumer.owned[1:]
    consumer.paused.discard(0)  # a revoked partition leaves the consumer's state
    partitions.resume()
    assert not partitions.paused and consumer.paused == set()
    assert partitions.held == [("in", 1), ("in", 2)]
    assert counts == [2, 3, 2]
