"""Every Prometheus metric a worker exports, declared once.

The table builds the registry (prometheus.py); the README's metrics table is rendered from it
(``python -m streamserve.telemetry.catalog``) and a test keeps the two equal, as another keeps the
Grafana dashboard's queries within it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
FEATURE_AGE_BUCKETS_S = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 86400, 7 * 86400)
SCORE_DELTA_BUCKETS = (0.0001, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1)
STAGE_BUCKETS_S = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
)

Kind = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True)
class MetricDef:
    """One metric: ``key`` names it in code, ``name`` on /metrics (counters add ``_total``)."""

    key: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()
    per_value: bool = False  # a histogram fed a whole array per batch (BulkHistogram)

    @property
    def name(self) -> str:
        return f"streamserve_{self.key}"

    @property
    def exported_name(self) -> str:
        return f"{self.name}_total" if self.kind == "counter" else self.name


METRICS: tuple[MetricDef, ...] = (
    MetricDef(
        "events",
        "counter",
        "Records handled, by outcome: `prediction` or `dead_letter`.",
        ("outcome",),
    ),
    MetricDef(
        "dead_letters",
        "counter",
        "Dead letters, by error class (every class present from the start, at 0).",
        ("error_class",),
    ),
    MetricDef(
        "model_predictions",
        "counter",
        "Predictions, by the version of the model that made them.",
        ("version",),
    ),
    MetricDef(
        "degraded_predictions",
        "counter",
        "Predictions made without store features (policy `degrade`).",
    ),
    MetricDef(
        "batches",
        "counter",
        "Batches, by what closed them: `size`, `time` (a busy stage), `idle` (the scoring stage "
        "was free) or `stop`.",
        ("trigger",),
    ),
    MetricDef("batch_size", "histogram", "Records per batch.", buckets=BATCH_SIZE_BUCKETS),
    MetricDef(
        "batch_size_limit",
        "gauge",
        "Size limit of the next batch (adaptive batching sets it per batch).",
    ),
    MetricDef(
        "end_to_end_latency_seconds",
        "histogram",
        "Event record timestamp to prediction, per prediction.",
        buckets=LATENCY_BUCKETS_S,
        per_value=True,
    ),
    MetricDef(
        "stage_seconds",
        "histogram",
        "Where each prediction's time went, by stage: `to_worker` (record timestamp to taken "
        "from the consumer), `window` (taken to its batch opening), `lookup`, `predict`, "
        "`handling` (decode, hand-offs, encode, produce), `ack` (produce to acknowledged).",
        ("stage",),
        buckets=tuple(sorted({*STAGE_BUCKETS_S, *LATENCY_BUCKETS_S})),
        per_value=True,
    ),
    MetricDef(
        "feature_lookup_seconds",
        "histogram",
        "Feature lookup time per batch.",
        buckets=STAGE_BUCKETS_S,
    ),
    MetricDef(
        "predict_seconds", "histogram", "Model predict time per batch.", buckets=STAGE_BUCKETS_S
    ),
    MetricDef("feature_store_keys", "counter", "Keys looked up."),
    MetricDef("feature_store_misses", "counter", "Looked-up keys the store held no value for."),
    MetricDef(
        "feature_store_stale",
        "counter",
        "Looked-up keys whose every value was older than the model accepts (made missing).",
    ),
    MetricDef(
        "feature_store_partly_stale",
        "counter",
        "Looked-up keys with some values too old (made missing) and some kept (`feast`: a "
        "view past its max age beside a fresh one).",
    ),
    MetricDef("feature_cache_hits", "counter", "Looked-up keys answered by the local cache."),
    MetricDef(
        "feature_age_seconds",
        "histogram",
        "Age of the store features read (`hash` layout `_ts`; `feast`: the oldest view `_ts`), "
        "per key.",
        buckets=FEATURE_AGE_BUCKETS_S,
        per_value=True,
    ),
    MetricDef(
        "telemetry_errors",
        "counter",
        "Failures of counting, metrics or logs, by what failed; the batch went on (a bug: "
        "the log has the traceback).",
        ("what",),
    ),
    MetricDef(
        "delivery_failures",
        "counter",
        "Output records the broker refused or that timed out (the worker stops, exit 5; "
        "their input is read again at the next start).",
    ),
    MetricDef(
        "commit_failures",
        "counter",
        "Offset commits (at least once) or transaction commits (exactly once) that failed; "
        "retried, the log says why.",
    ),
    MetricDef(
        "schema_registry_up",
        "gauge",
        "0 while the worker waits for the Schema Registry to answer (a registry format met a "
        "schema id it has not seen), else 1.",
    ),
    MetricDef("feature_store_up", "gauge", "1 while the feature store answers (circuit closed)."),
    MetricDef(
        "consumer_lag_records",
        "gauge",
        "Records behind the log end, per assigned partition (refreshed every second).",
        ("topic", "partition"),
    ),
    MetricDef("assigned_partitions", "gauge", "Partitions assigned."),
    MetricDef(
        "batches_in_flight",
        "gauge",
        "Batches whose outputs await the broker's acknowledgement (at most "
        "STREAMSERVE_MAX_BATCHES_IN_FLIGHT).",
    ),
    MetricDef("paused", "gauge", "1 while consumption is paused (backpressure)."),
    MetricDef(
        "build_info",
        "gauge",
        "The worker's build (1): streamserve, librdkafka and XGBoost versions.",
        ("version", "librdkafka", "xgboost"),
    ),
    MetricDef("model_info", "gauge", "The model being served (1).", ("name", "version")),
    MetricDef(
        "model_reloads",
        "counter",
        "New model bundles seen, by outcome: `loaded` or `rejected`.",
        ("outcome",),
    ),
    MetricDef("shadow_model_info", "gauge", "The challenger model (1).", ("name", "version")),
    MetricDef("shadow_predictions", "counter", "Events the challenger model scored."),
    MetricDef(
        "shadow_decision_flips",
        "counter",
        "Events whose challenger decision differs from the served model's.",
    ),
    MetricDef(
        "shadow_score_delta",
        "histogram",
        "|challenger − served| score, per event both scored.",
        buckets=SCORE_DELTA_BUCKETS,
        per_value=True,
    ),
)
PROCESS_METRICS_PREFIX = "process_"  # prometheus-client's process collector: RSS, CPU, files


def markdown_table() -> str:
    """The README's metrics table."""
    rows = ["| metric | type | meaning |", "|---|---|---|"]
    for metric in METRICS:
        labels = "{" + ",".join(metric.labels) + "}" if metric.labels else ""
        meaning = metric.help.replace("|", "\\|")
        rows.append(f"| `{metric.exported_name}{labels}` | {metric.kind} | {meaning} |")
    rows.append("| `process_*` | | RSS, CPU seconds, open files of the worker process |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
