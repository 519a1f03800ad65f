"""The metrics records on STREAMSERVE_METRICS_TOPIC: each interval closed into one
record, keyed by worker id, published outside the delivery promise. Making or sending one never
fails a batch: an error is counted and logged (``TelemetryGuard``)."""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from streamserve.core.records import PartitionLag
from streamserve.io.sink import KafkaSink
from streamserve.telemetry.guard import TelemetryGuard
from streamserve.telemetry.interval import MetricsInterval


class MetricsRecords:
    """Publishes a worker's metrics interval every ``interval_s``."""

    def __init__(
        self,
        interval: MetricsInterval,
        sink: KafkaSink,
        topic: str,
        interval_s: float,
        guard: TelemetryGuard,
        store_available: Callable[[], bool],
    ) -> None:
        self.interval = interval
        self._sink, self._topic, self._interval_ms = sink, topic, interval_s * 1000
        self._guard, self._store_available = guard, store_available
        self._key = interval.worker_id.encode()

    def due(self, now_ms: int) -> bool:
        """Whether the interval that began at the last record is over."""
        return now_ms - self.interval.started_ms >= self._interval_ms

    def publish(self, now_ms: int, lag: Callable[[], list[PartitionLag]]) -> None:
        """Close the interval into a record (``lag``: each assigned partition's) and send it."""
        with self._guard.shielded("metrics record"):
            record = self.interval.close(now_ms, lag(), self._store_available())
            self._sink.publish(self._topic, msgspec.json.encode(record), self._key)
