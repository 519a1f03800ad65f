"""Absent, stale and partly stale store keys are counted apart, in every layout, and no mix of
them can fail a batch: every combination of key states goes through the real pipeline, the
layouts' own parsers of Redis replies and the real books (run summary, metrics record,
Prometheus). A telemetry failure is logged and counted, never raised."""

from __future__ import annotations

import itertools
import json
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
import numpy as np
import pytest
from prometheus_client import generate_latest

from streamserve.core.feast import DOUBLE_TAG, FeastLayout
from streamserve.core.features import (
    FeatureLayout,
    StoreKey,
    StoreRows,
    hash_fields_to_rows,
    vector_bytes,
    vectors_to_rows,
)
from streamserve.core.model import FeastDef, FeatureDef, Manifest, ModelBundle, StoreDef
from streamserve.io.sink import KafkaSink
from streamserve.runtime.pipeline import BatchLedger, BatchPipeline
from streamserve.runtime.scoring import ScoringThreads
from streamserve.runtime.summary import RunSummary
from streamserve.telemetry.interval import MetricsInterval
from streamserve.telemetry.prometheus import Telemetry
from streamserve_loadgen.world.feast_world import VIEWS
from tests.unit.fakes import TOPICS, FakeProducer, Record, serving

MAX_AGE_S = 3_600.0
NOW = time.time()  # the pipeline checks freshness against the wall clock
FRESH, OLD = NOW - 60, NOW - 7_200  # a minute old, two hours old: far from the hour's edge

# per layout, the states a key can be in: what the store holds for it
STATES = {
    "vector": ["fresh", "absent"],  # no clock: the writer's key expiry is its freshness
    "hash": ["fresh", "absent", "stale", "untimed"],  # untimed: values without `_ts`
    # two views: both fresh, none written, both old, one old, one never written (the other
    # fresh, then old)
    "feast": ["fresh", "absent", "stale", "partly", "one_view", "one_view_stale"],
}
COUNTED_AS = {  # how metrics must count a key in each state
    "absent": "absent",
    "stale": "stale",
    "untimed": "stale",
    "one_view_stale": "stale",
    "partly": "partly_stale",
}
KEYS_PER_BATCH = 3


def with_layout(bundle: ModelBundle, layout: str) -> ModelBundle:
    """The demo bundle reading its store features in ``layout``, values older than an hour
    dropped (feast: the views' paths of the harness's Feast world)."""
    view_of = {name: view for view, names in VIEWS.items() for name in names}
    features = [
        FeatureDef(f.name, "store", f"{view_of[f.name]}:{f.name}")
        if layout == "feast" and f.source == "store"
        else f
        for f in bundle.manifest.features
    ]
    feast = FeastDef(project="p", join_key="user_id") if layout == "feast" else None
    store = StoreDef(layout=layout, feast=feast, max_age_s=MAX_AGE_S)  # type: ignore[arg-type]
    manifest = msgspec.structs.replace(bundle.manifest, features=features, store=store)
    return ModelBundle(manifest, bundle.booster)


@dataclass
class StateStore:
    """Answers each key as Redis would for the state the test gave its entity, parsed by the
    layout's own reader of the replies."""

    manifest: Manifest
    states: dict[StoreKey, str]

    def fetch(self, keys: list[StoreKey]) -> StoreRows:
        width = len(self.manifest.store_features)
        row = np.arange(1, width + 1, dtype=np.float32)
        states = [self.states[k] for k in keys]
        kind = self.manifest.store.layout
        if kind == "vector":
            vectors = [None if s == "absent" else vector_bytes(row) for s in states]
            return StoreRows(vectors_to_rows(vectors, width))
        if kind == "hash":
            return hash_fields_to_rows([hash_reply(s, row) for s in states], width)
        feast = FeastLayout.of(self.manifest)
        cells = [feast_reply(s, row, feast.views, feast.view_of_column) for s in states]
        values, written_at = feast.rows(cells)
        return StoreRows(values, written_at[:, feast.view_of_column])


def hash_reply(state: str, row: np.ndarray) -> list[bytes | None]:
    if state == "absent":
        return [None] * (len(row) + 1)
    stamp = {"fresh": repr(FRESH).encode(), "stale": repr(OLD).encode(), "untimed": None}[state]
    return [repr(float(v)).encode() for v in row] + [stamp]


def feast_reply(
    state: str, row: np.ndarray, views: list[str], view_of_column: np.ndarray
) -> list[bytes | None]:
    """HMGET reply of an entity: each feature's serialized Value, then each view's _ts."""
    # per view: its write time, or None where the view was never written
    by_state: dict[str, list[float | None]] = {
        "fresh": [FRESH, FRESH],
        "absent": [None, None],
        "stale": [OLD, OLD],
        "partly": [FRESH, OLD],
        "one_view": [FRESH, None],
        "one_view_stale": [None, OLD],
    }
    written = by_state[state]
    cells: list[bytes | None] = [
        None if written[view] is None else bytes([DOUBLE_TAG]) + struct.pack("<d", value)
        for value, view in zip(row.tolist(), view_of_column.tolist(), strict=True)
    ]
    return cells + [None if at is None else timestamp(at) for at in written[: len(views)]]


