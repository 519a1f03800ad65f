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
    partitions.resume()
    assert not partitions.paused and consumer.paused == {0}  # librdkafka keeps it paused
    assert partitions.held == [("in", 1), ("in", 2)]
    assert counts == [2, 3, 2]


def test_a_partition_paused_then_revoked_flows_again_when_assigned_back() -> None:
    """librdkafka keeps a partition's pause across a revoke: assigned back after the worker
    resumed, it would never be fetched again (a chaos run lost a partition's tail so)."""
    consumer = Consumer()
    partitions = Assignment(consumer, lambda _: None)  # type: ignore[arg-type]
    consumer.owned = [TopicPartition("in", 0), TopicPartition("in", 1)]
    partitions.assigned(consumer.owned)
    partitions.pause()
    partitions.unassigned(consumer.owned[:1])  # revoked while paused
    consumer.owned = consumer.owned[1:]
    partitions.resume()
    assert consumer.paused == {0}
    consumer.owned.append(TopicPartition("in", 0))
    partitions.assigned(consumer.owned[-1:])
    assert consumer.paused == set()
