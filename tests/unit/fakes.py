"""Fakes of the consumed records, the feature store and the producer, for the pure unit tests of
the pipeline and the checkpoint (no broker, no Redis)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from confluent_kafka import KafkaError

from streamserve.core.batch import BatchScorer
from streamserve.core.features import StoreKey, StoreRows
from streamserve.core.model import ModelBundle
from streamserve.io.sink import KafkaSink
from streamserve.io.store import ResilientStore
from streamserve.runtime.models import LoadedModel, ServingModels
from streamserve.runtime.pipeline import BatchPipeline, OutputTopics
from streamserve.runtime.scoring import ScoringThreads

TOPICS = OutputTopics("predictions", "dead-letters", "shadow")


@dataclass
class Record:
    """Satisfies the core's SourceRecord protocol like a confluent_kafka.Message."""

    _value: bytes | None
    _offset: int
    _key: bytes | None = b"k"
    _timestamp: int = 1_000
    _partition: int = 3

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def topic(self) -> str:
        return "events"

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return (1, self._timestamp)

    def headers(self) -> list[tuple[str, bytes]]:
        return [("trace", b"t-1")]


class MemoryStore:
    def __init__(self, rows: dict[str, np.ndarray], width: int) -> None:
        self.rows, self.width = rows, width
        self.calls: list[list[StoreKey]] = []

    def fetch(self, keys: list[StoreKey]) -> StoreRows:
        self.calls.append(keys)
        rows = np.full((len(keys), self.width), np.nan, dtype=np.float32)
        for i, key in enumerate(keys):
            if key in self.rows:
                rows[i] = self.rows[key]
        return StoreRows(rows)


@dataclass
class Produced:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Any
    report: Any
    timestamp_ms: int = 0  # 0: the producer's clock


@dataclass
class FakeProducer:
    """Keeps what is produced; ``acknowledge`` delivers the reports a poll would serve. With
    ``auto_ack`` every poll acknowledges everything produced so far."""

    auto_ack: bool = True
    pending: list[Produced] = field(default_factory=list)
    delivered: list[Produced] = field(default_factory=list)
    queue_room: int = 1_000_000

    def produce_batch(self, topic: str, records: list[dict], on_delivery: Any) -> int:
        queued = 0
        for record in records:
            if len(self.pending) >= self.queue_room:
                record["_error"] = KafkaError(KafkaError._QUEUE_FULL)
                continue
            self.pending.append(Produced(topic, record["key"], record["value"], None, on_delivery))
            queued += 1
        return queued

    def produce(
        self, topic: str, value: Any, key: Any, headers: Any, on_delivery: Any, timestamp: int = 0
    ) -> None:
        self.pending.append(Produced(topic, key, value, headers, on_delivery, timestamp))

    def poll(self, timeout: float = 0) -> int:
        if self.auto_ack or len(self.pending) >= self.queue_room:
            return self.acknowledge(lambda _: True)
        return 0

    def acknowledge(self, which: Any, error: KafkaError | None = None) -> int:
        """Serve the report of every pending record ``which(record)`` picks."""
        served = [p for p in self.pending if which(p)]
        self.pending = [p for p in self.pending if not which(p)]
        for produced in served:
            produced.report(error, None)
            self.delivered.append(produced)
        return len(served)

    def flush(self, timeout: float = 0) -> int:
        self.acknowledge(lambda _: True)
        return 0


def serving(
    bundle: ModelBundle, store: MemoryStore, scorer: BatchScorer | None = None
) -> ServingModels:
    guarded = ResilientStore(store, retries=0, backoff_s=0, reset_s=1)
    return ServingModels(LoadedModel(bundle, scorer or BatchScorer(bundle), guarded, ("", ())))


def pipeline(
    bundle: ModelBundle,
    store: MemoryStore,
    producer: FakeProducer,
    clock_ms: int = 5_000,
    scorer: BatchScorer | None = None,
) -> BatchPipeline:
    """The real pipeline; ``scorer`` decodes another input format than JSON."""
    served = serving(bundle, store, scorer)
    sink = KafkaSink(producer)  # type: ignore[arg-type]  # a fake of the methods it calls
    threads = ScoringThreads("wait")
    return BatchPipeline("w", lambda: served, threads, sink, TOPICS, lambda: clock_ms)