def timestamp(seconds: float) -> bytes:
    """A serialized google.protobuf.Timestamp of whole seconds."""
    value, out = int(seconds), bytearray([0x08])
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes(out + bytes([value]))


def events(n: int) -> list[Record]:
    return [
        Record(json.dumps({"event_id": f"e{i}", "entity_id": f"u{i}", "amount": 1.5}).encode(), i)
        for i in range(n)
    ]


@pytest.mark.parametrize("layout", list(STATES))
def test_every_mix_of_absent_stale_and_partly_stale_keys_is_scored_and_counted_apart(
    bundle: ModelBundle, layout: str
) -> None:
    laid_out = with_layout(bundle, layout)
    features = FeatureLayout(laid_out.manifest)
    records = events(KEYS_PER_BATCH)
    keys = [features.store_key(f"u{i}") for i in range(KEYS_PER_BATCH)]
    store = StateStore(laid_out.manifest, {})
    summary, telemetry = RunSummary(), Telemetry(laid_out.name, laid_out.version)
    window = MetricsInterval("w", laid_out.name, laid_out.version)
    ledger = BatchLedger(summary, window, telemetry)
    batches = pipeline_of(laid_out, store)
    expected = {"absent": 0, "stale": 0, "partly_stale": 0}
    combinations = list(itertools.product(STATES[layout], repeat=KEYS_PER_BATCH))
    for states in combinations:
        store.states = dict(zip(keys, states, strict=True))
        sent = batches.run(records)
        ledger.record(sent)
        scored = sent.stats.outputs
        counted = {
            "absent": scored.store_misses,
            "stale": scored.stale_keys,
            "partly_stale": scored.partly_stale_keys,
        }
        assert counted == {
            what: sum(COUNTED_AS.get(s) == what for s in states) for what in counted
        }, states
        assert len(scored.predictions) == KEYS_PER_BATCH
        for what, n in counted.items():
            expected[what] += n

    assert summary.predictions == KEYS_PER_BATCH * len(combinations)
    assert telemetry.guard.failures == {}
    record = window.close(0, [])
    assert (record.store_misses, record.store_stale, record.store_partly_stale) == (
        expected["absent"],
        expected["stale"],
        expected["partly_stale"],
    )
    sample = telemetry.registry.get_sample_value
    assert sample("streamserve_feature_store_misses_total") == expected["absent"]
    assert sample("streamserve_feature_store_stale_total") == expected["stale"]
    assert sample("streamserve_feature_store_partly_stale_total") == expected["partly_stale"]
    if layout == "feast":
        assert min(expected.values()) > 0


def pipeline_of(bundle: ModelBundle, store: StateStore) -> BatchPipeline:
    served = serving(bundle, store)  # type: ignore[arg-type]
    sink = KafkaSink(FakeProducer())  # type: ignore[arg-type]
    return BatchPipeline("w", lambda: served, ScoringThreads("wait"), sink, TOPICS, lambda: 5_000)


def failing(*_: object) -> None:
    raise ValueError("Counters can only be incremented by non-negative amounts.")


@pytest.mark.parametrize(
    "broken",
    [
        lambda ledger: setattr(ledger.telemetry, "record_batch", failing),
        lambda ledger: setattr(ledger.metrics, "record_batch", failing),
        lambda ledger: setattr(ledger.summary, "batch_done", failing),
    ],
    ids=["prometheus", "metrics record", "run summary"],
)
def test_a_failing_book_is_logged_and_counted_and_the_others_still_count(
    bundle: ModelBundle, broken: Callable[[BatchLedger], None], caplog: pytest.LogCaptureFixture
) -> None:
    store = StateStore(bundle.manifest, {})
    store.states = {k: "fresh" for k in [f"feat:u{i}" for i in range(2)]}
    telemetry = Telemetry(bundle.name, bundle.version)
    ledger = BatchLedger(RunSummary(), MetricsInterval("w", bundle.name, bundle.version), telemetry)
    broken(ledger)
    batches = pipeline_of(bundle, store)

    for _ in range(3):
        ledger.record(batches.run(events(2)))  # does not raise

    (what,) = telemetry.guard.failures
    assert telemetry.guard.failures[what] == 3
    failures = telemetry.registry.get_sample_value(
        "streamserve_telemetry_errors_total", {"what": what}
    )
    assert failures == 3
    logged = [r for r in caplog.records if r.name == "streamserve.telemetry"]
    assert len(logged) == 1 and logged[0].exc_info  # once, with the traceback
    assert "non-negative" in caplog.text
    if what != "run summary":
        assert ledger.summary.predictions == 6
    if what != "prometheus":
        text = generate_latest(telemetry.registry).decode()
        assert 'streamserve_events_total{outcome="prediction"} 6.0' in text


def test_a_failing_metrics_record_starts_the_next_interval_afresh(bundle: ModelBundle) -> None:
    window = MetricsInterval("w", bundle.name, bundle.version)
    window.latencies.append(np.array([1.0]))
    window.batch_sizes.append(1)
    window.batch_sizes.append("not a number")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        window.close(1_000, [])
    assert window.batch_sizes == [] and window.latencies == [] and window.started_ms == 1_000
