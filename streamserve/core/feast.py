"""Feast's Redis online store, read without Feast: the layout `feast 0.67` writes with entity
key serialization version 3 (``feast/infra/online_stores/redis.py`` and
``feast/infra/key_encoding_utils.py``; the spec page in Feast's docs is older than this).

- One Redis hash per entity key, shared by every feature view of that entity. Its key is the
  serialized entity key then the project name: the number of join keys (u32 little-endian),
  each join key sorted by name as (value type STRING, its length, its UTF-8 bytes), then each
  value as (its value type, its length, its bytes): UTF-8 for a string, little-endian for
  int32 and int64.
- A feature's field is the murmur3 (32-bit, seed 0) hash of ``"<feature view>:<feature>"``,
  as 4 little-endian bytes; its value a serialized ``feast.types.Value`` (a one-field
  message: double, float, int64, int32, bool, ...).
- ``_ts:<feature view>`` holds the view's event time, a serialized
  ``google.protobuf.Timestamp``.

Pure: the Redis adapter sends the fields asked for here and hands back the replies.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamserve.core.column_reader import varint
from streamserve.core.model import Manifest, feast_path

STRING_TYPE, INT32_TYPE, INT64_TYPE = 2, 3, 4  # feast.types.ValueType of a join key
VALUE_TYPES = {"string": STRING_TYPE, "int32": INT32_TYPE, "int64": INT64_TYPE}
U32 = struct.Struct("<I")
DOUBLE_TAG, FLOAT_TAG, INT64_TAG, INT32_TAG, BOOL_TAG = 0x29, 0x35, 0x20, 0x18, 0x38


def murmur3_32(data: bytes, seed: int = 0) -> int:
    """MurmurHash3 x86 32-bit, unsigned (what the ``mmh3`` package's ``hash`` gives Feast)."""
    c1, c2, mask = 0xCC9E2D51, 0x1B873593, 0xFFFFFFFF
    h = seed & mask
    whole = len(data) - len(data) % 4
    for (k,) in struct.iter_unpack("<I", data[:whole]):
        k = (k * c1) & mask
        k = ((k << 15) | (k >> 17)) & mask
        h ^= (k * c2) & mask
        h = ((h << 13) | (h >> 19)) & mask
        h = (h * 5 + 0xE6546B64) & mask
    tail = data[whole:]
    if tail:
        k = int.from_bytes(tail, "little")
        k = (k * c1) & mask
        k = ((k << 15) | (k >> 17)) & mask
        h ^= (k * c2) & mask
    h ^= len(data)
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & mask
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & mask
    return h ^ (h >> 16)


def feature_field(view: str, feature: str) -> bytes:
    """The hash field Feast stores a feature view's feature under."""
    return murmur3_32(f"{view}:{feature}".encode()).to_bytes(4, "little")


def timestamp_field(view: str) -> bytes:
    return f"_ts:{view}".encode()


@dataclass(frozen=True)
class FeastLayout:
    """What a batch reads from Feast's Redis hashes for one model: every store feature's field
    (grouped by view) and each view's `_ts`, in one HMGET per entity."""

    fields: list[bytes]  # the store features' fields, in manifest order, then each view's _ts
    views: list[str]  # the views, in the order of their _ts fields
    view_of_column: np.ndarray  # int, per store feature: its view's index in ``views``
    key_prefix: bytes  # the serialized join key's name part
    value_type: int
    project: bytes

    @classmethod
    def of(cls, manifest: Manifest) -> FeastLayout:
        spec = manifest.store.feast
        if spec is None:
            raise ValueError("the manifest's store has no feast section")
        views: list[str] = []
        columns, fields = [], []
        for feature in manifest.store_features:
            view, name = feast_path(feature.path)
            if view not in views:
                views.append(view)
            columns.append(views.index(view))
            fields.append(feature_field(view, name))
        join_key = spec.join_key.encode()
        prefix = U32.pack(1) + U32.pack(STRING_TYPE) + U32.pack(len(join_key)) + join_key
        return cls(
            fields=[*fields, *(timestamp_field(v) for v in views)],
            views=views,
            view_of_column=np.array(columns, dtype=np.intp),
            key_prefix=prefix,
            value_type=VALUE_TYPES[spec.join_key_type],
            project=spec.project.encode(),
        )

    def max_ages(self, manifest: Manifest) -> np.ndarray:
        """Per store feature, its view's max age in seconds (``view_max_age_s``, else the
        store's ``max_age_s``); inf where neither is set."""
        spec, default = manifest.store.feast, manifest.store.max_age_s
        per_view = spec.view_max_age_s if spec is not None else {}
        ages = [per_view.get(view, default or np.inf) for view in self.views]
        return np.array(ages, dtype=np.float64)[self.view_of_column]

    def key(self, entity_id: Any) -> bytes | None:
        """The Redis key of an entity; None when the id cannot be a value of the join key's
        type (text for an int64 key, a number out of range)."""
        try:
            if self.value_type == STRING_TYPE:
                value = str(entity_id).encode()
            else:
                size = 4 if self.value_type == INT32_TYPE else 8
                value = int(entity_id).to_bytes(size, "little", signed=True)
        except (ValueError, OverflowError):
            return None
        typed = U32.pack(self.value_type) + U32.pack(len(value)) + value
        return self.key_prefix + typed + self.project

    def rows(self, replies: Sequence[Sequence[bytes | None]]) -> tuple[np.ndarray, np.ndarray]:
        """HMGET replies -> (float32 rows in manifest order, NaN where absent, null or not a
        number; float64 write times, epoch seconds per key and view, NaN where absent)."""
        width, n_views = len(self.view_of_column), len(self.views)
        flat = [value or b"" for reply in replies for value in reply[:width]]
        values = decode_values(flat).reshape(len(replies), width)
        stamps = [value or b"" for reply in replies for value in reply[width:]]
        return values, decode_timestamps(stamps).reshape(len(replies), n_views)


def decode_values(values: list[bytes]) -> np.ndarray:
    """Serialized ``feast.types.Value`` messages -> float32, NaN for empty, null and anything
    that is not a number. Doubles and floats (the usual features) are read with numpy in one
    pass over the joined bytes; integers and bools one at a time."""
    out = np.full(len(values), np.nan, dtype=np.float32)
    if not values:
        return out
    lengths = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
    joined = np.frombuffer(b"".join(values), dtype=np.uint8)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    present = lengths > 0
    tags = np.zeros(len(values), dtype=np.uint8)
    tags[present] = joined[starts[present]]
    for tag, size, dtype in ((DOUBLE_TAG, 8, "<f8"), (FLOAT_TAG, 4, "<f4")):
        rows = np.flatnonzero((tags == tag) & (lengths == size + 1))
        if len(rows):
            index = starts[rows, None] + 1 + np.arange(size)
            out[rows] = joined[index].view(dtype).ravel()
    integers = np.flatnonzero(np.isin(tags, (INT64_TAG, INT32_TAG, BOOL_TAG)))
    if len(integers):  # tag, then a varint (a negative int64 or int32: ten bytes)
        chosen = [values[i][:11].ljust(11, b"\0") for i in integers.tolist()]
        grid = np.frombuffer(b"".join(chosen), dtype=np.uint8).reshape(len(chosen), 11)
        numbers, varint_bytes = _varints(grid, 1, 10)
        whole = lengths[integers] == 1 + varint_bytes
        out[integers[whole]] = numbers.view(np.int64)[whole]
    return out


def _varints(grid: np.ndarray, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The base-128 varint starting at column ``start`` of each row (at most ``count`` bytes):
    (its value as uint64, its length in bytes; more than ``count`` if it does not end)."""
    going = np.cumprod(grid[:, start : start + count] >= 0x80, axis=1)
    size = 1 + going.sum(axis=1)
    used = np.concatenate([np.ones((len(grid), 1), np.uint64), going[:, :-1].astype(np.uint64)], 1)
    value = np.zeros(len(grid), dtype=np.uint64)
    for i in range(count):
        byte = (grid[:, start + i] & 0x7F).astype(np.uint64)
        value |= (byte << np.uint64(7 * i)) * used[:, i]
    return value, size


def decode_timestamps(values: list[bytes]) -> np.ndarray:
    """Serialized ``google.protobuf.Timestamp`` messages -> epoch seconds, NaN where absent.
    The usual shape, seconds as a 5-byte varint (1978 to 3058) then nanos, is read with numpy
    in one pass; any other one at a time."""
    out = np.full(len(values), np.nan)
    if not values:
        return out
    padded = np.frombuffer(b"".join(v[:12].ljust(12, b"\0") for v in values), dtype=np.uint8)
    grid = padded.reshape(len(values), 12)
    seconds, seconds_bytes = _varints(grid, 1, 5)
    nanos, nanos_bytes = _varints(grid, 7, 5)  # tag 0x10 at column 6, then a varint
    lengths = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
    no_nanos = lengths == 6
    with_nanos = (grid[:, 6] == 0x10) & (lengths == 7 + nanos_bytes) & (nanos_bytes <= 5)
    fast = (grid[:, 0] == 0x08) & (seconds_bytes == 5) & (no_nanos | with_nanos)
    out[fast] = seconds[fast] + np.where(with_nanos[fast], nanos[fast], 0) / 1e9
    for row in np.flatnonzero(~fast & (lengths > 0)).tolist():
        out[row] = decode_timestamp(values[row])
    return out


def decode_timestamp(value: bytes | None) -> float:
    """A serialized ``google.protobuf.Timestamp`` -> epoch seconds; NaN when absent or cut."""
    if not value:
        return float("nan")
    fields, at = {}, 0
    try:
        while at < len(value):
            tag = value[at]
            fields[tag], at = varint(value, at + 1)
    except (IndexError, ValueError):  # cut short, or a varint past ten bytes
        return float("nan")
    seconds = fields.get(0x08, 0)
    if seconds >= 1 << 63:
        seconds -= 1 << 64
    return seconds + fields.get(0x10, 0) / 1e9
