"""Prometheus metrics and health state of one worker, served by io/http.py.

Counters and histograms are cumulative (scrapes compute rates); the loop updates them once per
batch, never per event: end-to-end latencies arrive as a numpy array per batch and are bucketed in
one step (``BulkHistogram``), since prometheus-client's ``observe`` costs about a microsecond per
value.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any

import confluent_kafka
import numpy as np
import xgboost
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from streamserve import __version__
from streamserve.core.model import ModelBundle
from streamserve.core.records import ERROR_CLASSES, PartitionLag
from streamserve.core.window import TRIGGERS
from streamserve.telemetry.batch_stats import BatchStats
from streamserve.telemetry.catalog import METRICS, MetricDef
from streamserve.telemetry.guard import TelemetryGuard
from streamserve.telemetry.health import Health
from streamserve.telemetry.stages import StageTimes

disable_created_metrics()  # no `*_created` series: a scrape carries what dashboards read


class BulkHistogram(Collector):
    """A Prometheus histogram fed a whole array of observations at a time (one series per
    combination of ``labelnames`` values)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float],
        labelnames: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._bounds = np.asarray(buckets, dtype=np.float64)
        self._series: dict[tuple[str, ...], _Series] = {}
        self._lock = threading.Lock()

    def observe_many(self, values: np.ndarray, *labels: str, weight: int = 1) -> None:
        """Count every finite value ``weight`` times (NaN means "not known" and is skipped)."""
        values = values[np.isfinite(values)]
        if not len(values):
            return
        slots = np.searchsorted(self._bounds, values, side="left")  # first bound >= value
        counts = np.bincount(slots, minlength=len(self._bounds) + 1) * weight
        with self._lock:
            series = self._series.get(labels)
            if series is None:
                series = self._series[labels] = _Series(len(self._bounds) + 1)
            series.counts += counts
            series.total += float(values.sum()) * weight

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            series = {k: (np.cumsum(v.counts).tolist(), v.total) for k, v in self._series.items()}
        if not series and not self.labelnames:
            series[()] = ([0] * (len(self._bounds) + 1), 0.0)
        bounds = [*(f"{b:g}" for b in self._bounds), "+Inf"]
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, (cumulative, total) in series.items():
            family.add_metric(list(labels), list(zip(bounds, cumulative, strict=True)), total)
        yield family


class _Series:
    """One label combination's bucket counts (the last one is +Inf) and sum."""

    __slots__ = ("counts", "total")

    def __init__(self, slots: int) -> None:
        self.counts = np.zeros(slots, dtype=np.int64)
        self.total = 0.0


def _build(metric: MetricDef, registry: CollectorRegistry) -> Any:
    """The prometheus-client object of one row of the catalog, registered in ``registry``."""
    if metric.per_value:
        bulk = BulkHistogram(metric.name, metric.help, metric.buckets, metric.labels)
        registry.register(bulk)
        return bulk
    if metric.kind == "histogram":
        return Histogram(metric.name, metric.help, buckets=metric.buckets, registry=registry)
    kind = Counter if metric.kind == "counter" else Gauge
    return kind(metric.name, metric.help, metric.labels, registry=registry)


