"""Feast's Redis online-store format, read without Feast (pure): the expected bytes below are
what feast 0.67 itself produced (`_redis_key`, `Value.SerializeToString`, `mmh3.hash`); the
integration test `test_feast.py` reads what Feast wrote to a real Redis."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest

from streamserve.core.feast import (
    FeastLayout,
    decode_timestamp,
    decode_values,
    feature_field,
    murmur3_32,
    slots,
)
from streamserve.core.features import FeatureLayout, StoreKey, StoreRows, check_freshness
from streamserve.core.model import FeastDef, FeatureDef, Manifest, StoreDef, check_manifest
from streamserve.errors import ModelBundleError
from streamserve.io.store import CachedFeatureStore


def manifest(join_key_type: str = "string", path: str = "user_stats:spend") -> Manifest:
    feast = FeastDef(project="proj", join_key="user_id", join_key_type=join_key_type)  # type: ignore[arg-type]
    return Manifest(
        name="t",
        version="1",
        features=[
            FeatureDef("amount", "event"),
            FeatureDef("spend", "store", path),
            FeatureDef("risk", "store", "merchant_stats:risk"),
            FeatureDef("count", "store", "user_stats:count"),
        ],
        store=StoreDef(layout="feast", feast=feast),
    )


@pytest.mark.parametrize(
    ("text", "expected"),  # mmh3.hash(text, signed=False)
    [("", 0), ("hello", 613153351), ("abcde", 3902511862), ("views_é:x", 2077810797)],
)
def test_murmur3_matches_the_mmh3_package(text: str, expected: int) -> None:
    assert murmur3_32(text.encode()) == expected


def test_fields_and_keys_are_the_bytes_feast_writes() -> None:
    assert feature_field("user_stats", "spend") == bytes.fromhex("8e6270bb")
    by_text = FeastLayout.of(manifest())
    assert by_text.key("u1") == bytes.fromhex(
        "010000000200000007000000757365725f69640200000002000000753170726f6a"
    )
    by_number = FeastLayout.of(manifest("int64"))
    assert by_number.key(42) == bytes.fromhex(
        "010000000200000007000000757365725f696404000000080000002a0000000000000070726f6a"
    )
    assert by_number.key("42") == by_number.key(42)  # an id given as text
    assert by_number.key("u42") is None  # cannot be an int64: its features are missing


def test_values_decode_to_float32_and_everything_else_is_nan() -> None:
    values = [
        bytes.fromhex("29000000000000f83f"),  # double 1.5
        bytes.fromhex("350000c03f"),  # float 1.5
        bytes.fromhex("20fdffffffffffffffff01"),  # int64 -3
        bytes.fromhex("1807"),  # int32 7
        bytes.fromhex("3801"),  # bool true
        bytes.fromhex("980100"),  # null
        b"",  # absent
        None,  # absent
        bytes.fromhex("12027531"),  # string "u1": not a number
        bytes.fromhex("0a0a") + bytes(10),  # a string longer than a slot
    ]
    got = read_values(values)
    np.testing.assert_array_equal(got[:5], [1.5, 1.5, -3.0, 7.0, 1.0])
    assert np.isnan(got[5:]).all()


def read_values(values: Sequence[bytes | None]) -> np.ndarray:
    return decode_values(slots([values], len(values))[0])


def test_timestamps_decode_to_epoch_seconds() -> None:
    """google.protobuf.Timestamp bytes as Feast writes `_ts:<view>`."""
    assert decode_timestamp(bytes.fromhex("0880f7c4d506")) == 1790000000.0  # seconds only
    assert decode_timestamp(bytes.fromhex("0880f7c4d5061080ade204")) == 1790000000.01
    assert math.isnan(decode_timestamp(None)) and math.isnan(decode_timestamp(b"\x08\x80"))


def test_a_batch_reads_every_timestamp_shape() -> None:
    """The usual shape (1978 to 3058) in one numpy pass, any other (1970, before 1970, cut
    short, absent) one at a time: every one as the scalar reader reads it."""
    stamps = [
        bytes.fromhex("0880f7c4d506"),
        bytes.fromhex("0880f7c4d5061080ade204"),
        bytes.fromhex("080a"),  # 10 s after 1970
        bytes.fromhex("08f6ffffffffffffffff011001"),  # -10 s, 1 ns: 13 bytes
        bytes.fromhex("1005"),  # 0 s, 5 ns
        bytes.fromhex("0880f7c4d5"),  # cut short
        None,
        b"",
    ]
    layout = FeastLayout.of(manifest())  # two views: two stamps per key
    replies = [[b"", b"", b"", *stamps[i : i + 2]] for i in range(0, len(stamps), 2)]
    _, written_at = layout.rows(replies)
    expected = [decode_timestamp(value) for value in stamps]
    np.testing.assert_array_equal(written_at.ravel(), expected)
    assert expected[3] == -10 + 1e-9 and expected[4] == 5e-9


def test_each_view_ages_on_its_own() -> None:
    """Two views on one entity, one of them old: only its features go missing (stale)."""
    layout = FeastLayout.of(manifest())
    assert layout.views == ["user_stats", "merchant_stats"]
    values = np.array([[1.0, 2.0, 3.0], [4.0, np.nan, 6.0]], dtype=np.float32)
    per_view = np.array([[1_000.0, 100.0], [1_000.0, np.nan]])
    found = StoreRows(values, per_view[:, layout.view_of_column])
    lookup = check_freshness(found, now_s=1_010.0, max_age_s=60.0)
    np.testing.assert_array_equal(lookup.rows[0], [1.0, np.nan, 3.0])
    np.testing.assert_array_equal(lookup.rows[1], [4.0, np.nan, 6.0])
    assert (lookup.stale, lookup.partly_stale, lookup.absent) == (0, 1, 0)  # user_stats kept
    np.testing.assert_array_equal(lookup.ages_s, [910.0, 10.0])  # each key's oldest view


def test_a_feast_manifest_names_each_store_feature_by_view_and_feature() -> None:
    with pytest.raises(ModelBundleError, match="<feature view>:<feature>, not 'spend'"):
        check_manifest(manifest(path="spend"))
    layout_only = Manifest(
        name="t", version="1", features=[FeatureDef("x", "event")], store=StoreDef(layout="feast")
    )
    with pytest.raises(ModelBundleError, match=r"store\.feast section"):
        check_manifest(layout_only)


def test_a_feast_manifest_refuses_a_feature_typed_as_something_other_than_a_number() -> None:
    """`streamserve model check` (and the worker's start-up) read the types the manifest
    records; a string or list would read as missing on every event."""
    typed = manifest()
    assert typed.store.feast is not None
    typed.store.feast.feature_types = {"user_stats:spend": "DOUBLE", "user_stats:count": "INT64"}
    check_manifest(typed)
    typed.store.feast.feature_types["merchant_stats:risk"] = "STRING_LIST"
    with pytest.raises(
        ModelBundleError, match=r"'risk' \(merchant_stats:risk\) is a Feast STRING_LIST"
    ):
        check_manifest(typed)


def test_integers_decode_across_their_whole_range() -> None:
    """Varints of one to ten bytes, as Feast's Value writes int64, int32 and bool (a random
    2,000 of each type matched too, while this was written)."""
    values = [
        bytes.fromhex("20ffffffffffffffff7f"),  # int64 max
        bytes.fromhex("2080808080808080808001"),  # int64 min
        bytes.fromhex("20ffffffffffffffffff01"),  # int64 -1
        bytes.fromhex("1880808080f8ffffffff01"),  # int32 min
        bytes.fromhex("1800"),  # int32 0
        bytes.fromhex("3800"),  # bool false
        bytes.fromhex("20" + "ff" * 11),  # a varint that does not end in ten bytes
        bytes.fromhex("20ffff"),  # a varint cut short
    ]
    expected = [2**63 - 1, -(2**63), -1, -(2**31), 0, 0, np.nan, np.nan]
    np.testing.assert_array_equal(read_values(values), np.array(expected, dtype=np.float32))


def test_a_views_own_max_age_overrides_the_stores() -> None:
    """user_stats may be 60 s old (its TTL), merchant_stats has no max age at all."""
    with_ttl = manifest()
    assert with_ttl.store.feast is not None
    with_ttl.store.feast.view_max_age_s["user_stats"] = 60.0
    layout = FeatureLayout(with_ttl)
    assert isinstance(layout.max_age_s, np.ndarray)
    np.testing.assert_array_equal(layout.max_age_s, [60.0, np.inf, 60.0])
    values = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)
    written = np.array([[900.0, np.nan, 900.0]])  # merchant_stats without a timestamp
    lookup = check_freshness(StoreRows(values, written), 1_000.0, layout.max_age_s)
    np.testing.assert_array_equal(lookup.rows, [[np.nan, 2.0, np.nan]])
    assert (lookup.stale, lookup.partly_stale) == (0, 1)  # merchant_stats kept


def test_the_local_cache_keeps_each_views_write_time() -> None:
    class Store:
        def fetch(self, keys: list[StoreKey]) -> StoreRows:
            rows = np.ones((len(keys), 3), dtype=np.float32)
            return StoreRows(rows, np.tile([10.0, 20.0, 10.0], (len(keys), 1)))

    cached = CachedFeatureStore(Store(), ttl_s=60, max_keys=10, timed=True, clock=lambda: 0.0)
    cached.fetch([b"a"])
    again = cached.fetch([b"a", b"b"])
    assert again.cache_hits == 1
    assert again.written_at is not None
    np.testing.assert_array_equal(again.written_at, [[10.0, 20.0, 10.0]] * 2)
