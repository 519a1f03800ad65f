"""Prometheus metrics and health state of one worker, served by io/http.py.

Counters and histograms are cumulative (scrapes compute rates); the loop updates them once per
batch, never per event: end-to-end latencies arrive as a numpy array per batch and are bucketed in
one step (``BulkHistogram``), since prometheus-client's ``observe`` costs about a microsecond per
value.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from streamserve.core.model import ModelBundle
from streamserve.core.records import PartitionLag

if TYPE_CHECKING:
    from streamserve.runtime.pipeline import BatchStats

BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
FEATURE_AGE_BUCKETS_S = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 86400, 7 * 86400)
SCORE_DELTA_BUCKETS = (0.0001, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1)
STAGE_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                   0.5, 1, 2.5)  # fmt: skip


class BulkHistogram(Collector):
    """A Prometheus histogram fed a whole array of observations at a time."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self._bounds = np.asarray(buckets, dtype=np.float64)
        self._counts = np.zeros(len(buckets) + 1, dtype=np.int64)  # the last one is +Inf
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe_many(self, values: np.ndarray) -> None:
        """Count every finite value (NaN means "not known" and is skipped)."""
        values = values[np.isfinite(values)]
        if not len(values):
            return
        slots = np.searchsorted(self._bounds, values, side="left")  # first bound >= value
        counts = np.bincount(slots, minlength=len(self._counts))
        with self._lock:
            self._counts += counts
            self._sum += float(values.sum())

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            cumulative = np.cumsum(self._counts).tolist()
            total = self._sum
        bounds = [*(f"{b:g}" for b in self._bounds), "+Inf"]
        family = HistogramMetricFamily(self.name, self.documentation)
        family.add_metric([], list(zip(bounds, cumulative, strict=True)), total)
        yield family


class Health:
    """What /healthz and /readyz report: the loop's last turn, its partitions, the store."""

    def __init__(self, liveness_timeout_s: float, clock: Callable[[], float] = time.monotonic):
        self.liveness_timeout_s = liveness_timeout_s
        self._clock = clock
        self._last_turn = clock()
        self.assigned = 0
        self.model_loaded = False
        self.store_available: Callable[[], bool] = lambda: False

    def loop_turned(self) -> None:
        self._last_turn = self._clock()

    def live(self) -> dict[str, object]:
        """The loop turned within the liveness timeout (a stuck loop stops turning)."""
        since = self._clock() - self._last_turn
        return {"ok": since <= self.liveness_timeout_s, "last_loop_turn_s_ago": round(since, 3)}

    def ready(self) -> dict[str, object]:
        """Partitions assigned, model loaded and the feature store reachable."""
        checks = {
            "partitions_assigned": self.assigned > 0,
            "model_loaded": self.model_loaded,
            "feature_store_reachable": self.store_available(),
        }
        return {"ok": all(checks.values()), "assigned_partitions": self.assigned, **checks}


