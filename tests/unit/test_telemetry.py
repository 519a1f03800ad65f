"""Prometheus metrics, health and JSON logs: what a scrape, a probe or a log pipeline sees."""

import io
import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
from confluent_kafka import libversion
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from xgboost import __version__ as xgb

from streamserve import __version__
from streamserve.core.batch import BatchOutputs
from streamserve.core.records import ERROR_CLASSES, PartitionLag
from streamserve.telemetry import catalog
from streamserve.telemetry.batch_stats import BatchStats
from streamserve.telemetry.catalog import METRICS
from streamserve.telemetry.health import Health
from streamserve.telemetry.interval import MetricsInterval
from streamserve.telemetry.logs import JsonFormatter
from streamserve.telemetry.prometheus import BulkHistogram, Telemetry
from streamserve.telemetry.stages import StageTimes

NO_STAGES = StageTimes(np.empty(0), np.empty(0), 0.0, 0.0, 0.0)

README = Path(__file__).resolve().parents[2] / "README.md"


def samples(telemetry: Telemetry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every exported sample as (name, sorted labels) -> value, parsed from the text format."""
    text = generate_latest(telemetry.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scored(predictions: int, dead: Counter[str], latencies_ms: list[float]) -> BatchOutputs:
    return BatchOutputs(
        predictions=[object()] * predictions,  # type: ignore[list-item]
        dead_letters=[object()] * sum(dead.values()),  # type: ignore[list-item]
        dead_letter_classes=dead,
        latencies_ms=np.array(latencies_ms, dtype=np.float64),
        missing_by_feature={},
        store_keys=predictions,
        store_misses=1,
        model_version="7",
    )


def test_a_scored_batch_shows_in_every_metric_a_dashboard_reads() -> None:
    telemetry = Telemetry("fraud", "7")
    batch = scored(3, Counter(malformed_json=2), [4.0, 40.0, float("nan")])
    telemetry.record_batch(BatchStats(5, "time", batch, "fraud", 2.0, 1.0, 0.01, NO_STAGES))
    telemetry.record_batch(
        BatchStats(1, "size", scored(1, Counter(), [2000.0]), "fraud", 1.0, 1.0, 0.01, NO_STAGES)
    )
    got = samples(telemetry)
    assert got["streamserve_events_total", (("outcome", "prediction"),)] == 4
    assert got["streamserve_events_total", (("outcome", "dead_letter"),)] == 2
    assert got["streamserve_dead_letters_total", (("error_class", "malformed_json"),)] == 2
    assert got["streamserve_batches_total", (("trigger", "time"),)] == 1
    assert got["streamserve_batch_size_count", ()] == 2
    assert got["streamserve_batch_size_sum", ()] == 6
    assert got["streamserve_feature_lookup_seconds_sum", ()] == 0.003
    assert got["streamserve_model_info", (("name", "fraud"), ("version", "7"))] == 1
    # the NaN (no record timestamp) is not a latency; 4 ms, 40 ms and 2 s are
    latency = "streamserve_end_to_end_latency_seconds"
    assert got[latency + "_count", ()] == 3
    assert got[latency + "_bucket", (("le", "0.005"),)] == 1
    assert got[latency + "_bucket", (("le", "0.05"),)] == 2
    assert got[latency + "_bucket", (("le", "1"),)] == 2
    assert got[latency + "_bucket", (("le", "+Inf"),)] == 3
    assert abs(got[latency + "_sum", ()] - 2.044) < 1e-9
    assert "process_resident_memory_bytes" in {name for name, _ in got}


def test_an_on_call_engineer_sees_dead_letter_classes_versions_and_the_build() -> None:
    telemetry = Telemetry("fraud", "7")
    got = samples(telemetry)
    classes = {
        dict(labels)["error_class"]: value
        for (name, labels), value in got.items()
        if name == "streamserve_dead_letters_total"
    }
    assert classes == dict.fromkeys(ERROR_CLASSES, 0.0)  # before the first dead letter
    build = [dict(labels) for name, labels in got if name == "streamserve_build_info"]
    assert build == [{"version": __version__, "librdkafka": libversion()[0], "xgboost": xgb}]
    batch = scored(3, Counter(), [4.0])
    telemetry.record_batch(BatchStats(3, "idle", batch, "fraud", 2.0, 1.0, 0.01, NO_STAGES))
    in_flight = [2]
    telemetry.batches_in_flight.set_function(lambda: float(in_flight[0]))
    got = samples(telemetry)
    assert got["streamserve_model_predictions_total", (("version", "7"),)] == 3
    assert got["streamserve_batches_in_flight", ()] == 2


def test_the_registry_exports_the_catalog_and_the_readme_shows_it() -> None:
    telemetry = Telemetry("fraud", "7")
    batch = scored(3, Counter(malformed_json=2), [4.0])
    telemetry.record_batch(BatchStats(5, "time", batch, "fraud", 2.0, 1.0, 0.01, NO_STAGES))
    telemetry.set_lag([PartitionLag("events", 0, 3)])
    text = generate_latest(telemetry.registry).decode()
    assert "_created" not in text  # prometheus-client's own series, of no use to a dashboard
    families = [f for f in text_string_to_metric_families(text) if f.name.startswith("streamserve")]
    exported = {f.name: f.type for f in families}
    assert exported == {m.name: m.kind for m in METRICS}
    declared = {m.name: set(m.labels) for m in METRICS}
    for family in families:
        for sample in family.samples:
            assert set(sample.labels) - {"le"} == declared[family.name], sample
    assert catalog.markdown_table() in README.read_text(), (
        "the README's metrics table is stale: paste `python -m streamserve.telemetry.catalog`"
    )


def test_a_value_on_a_bucket_bound_counts_in_that_bucket() -> None:
    histogram = BulkHistogram("h", "test", [0.1, 1.0])
    histogram.observe_many(np.array([0.1, 1.0, 1.5, np.inf]))
    family = next(iter(histogram.collect()))
    buckets = {s.labels["le"]: s.value for s in family.samples if s.name == "h_bucket"}
    assert buckets == {"0.1": 1, "1": 2, "+Inf": 3}  # inf is not finite: not counted


def test_lag_series_follow_the_assignment() -> None:
    telemetry = Telemetry("m", "1")
    telemetry.set_lag([PartitionLag("events", 0, 10), PartitionLag("events", 1, 0)])
    telemetry.set_lag([PartitionLag("events", 1, 5)])  # partition 0 was revoked
    lag = {
        k: v for k, v in samples(telemetry).items() if k[0] == "streamserve_consumer_lag_records"
    }
    assert lag == {
        ("streamserve_consumer_lag_records", (("partition", "1"), ("topic", "events"))): 5
    }


def test_liveness_fails_when_the_loop_stops_turning() -> None:
    now = [100.0]
    health = Health(liveness_timeout_s=30, clock=lambda: now[0])
    now[0] += 29
    assert health.live()["ok"]
    now[0] += 2
    assert health.live() == {"ok": False, "last_loop_turn_s_ago": 31.0}
    health.loop_turned()
    assert health.live()["ok"]


def test_readiness_means_joined_with_a_model_not_partitions_or_the_store() -> None:
    health = Health(30)
    store_up = [True]
    health.store_available = lambda: store_up[0]
    health.model_loaded = True
    assert health.ready()["ok"] is False  # not in the group yet
    health.joined_group = True  # a surplus replica: joined, no partitions
    assert health.ready() == {
        "ok": True,
        "joined_group": True,
        "model_loaded": True,
        "assigned_partitions": 0,
        "feature_store_reachable": True,
    }
    store_up[0] = False  # an outage is reported, and the replica stays in its Service
    assert health.ready()["ok"] is True and health.ready()["feature_store_reachable"] is False
    health.model_loaded = False
    assert health.ready()["ok"] is False


def test_json_logs_carry_extra_fields_and_the_exception() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("test-json-logs")
    log.addHandler(handler)
    log.propagate = False
    log.warning("assigned %s", "events[0]", extra={"partitions": ["events[0]"]})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("batch failed", extra={"batch_id": "w-1"})
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "assigned events[0]"
    assert first["level"] == "WARNING" and first["partitions"] == ["events[0]"]
    assert first["ts"].endswith("Z")
    assert second["batch_id"] == "w-1" and "ValueError: boom" in second["exception"]


def test_the_metrics_record_names_the_model_that_scored_the_latest_batch() -> None:
    window = MetricsInterval("w", "fraud", "1")
    window.start(0)
    window.record_batch(
        BatchStats(
            3, "size", scored(3, Counter(), [1.0] * 3), "fraud-v2", 1.0, 1.0, 0.01, NO_STAGES
        )
    )
    record = window.close(1_000, [])
    assert (record.model_name, record.events_in, record.predictions_out) == ("fraud-v2", 3, 3)
