"""Hostile input, property-based: whatever bytes arrive, every record ends as exactly one
prediction or one dead letter with a class and a reason, and the scorer never raises."""

from __future__ import annotations

import json
import math
from typing import Any

import msgspec
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamserve.core import records as rec
from streamserve.core.model import ModelBundle
from tests.unit.fakes import FakeProducer, MemoryStore, Record, pipeline

Output = tuple[bytes | None, bytes | None, list[tuple[str, Any]]]


def outputs(bundle: ModelBundle, records: list[Record]) -> tuple[list[Output], list[Output]]:
    """(predictions, dead letters) as (key, value, headers), from one batch through the pipeline."""
    producer = FakeProducer(auto_ack=False)
    store = MemoryStore({}, len(bundle.manifest.store_features))
    pipeline(bundle, store, producer).run(records)
    found = [(p.topic, (p.key, p.value, p.headers)) for p in producer.pending]
    return (
        [o for t, o in found if t == "predictions"],
        [o for t, o in found if t == "dead-letters"],
    )


VALID = {
    "event_id": "ev-1",
    "entity_id": "u1",
    "amount": 12.5,
    "hour_of_day": 3,
    "merchant": {"risk": 0.1, "mcc": "5411"},
    "is_foreign": 0,
    "device_age_days": 100,
    "distance_km": 2.0,
}

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=50),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=20,
)
hostile_scalars = st.one_of(
    json_values,
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e400", "", " ", "0x10"]),
    st.just(float("nan")),
    st.just(float("inf")),
    st.just(1e39),
    st.just("x" * 10_000),
)


def encoded(value: object) -> bytes:
    """JSON text; NaN and Infinity are written the way Python's json module does."""
    return json.dumps(value).encode()


@st.composite
def events_with_one_field_replaced(draw: st.DrawFn) -> bytes:
    event = json.loads(json.dumps(VALID))
    paths = [
        ("event_id",),
        ("entity_id",),
        ("amount",),
        ("merchant",),
        ("merchant", "risk"),
        ("hour_of_day",),
        ("distance_km",),
    ]
    path = draw(st.sampled_from(paths))
    target = event
    for part in path[:-1]:
        target = target[part]
    if draw(st.booleans()):
        target[path[-1]] = draw(hostile_scalars)
    else:
        del target[path[-1]]
    return encoded(event)


def deep(depth: int) -> bytes:
    return b'{"event_id":"e","entity_id":"u","x":' + b"[" * depth + b"]" * depth + b"}"


def huge_entity_id(size: int) -> bytes:
    return b'{"event_id":"e","entity_id":"' + b"u" * size + b'"}'


raw_values = st.one_of(
    st.binary(max_size=300),
    json_values.map(encoded),
    events_with_one_field_replaced(),
    st.just(encoded(VALID)),
    st.integers(min_value=1, max_value=100_000).map(deep),
    st.just(1_000_000).map(huge_entity_id),
    st.none(),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    values=st.lists(raw_values, min_size=1, max_size=20),
    key=st.one_of(st.none(), st.binary(max_size=2_000)),
)
def test_every_record_ends_as_one_prediction_or_one_dead_letter(
    bundle: ModelBundle, values: list[bytes | None], key: bytes | None
) -> None:
    records = [Record(v, offset, _key=key) for offset, v in enumerate(values)]
    predictions, dead_letters = outputs(bundle, records)

    assert len(predictions) + len(dead_letters) == len(records)
    sources = [
        msgspec.json.decode(v or b"", type=rec.Provenance).source_offset for _, v, _ in predictions
    ]
    sources += [int(dict(h)[rec.HEADER_SOURCE_OFFSET]) for _, _, h in dead_letters]
    assert sorted(sources) == list(range(len(records)))
    for key_out, value, headers in dead_letters:
        found = dict(headers)
        assert found[rec.HEADER_ERROR_CLASS] in rec.ErrorClass.__args__  # type: ignore[attr-defined]
        assert found[rec.HEADER_ERROR_REASON]
        assert len(found[rec.HEADER_ERROR_REASON]) <= 500
        if value is None and "too large" in found[rec.HEADER_ERROR_REASON]:
            continue  # too big to re-publish: provenance only (see the test below)
        assert (key_out, value) in {(r.key(), r.value()) for r in records}  # bytes untouched
    for _, value, _ in predictions:
        prediction = msgspec.json.decode(value or b"", type=rec.Prediction)
        assert math.isfinite(prediction.score)
        assert prediction.missing_features <= len(bundle.manifest.features)


def test_an_oversized_entity_id_is_a_dead_letter_not_an_oversized_output(
    bundle: ModelBundle,
) -> None:
    records = [Record(huge_entity_id(rec.MAX_ID_CHARS + 1), 0), Record(huge_entity_id(8), 1)]
    predictions, dead_letters = outputs(bundle, records)
    assert len(predictions) == 1
    [(_, _, headers)] = dead_letters
    assert dict(headers)[rec.HEADER_ERROR_CLASS] == "invalid_event"
    assert "1024" in dict(headers)[rec.HEADER_ERROR_REASON]


def test_a_dead_letter_too_big_to_publish_keeps_its_provenance_but_not_its_value(
    bundle: ModelBundle,
) -> None:
    huge = b"{" + b" " * 950_000  # malformed, and nearly at the broker's message size limit
    records = [Record(huge, 7), Record(b"not json", 8)]
    _, (big, small) = outputs(bundle, records)
    big_key, big_value, big_headers = big
    assert big_value is None and big_key == b"k"
    headers = dict(big_headers)
    assert "too large" in headers[rec.HEADER_ERROR_REASON]
    assert headers[rec.HEADER_SOURCE_OFFSET] == "7" and "trace" not in headers
    assert small[1] == b"not json" and ("trace", b"t-1") in small[2]


def test_a_huge_batch_of_garbage_is_all_dead_letters(bundle: ModelBundle) -> None:
    rng = np.random.default_rng(5)
    records = [Record(rng.bytes(int(n)), i) for i, n in enumerate(rng.integers(1, 64, 2_000))]
    predictions, dead_letters = outputs(bundle, records)
    assert len(dead_letters) == 2_000 and not predictions