class Telemetry:
    """The worker's Prometheus metrics, in a registry of their own, and its health."""

    def __init__(self, model_name: str, model_version: str, liveness_timeout_s: float = 30.0):
        self.registry = registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=registry)  # process_resident_memory_bytes, CPU seconds, ...
        self.health = health = Health(liveness_timeout_s)

        def counter(name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        def gauge(name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
            return Gauge(name, doc, labels, registry=registry)

        def histogram(name: str, doc: str, buckets: Sequence[float]) -> Histogram:
            return Histogram(name, doc, buckets=buckets, registry=registry)

        def bulk_histogram(name: str, doc: str, buckets: Sequence[float]) -> BulkHistogram:
            bulk = BulkHistogram(name, doc, buckets)
            registry.register(bulk)
            return bulk

        self.model_info = gauge(
            "streamserve_model_info", "The model being served (1).", ["name", "version"]
        )
        self.model_info.labels(model_name, model_version).set(1)
        self.shadow_info = gauge(
            "streamserve_shadow_model_info", "The challenger model (1).", ["name", "version"]
        )
        self.model_reloads = counter(
            "streamserve_model_reloads",
            "New model bundles seen, by outcome (loaded, rejected).",
            ["outcome"],
        )
        self.events = counter("streamserve_events", "Records handled, by outcome.", ["outcome"])
        self.dead_letters = counter(
            "streamserve_dead_letters", "Dead letters, by error class.", ["error_class"]
        )
        self.degraded = counter(
            "streamserve_degraded_predictions",
            "Predictions made without store features (policy degrade).",
        )
        self.batches = counter("streamserve_batches", "Batches, by what closed them.", ["trigger"])
        self.batch_size = histogram(
            "streamserve_batch_size", "Records per batch.", BATCH_SIZE_BUCKETS
        )
        self.lookup = histogram(
            "streamserve_feature_lookup_seconds", "Feature lookup time per batch.", STAGE_BUCKETS_S
        )
        self.predict = histogram(
            "streamserve_predict_seconds", "Model predict time per batch.", STAGE_BUCKETS_S
        )
        self.latency = bulk_histogram(
            "streamserve_end_to_end_latency_seconds",
            "Event record timestamp to prediction, per prediction.",
            LATENCY_BUCKETS_S,
        )
        self.store_keys = counter("streamserve_feature_store_keys", "Keys looked up.")
        self.store_misses = counter(
            "streamserve_feature_store_misses", "Looked-up keys the store did not have."
        )
        self.store_stale = counter(
            "streamserve_feature_store_stale",
            "Looked-up keys older than the model's max_age_s (their values made missing).",
        )
        self.cache_hits = counter(
            "streamserve_feature_cache_hits", "Looked-up keys answered by the local cache."
        )
        self.feature_age = bulk_histogram(
            "streamserve_feature_age_seconds",
            "Age of the store features read (`hash` layout `_ts`), per key.",
            FEATURE_AGE_BUCKETS_S,
        )
        self.shadow_predictions = counter(
            "streamserve_shadow_predictions", "Events the challenger model scored."
        )
        self.shadow_flips = counter(
            "streamserve_shadow_decision_flips",
            "Events whose challenger decision differs from the served model's.",
        )
        self.shadow_delta = bulk_histogram(
            "streamserve_shadow_score_delta",
            "|challenger - served| score, per event both scored.",
            SCORE_DELTA_BUCKETS,
        )
        gauge(
            "streamserve_feature_store_up", "1 while the feature store answers (circuit closed)."
        ).set_function(lambda: float(health.store_available()))
        gauge("streamserve_assigned_partitions", "Partitions assigned.").set_function(
            lambda: float(health.assigned)
        )
        self.lag = gauge(
            "streamserve_consumer_lag_records",
            "Records behind the log end, per assigned partition.",
            ["topic", "partition"],
        )
        self._lag_labels: set[tuple[str, str]] = set()
        self.batch_size_limit = gauge(
            "streamserve_batch_size_limit",
            "Size limit of the next batch (adaptive batching sets it per batch).",
        )
        self.batch_size_limit.set(0)
        self.paused = gauge("streamserve_paused", "1 while consumption is paused (backpressure).")
        # children looked up once (present from the start, at 0), not per batch
        self._predictions = self.events.labels("prediction")
        self._dead_letters = self.events.labels("dead_letter")
        self._by_trigger = {t: self.batches.labels(t) for t in ("size", "time", "stop")}

    def record_batch(self, stats: BatchStats) -> None:
        """Count one completed batch (its outputs acknowledged)."""
        batch = stats.scored
        self._predictions.inc(len(batch.predictions))
        if batch.dead_letters:
            self._dead_letters.inc(len(batch.dead_letters))
        for error_class, count in batch.dead_letter_classes.items():
            self.dead_letters.labels(error_class).inc(count)
        if batch.degraded:
            self.degraded.inc(len(batch.predictions))
        self._by_trigger[stats.trigger].inc()
        self.batch_size.observe(stats.size)
        self.lookup.observe(stats.lookup_ms / 1000)
        self.predict.observe(stats.predict_ms / 1000)
        self.latency.observe_many(batch.latencies_ms / 1000)
        self.store_keys.inc(batch.store_keys)
        if batch.store_misses:
            self.store_misses.inc(batch.store_misses)
        if batch.stale_keys:
            self.store_stale.inc(batch.stale_keys)
        if batch.cache_hits:
            self.cache_hits.inc(batch.cache_hits)
        if len(batch.feature_ages_s):
            self.feature_age.observe_many(batch.feature_ages_s)
        if batch.shadow is not None:
            self.shadow_predictions.inc(len(batch.shadow.predictions))
            self.shadow_flips.inc(batch.shadow.flips)
            self.shadow_delta.observe_many(batch.shadow.abs_deltas)

    def model_swapped(self, old: ModelBundle, new: ModelBundle, shadow: bool) -> None:
        """A new bundle took over (called from the model watcher's thread)."""
        info = self.shadow_info if shadow else self.model_info
        info.remove(old.name, old.version)
        info.labels(new.name, new.version).set(1)
        self.model_reloads.labels("loaded").inc()

    def model_rejected(self) -> None:
        self.model_reloads.labels("rejected").inc()

    def set_lag(self, lags: list[PartitionLag]) -> None:
        """Set the assigned partitions' lag; drop the series of partitions no longer assigned."""
        current = {(lag.topic, str(lag.partition)): lag.lag for lag in lags}
        for labels in self._lag_labels - current.keys():
            self.lag.remove(*labels)
        for labels, value in current.items():
            self.lag.labels(*labels).set(value)
        self._lag_labels = set(current)