class Telemetry:
    """The worker's Prometheus metrics, in a registry of their own, and its health."""

    def __init__(self, model_name: str, model_version: str, liveness_timeout_s: float = 30.0):
        self.registry = registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=registry)  # process_resident_memory_bytes, CPU seconds, ...
        self.health = health = Health(liveness_timeout_s)
        metrics = {m.key: _build(m, registry) for m in METRICS}  # the catalog, registered
        build = (__version__, confluent_kafka.libversion()[0], xgboost.__version__)
        metrics["build_info"].labels(*build).set(1)
        self.model_info: Gauge = metrics["model_info"]
        self.model_info.labels(model_name, model_version).set(1)
        self.shadow_info: Gauge = metrics["shadow_model_info"]
        self.model_reloads: Counter = metrics["model_reloads"]
        self.events: Counter = metrics["events"]
        self.dead_letters: Counter = metrics["dead_letters"]
        for error_class in ERROR_CLASSES:
            self.dead_letters.labels(error_class)  # at 0 until the first: rates need a start
        self.model_predictions: Counter = metrics["model_predictions"]
        self.batches_in_flight: Gauge = metrics["batches_in_flight"]
        self.delivery_failures: Counter = metrics["delivery_failures"]
        self.commit_failures: Counter = metrics["commit_failures"]
        self.schema_registry_up: Gauge = metrics["schema_registry_up"]
        self.schema_registry_up.set(1)
        self.degraded: Counter = metrics["degraded_predictions"]
        self.batches: Counter = metrics["batches"]
        self.batch_size: Histogram = metrics["batch_size"]
        self.batch_size_limit: Gauge = metrics["batch_size_limit"]
        self.batch_size_limit.set(0)
        self.lookup: Histogram = metrics["feature_lookup_seconds"]
        self.predict: Histogram = metrics["predict_seconds"]
        self.latency: BulkHistogram = metrics["end_to_end_latency_seconds"]
        self.store_keys: Counter = metrics["feature_store_keys"]
        self.store_misses: Counter = metrics["feature_store_misses"]
        self.store_stale: Counter = metrics["feature_store_stale"]
        self.store_partly_stale: Counter = metrics["feature_store_partly_stale"]
        self.cache_hits: Counter = metrics["feature_cache_hits"]
        self.feature_age: BulkHistogram = metrics["feature_age_seconds"]
        self.shadow_predictions: Counter = metrics["shadow_predictions"]
        self.shadow_flips: Counter = metrics["shadow_decision_flips"]
        self.shadow_delta: BulkHistogram = metrics["shadow_score_delta"]
        self.stages: BulkHistogram = metrics["stage_seconds"]
        errors: Counter = metrics["telemetry_errors"]
        self.guard = TelemetryGuard(on_failure=lambda what: errors.labels(what).inc())
        metrics["feature_store_up"].set_function(lambda: float(health.store_available()))
        metrics["assigned_partitions"].set_function(lambda: float(health.assigned))
        self.lag: Gauge = metrics["consumer_lag_records"]
        self._lag_labels: set[tuple[str, str]] = set()
        self.paused: Gauge = metrics["paused"]
        # children looked up once (present from the start, at 0), not per batch
        self._predictions = self.events.labels("prediction")
        self._dead_letters = self.events.labels("dead_letter")
        self._by_trigger = {t: self.batches.labels(t) for t in TRIGGERS}

    def record_batch(self, stats: BatchStats) -> None:
        """Count one completed batch (its outputs acknowledged)."""
        batch = stats.outputs
        self._predictions.inc(len(batch.predictions))
        if batch.predictions:
            self.model_predictions.labels(batch.model_version).inc(len(batch.predictions))
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
        if batch.partly_stale_keys:
            self.store_partly_stale.inc(batch.partly_stale_keys)
        if batch.cache_hits:
            self.cache_hits.inc(batch.cache_hits)
        if len(batch.feature_ages_s):
            self.feature_age.observe_many(batch.feature_ages_s)
        if batch.shadow is not None:
            self.shadow_predictions.inc(len(batch.shadow.predictions))
            self.shadow_flips.inc(batch.shadow.flips)
            self.shadow_delta.observe_many(batch.shadow.abs_deltas)

    def record_stages(self, times: StageTimes, ack_ms: float | None, predictions: int) -> None:
        """Where a completed batch's predictions spent their time (see telemetry/stages.py)."""
        if not predictions:
            return
        for stage, value in times.by_stage(ack_ms):
            if isinstance(value, np.ndarray):
                self.stages.observe_many(value / 1000, stage)
            else:
                self.stages.observe_many(np.array([value / 1000]), stage, weight=predictions)

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
