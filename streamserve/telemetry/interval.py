"""Per-interval worker metrics: accumulated from scored batches, published as MetricsRecord."""

from __future__ import annotations

from collections import Counter

import numpy as np

from streamserve.core.records import (
    AgeSummary,
    LatencySummary,
    MetricsRecord,
    PartitionLag,
    ShadowSummary,
    TimingSummary,
)
from streamserve.core.window import TRIGGERS
from streamserve.telemetry.batch_stats import BatchStats


class MetricsInterval:
    """What happened since the last record; ``close`` turns it into one and starts afresh."""

    def __init__(self, worker_id: str, model_name: str, model_version: str) -> None:
        self.worker_id = worker_id
        self.model_name = model_name
        self.model_version = model_version  # of the latest batch
        self.shadow_version: str | None = None
        self.start(0)

    def start(self, now_ms: int) -> None:
        """Begin a new interval at ``now_ms``."""
        self.started_ms = now_ms
        self.events_in = 0
        self.predictions_out = 0
        self.dead_letters: Counter[str] = Counter()
        self.triggers: Counter[str] = Counter()
        self.batch_sizes: list[int] = []
        self.lookup_ms: list[float] = []
        self.predict_ms: list[float] = []
        self.latencies: list[np.ndarray] = []
        self.store_keys = 0
        self.store_misses = 0
        self.degraded = 0
        self.missing: Counter[str] = Counter()
        self.by_version: Counter[str] = Counter()
        self.stale = 0
        self.partly_stale = 0
        self.ages_s: list[np.ndarray] = []
        self.cache_hits = 0
        self.shadow_deltas: list[np.ndarray] = []
        self.shadow_flips = 0

    def record_batch(self, stats: BatchStats) -> None:
        """Count one completed batch (its outputs acknowledged)."""
        batch, size = stats.outputs, stats.size
        self.model_name = stats.model_name
        self.events_in += size
        self.predictions_out += len(batch.predictions)
        self.dead_letters.update(batch.dead_letter_classes)
        self.triggers[stats.trigger] += 1
        self.batch_sizes.append(size)
        self.lookup_ms.append(stats.lookup_ms)
        self.predict_ms.append(stats.predict_ms)
        self.latencies.append(batch.latencies_ms)
        self.store_keys += batch.store_keys
        self.store_misses += batch.store_misses
        self.degraded += len(batch.predictions) if batch.degraded else 0
        self.missing.update(batch.missing_by_feature)
        self.model_version = batch.model_version
        self.by_version[batch.model_version] += len(batch.predictions)
        self.stale += batch.stale_keys
        self.partly_stale += batch.partly_stale_keys
        if len(batch.feature_ages_s):
            self.ages_s.append(batch.feature_ages_s)
        self.cache_hits += batch.cache_hits
        if batch.shadow is not None:
            self.shadow_version = batch.shadow.model_version
            self.shadow_deltas.append(batch.shadow.abs_deltas)
            self.shadow_flips += batch.shadow.flips

    def close(self, now_ms: int, lag: list[PartitionLag], store_up: bool = True) -> MetricsRecord:
        """The record for the interval that ends now; the next interval starts now (also when
        making the record fails: what was gathered is dropped, never piled up)."""
        try:
            return self._record(now_ms, lag, store_up)
        finally:
            self.start(now_ms)

    def _record(self, now_ms: int, lag: list[PartitionLag], store_up: bool) -> MetricsRecord:
        seconds = max(now_ms - self.started_ms, 1) / 1000.0
        record = MetricsRecord(
            worker_id=self.worker_id,
            model_name=self.model_name,
            model_version=self.model_version,
            interval_start_ms=self.started_ms,
            interval_end_ms=now_ms,
            events_in=self.events_in,
            predictions_out=self.predictions_out,
            dead_letters=sum(self.dead_letters.values()),
            dead_letters_by_class=dict(self.dead_letters),
            events_per_s=round(self.events_in / seconds, 3),
            lag=lag,
            total_lag=sum(p.lag for p in lag),
            latency=latency_summary(self.latencies),
            batches=len(self.batch_sizes),
            batches_by_trigger={t: self.triggers[t] for t in TRIGGERS},
            batch_size_mean=round(float(np.mean(self.batch_sizes)), 3) if self.batch_sizes else 0.0,
            batch_size_max=max(self.batch_sizes, default=0),
            lookup=timing_summary(self.lookup_ms),
            predict=timing_summary(self.predict_ms),
            store_keys=self.store_keys,
            store_misses=self.store_misses,
            missing_features=dict(self.missing),
            degraded_predictions=self.degraded,
            feature_store_up=store_up,
            predictions_by_model_version=dict(self.by_version),
            store_stale=self.stale,
            store_partly_stale=self.partly_stale,
            feature_age=age_summary(self.ages_s),
            cache_hits=self.cache_hits,
            cache_hit_rate=round(self.cache_hits / self.store_keys, 4) if self.store_keys else None,
            shadow=self._shadow_summary(),
        )
        return record

    def _shadow_summary(self) -> ShadowSummary | None:
        if self.shadow_version is None or not self.shadow_deltas:
            return None
        deltas = np.concatenate(self.shadow_deltas)
        compared = len(deltas)
        p99 = float(np.percentile(deltas, 99)) if compared else 0.0
        return ShadowSummary(
            model_version=self.shadow_version,
            compared=compared,
            score_delta_mean=round(float(deltas.mean()), 6) if compared else 0.0,
            score_delta_p99=round(p99, 6),
            score_delta_max=round(float(deltas.max()), 6) if compared else 0.0,
            decision_flips=self.shadow_flips,
            flip_rate=round(self.shadow_flips / compared, 6) if compared else 0.0,
        )


def age_summary(ages: list[np.ndarray]) -> AgeSummary | None:
    if not ages:
        return None
    values = np.concatenate(ages)
    p50, p99 = np.percentile(values, [50, 99]).tolist()
    return AgeSummary(p50_s=round(p50, 3), p99_s=round(p99, 3), max_s=round(float(values.max()), 3))


def latency_summary(latencies: list[np.ndarray]) -> LatencySummary | None:
    if not latencies:
        return None
    values = np.concatenate(latencies)
    values = values[~np.isnan(values)]
    if not len(values):
        return None
    p50, p95, p99 = np.percentile(values, [50, 95, 99]).tolist()
    return LatencySummary(
        p50_ms=round(p50, 3),
        p95_ms=round(p95, 3),
        p99_ms=round(p99, 3),
        max_ms=round(float(values.max()), 3),
    )


def timing_summary(values_ms: list[float]) -> TimingSummary | None:
    if not values_ms:
        return None
    total = float(sum(values_ms))
    return TimingSummary(
        total_ms=round(total, 3),
        mean_ms=round(total / len(values_ms), 3),
        max_ms=round(max(values_ms), 3),
    )
