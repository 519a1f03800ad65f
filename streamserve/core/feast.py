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
from itertools import chain
from typing import Any

import numpy as np

from streamserve.core.decoding.column_reader import varint
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
        width = len(self.view_of_column)
        cells = slots(replies, len(self.fields))
        values = decode_values(cells[:, :width].reshape(-1, SLOT)).reshape(len(replies), width)
        stamps = decode_timestamps(cells[:, width:].reshape(-1, SLOT))
        for flat in np.flatnonzero(np.isnan(stamps) & (cells[:, width:, 0] != 0).ravel()).tolist():
            key, view = divmod(flat, len(self.views))  # not the usual shape: one at a time
            stamps[flat] = decode_timestamp(replies[key][width + view])
        return values, stamps.reshape(len(replies), len(self.views))


SLOT = 12  # bytes: the longest number a Value or Timestamp holds (tag + 10-byte varint; 2 x
# (tag + 5-byte varint)); longer values are strings or lists, never numbers


def slots(replies: Sequence[Sequence[bytes | None]], width: int) -> np.ndarray:
    """HMGET replies -> uint8 (keys, width, SLOT): each value's first SLOT bytes, zero-padded.
    One numpy conversion, no Python code per value. An absent value (None) is converted to
    ``b"None"``, whose first byte is no tag of a number, so it reads as absent."""
    flat = np.fromiter(chain.from_iterable(replies), dtype=f"S{SLOT}", count=len(replies) * width)
    return flat.view(np.uint8).reshape(len(replies), width, SLOT)


def decode_values(cells: np.ndarray) -> np.ndarray:
    """Serialized ``feast.types.Value`` messages, as SLOT-byte rows -> float32, NaN for empty,
    null and anything that is not a number. Read by the tag of the Value's one field: double,
    float, int64, int32 or bool; the bytes past the number are not checked (Redis returns
    what Feast wrote whole)."""
    out = np.full(len(cells), np.nan, dtype=np.float32)
    tags = cells[:, 0]
    for tag, size, dtype in ((DOUBLE_TAG, 8, "<f8"), (FLOAT_TAG, 4, "<f4")):
        rows = np.flatnonzero(tags == tag)
        if len(rows):
            out[rows] = np.ascontiguousarray(cells[rows, 1 : 1 + size]).view(dtype).ravel()
    integers = np.flatnonzero((tags == INT64_TAG) | (tags == INT32_TAG) | (tags == BOOL_TAG))
    if len(integers):  # a varint; a negative int64 or int32 takes ten bytes
        numbers, varint_bytes = _varints(cells[integers], 1, 10)
        whole = varint_bytes <= 10
        out[integers[whole]] = numbers.view(np.int64)[whole]
    return out


def _varints(grid: np.ndarray, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The base-128 varint starting at column ``start`` of each row (at most ``count`` bytes):
    (its value as uint64, its length in bytes). The length is ``count + 1`` where it does not
    end, or ends in a zero byte after its first: no writer makes one, so that is the zero
    padding of a value cut short."""
    window = grid[:, start : start + count]
    going = np.cumprod(window >= 0x80, axis=1, dtype=np.uint8)  # 1 while continuation bits
    used = np.ones(window.shape, dtype=np.uint64)
    used[:, 1:] = going[:, :-1]
    shifts = np.arange(0, 7 * count, 7, dtype=np.uint64)
    parts = ((window & 0x7F).astype(np.uint64) << shifts) * used
    size = 1 + going.sum(axis=1, dtype=np.intp)
    last = window[np.arange(len(window)), np.minimum(size, count) - 1]
    size[(size > 1) & (last == 0)] = count + 1
    return parts.sum(axis=1, dtype=np.uint64), size


def decode_timestamps(cells: np.ndarray) -> np.ndarray:
    """Serialized ``google.protobuf.Timestamp`` messages, as SLOT-byte rows -> epoch seconds.
    Only the usual shape is read: seconds as a 5-byte varint (1978 to 3058), then nanos or
    nothing; NaN for anything else (absent, or for ``decode_timestamp`` to read)."""
    seconds, seconds_bytes = _varints(cells, 1, 5)
    nanos, nanos_bytes = _varints(cells, 7, 5)  # tag 0x10 at column 6, then a varint
    ends = cells[:, 6] == 0
    with_nanos = (cells[:, 6] == 0x10) & (nanos_bytes <= 5)
    fast = (cells[:, 0] == 0x08) & (seconds_bytes == 5) & (ends | with_nanos)
    return np.where(fast, seconds + np.where(with_nanos, nanos, 0) / 1e9, np.nan)


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
