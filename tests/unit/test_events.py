import msgspec
import numpy as np
import pytest

from streamserve.core.decoding.events import EventDecoder
from streamserve.core.model import EventDef, FeatureDef, Manifest

MANIFEST = Manifest(
    name="t",
    version="1",
    features=[
        FeatureDef("amount", "event"),
        FeatureDef("risk", "event", "merchant.risk"),
        FeatureDef("history", "store"),
    ],
    event=EventDef(id_field="id", entity_field="user"),
)


def decode(*values: bytes | None):
    return EventDecoder(MANIFEST).decode(list(values))


def test_good_events_decode_to_ids_and_float32_columns_with_nested_paths() -> None:
    events, rejections = decode(
        b'{"id": "a", "user": "u1", "amount": 12.5, "merchant": {"risk": 0.25}, "extra": [1]}',
        b'{"id": 7, "user": 42, "amount": 3}',
    )
    assert rejections == []
    assert events.indices == [0, 1]
    assert events.event_ids == ["a", 7]
    assert events.entity_ids == ["u1", 42]
    assert events.event_features.dtype == np.float32
    np.testing.assert_array_equal(events.event_features, [[12.5, 0.25], [3.0, np.nan]])


def test_null_features_are_missing_not_errors() -> None:
    events, rejections = decode(b'{"id": "a", "user": "u", "amount": null, "merchant": null}')
    assert rejections == []
    assert np.isnan(events.event_features).all()


@pytest.mark.parametrize(
    ("value", "error_class", "reason_part"),
    [
        (b'{"id": "a", "user": ', "malformed_json", "malformed"),
        (b"", "empty_value", "empty"),
        (None, "empty_value", "empty"),
        (b'{"id": "a", "amount": 1}', "missing_entity_id", "`user`"),
        (b'{"id": "a", "user": null}', "missing_entity_id", "`$.user`"),
        (b'{"user": "u"}', "missing_event_id", "`id`"),
        (b'{"id": "a", "user": "u", "amount": "12"}', "invalid_feature", "`$.amount`"),
        (b'{"id": "a", "user": "u", "merchant": {"risk": true}}', "invalid_feature", "risk"),
        (b'{"id": "a", "user": "u", "amount": 1e39}', "invalid_feature", "float32 range"),
        (b'{"id": "a", "user": ""}', "invalid_event", "`$.user`"),
        (b"[1, 2]", "invalid_event", "array"),
    ],
)
def test_bad_events_are_rejected_with_a_class_and_a_reason(
    value: bytes | None, error_class: str, reason_part: str
) -> None:
    good = b'{"id": "g", "user": "u", "amount": 1}'
    events, rejections = decode(good, value, good)
    assert events.indices == [0, 2]
    assert [(r.index, r.error_class) for r in rejections] == [(1, error_class)]
    assert reason_part in rejections[0].reason


def test_decoder_for_a_manifest_without_event_features() -> None:
    manifest = Manifest(name="t", version="1", features=[FeatureDef("h", "store")])
    events, rejections = EventDecoder(manifest).decode([b'{"event_id": 1, "entity_id": "e"}'])
    assert rejections == [] and events.event_features.shape == (1, 0)


def test_decoded_values_are_the_json_values() -> None:
    rng = np.random.default_rng(0)
    amounts = rng.normal(size=50) * 1e3
    values = [
        msgspec.json.encode({"id": i, "user": "u", "amount": float(a)})
        for i, a in enumerate(amounts)
    ]
    events, _ = EventDecoder(MANIFEST).decode(values)
    np.testing.assert_array_equal(events.event_features[:, 0], amounts.astype(np.float32))
