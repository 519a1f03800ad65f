"""The latency watcher: reads outputs as they arrive and measures event produced -> output read.

Where an event was produced is known without reading the input topic: a prediction carries
``scored_at_ms`` and ``latency_ms`` (scoring time minus the input record's timestamp), and the
pass-through copies the input record's timestamp onto its output. Dead letters count for the
accounting, not for latency.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
import numpy as np
from confluent_kafka import KafkaError

from streamserve.io.kafka import Cluster
from streamserve.tools.audit import from_beginning, source_of

Origin = Literal["prediction", "record-timestamp"]
POLL_S = 0.002


class _Timing(msgspec.Struct):
    scored_at_ms: int
    latency_ms: float | None = None


@dataclass
class Watcher:
    """Reads ``outputs`` (and ``dead_letters``) from their beginning and times every output.

    Against a deployment that ran before, ``count_from`` (the first input offset per partition
    of this run's events) makes it count only the outputs of this run's events, by their
    provenance; the pass-through's outputs carry none, so they are all counted.
    """

    bootstrap: str
    outputs: str
    dead_letters: str | None = None
    origin: Origin = "prediction"
    started_ms: float = field(default_factory=lambda: time.time() * 1000)
    received_ms: list[float] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    dead_letter_count: int = 0
    sources: Counter[tuple[int, int]] = field(default_factory=Counter)
    _seen: list[tuple[tuple[int, int] | None, float, float | None]] = field(default_factory=list)
    _first: dict[int, int] | None = None

    def __post_init__(self) -> None:
        self._decode = msgspec.json.Decoder(_Timing).decode
        topics = [t for t in (self.outputs, self.dead_letters) if t]
        self._consumer, missing = from_beginning(Cluster(self.bootstrap), topics, 5)
        if missing:
            self._consumer.close()
            raise RuntimeError(f"topics {missing} do not exist; start the target first")

    @property
    def outputs_read(self) -> int:
        return len(self.received_ms) + self.dead_letter_count

    def count_from(self, first_offsets: dict[int, int]) -> None:
        """Count only outputs whose input record is at or after ``first_offsets`` (partition ->
        offset): this run's events. Recounts what was read so far."""
        self._first = first_offsets
        seen, self._seen = self._seen, []
        self.received_ms, self.latencies_ms, self.dead_letter_count = [], [], 0
        self.sources = Counter()
        for entry in seen:
            self._count(*entry)

    def poll(self, timeout_s: float = POLL_S) -> int:
        """Read what has arrived; returns how many outputs were read.

        ``consume(n, timeout)`` returns when n records are there or the timeout passed, so the
        timeout bounds the measurement error at low rates: keep it small."""
        messages = self._consumer.consume(10_000, timeout_s)
        now_ms = time.time() * 1000
        read = 0
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    raise RuntimeError(f"watcher: {error.str()}")
                continue
            read += 1
            source = source_of(message) if self.origin == "prediction" else None
            if message.topic() == self.dead_letters:
                self._count(source, now_ms, None)
            else:
                self._count(source, now_ms, now_ms - self._produced_at_ms(message))
        return read

    def _count(self, source: tuple[int, int] | None, now_ms: float, latency: float | None) -> None:
        self._seen.append((source, now_ms, latency))
        first = self._first
        if first is not None and source is not None and source[1] < first.get(source[0], 0):
            return  # an earlier run's event
        if source is not None:
            self.sources[source] += 1
        if latency is None:
            self.dead_letter_count += 1
        else:
            self.received_ms.append(now_ms)
            self.latencies_ms.append(latency)

    def _produced_at_ms(self, message: Any) -> float:
        if self.origin == "record-timestamp":
            return float(message.timestamp()[1])
        timing = self._decode(message.value())
        return timing.scored_at_ms - (timing.latency_ms or 0.0)

    def run(self, expected: int, idle_s: float = 5.0, timeout_s: float = 600.0) -> None:
        """Read until ``expected`` outputs arrived, or nothing arrived for ``idle_s``."""
        deadline = time.monotonic() + timeout_s
        last_read = time.monotonic()
        while self.outputs_read < expected and time.monotonic() < deadline:
            if self.poll():
                last_read = time.monotonic()
            elif time.monotonic() - last_read >= idle_s:
                break

    def close(self) -> None:
        self._consumer.close()

    def result(self, sent: int) -> dict[str, Any]:
        """Accounting against ``sent`` events, latency percentiles and a per-second series."""
        lost = sent - (len(self.sources) if self.origin == "prediction" else self.outputs_read)
        return {
            "sent": sent,
            "predictions": len(self.received_ms),
            "dead_letters": self.dead_letter_count,
            "lost": max(lost, 0),
            "duplicated": sum(1 for n in self.sources.values() if n > 1),
            "latency_ms": percentiles(self.latencies_ms),
            "series": per_second(self.received_ms, self.latencies_ms),
        }


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    p50, p90, p99 = np.percentile(values, [50, 90, 99]).tolist()
    return {
        "p50": round(p50, 1),
        "p90": round(p90, 1),
        "p99": round(p99, 1),
        "max": round(max(values), 1),
    }


def per_second(received_ms: list[float], latencies_ms: list[float]) -> list[dict[str, Any]]:
    """Outputs per second and their p50/p99 latency, by the second they were read in."""
    if not received_ms:
        return []
    received = np.asarray(received_ms)
    latencies = np.asarray(latencies_ms)
    seconds = ((received - received.min()) // 1000).astype(np.int64)
    series = []
    for second in range(int(seconds.max()) + 1):
        in_second = latencies[seconds == second]
        if not len(in_second):
            series.append({"t": second, "events_per_s": 0, "p50_ms": None, "p99_ms": None})
            continue
        p50, p99 = np.percentile(in_second, [50, 99]).tolist()
        series.append(
            {
                "t": second,
                "events_per_s": len(in_second),
                "p50_ms": round(p50, 1),
                "p99_ms": round(p99, 1),
            }
        )
    return series
