"""Feature matrix assembly: event columns plus store rows, in manifest order, float32.

Missing values are NaN, which XGBoost treats as missing. The store layouts are parsed here (pure)
so the Redis adapter only moves bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from streamserve.core.feast import FeastLayout
from streamserve.core.model import ENTITY_PLACEHOLDER, Manifest

VECTOR_DTYPE = np.dtype("<f4")
StoreKey = str | bytes | None  # None: the entity cannot have a key (its features are missing)


@dataclass(frozen=True)
class StoreKeys:
    """The de-duplicated store keys of a batch and, per event, the index of its key."""

    keys: list[StoreKey]
    key_index: np.ndarray  # int64, one entry per event


class StoreRows(NamedTuple):
    """What a feature store returns for a list of keys."""

    values: np.ndarray  # float32 (keys, store features), manifest order; NaN where absent
    # float64 epoch s per key, or per key and store feature (feast: each view has its own);
    # NaN: unknown; None: the layout keeps no clock
    written_at: np.ndarray | None = None
    cache_hits: int = 0  # keys answered by the local cache


@dataclass(frozen=True)
class StoreLookup:
    """A batch's store rows after the freshness check, and what metrics report about them.

    Every key is in at most one of three counts: ``absent`` (the store holds no value for
    it), ``stale`` (it holds values, every one older than the model accepts: all dropped) and
    ``partly_stale`` (some of its values dropped as too old, some kept: a feast view past its
    TTL beside a fresh one)."""

    rows: np.ndarray  # float32 (keys, store features), NaN where absent or too old
    stale: int = 0
    ages_s: np.ndarray = field(default_factory=lambda: np.empty(0))  # of keys with a timestamp
    cache_hits: int = 0
    degraded: bool = False  # the store was down (policy degrade): every row is NaN
    absent: int = 0
    partly_stale: int = 0


def absent_keys(values: np.ndarray) -> int:
    """Keys for which the store returned no value at all (a model without store features
    looks nothing up, so misses nothing)."""
    if not values.shape[1]:
        return 0
    return int(np.isnan(values).all(axis=1).sum())


def check_freshness(
    found: StoreRows, now_s: float, max_age_s: float | np.ndarray | None
) -> StoreLookup:
    """Drop the values of keys older than ``max_age_s`` (NaN: missing to XGBoost), and of keys
    that have values but no timestamp when a max age is set: their age cannot be shown.
    ``max_age_s`` may be one per store feature (inf: none) where write times are too."""
    rows, written_at = found.values, found.written_at
    absent = absent_keys(rows)
    if written_at is None:
        return StoreLookup(rows, cache_hits=found.cache_hits, absent=absent)
    if written_at.ndim == 2:
        return _check_cell_freshness(found, now_s - written_at, max_age_s, absent)
    ages = now_s - written_at
    known = ~np.isnan(ages)
    stale = 0
    if max_age_s is not None and len(rows) and rows.shape[1]:
        has_values = ~np.isnan(rows).all(axis=1)
        too_old = has_values & ~(ages <= max_age_s)  # NaN age (no timestamp) counts as too old
        stale = int(too_old.sum())
        if stale:
            rows = rows.copy()
            rows[too_old] = np.nan
    return StoreLookup(rows, stale, ages[known], found.cache_hits, absent=absent)


def _check_cell_freshness(
    found: StoreRows, ages: np.ndarray, max_age_s: float | np.ndarray | None, absent: int
) -> StoreLookup:
    """``check_freshness`` with a write time per key and feature: each value is dropped on its
    own; a key is stale if every value it had was, partly stale if some were; its age is its
    oldest value's."""
    rows, stale, partly_stale = found.values, 0, 0
    if max_age_s is not None and rows.size:
        present = ~np.isnan(rows)
        limited = np.isfinite(max_age_s)  # a feature without a max age is never too old
        too_old = present & limited & ~(ages <= max_age_s)
        dropped = too_old.any(axis=1)
        if dropped.any():
            kept = (present & ~too_old).any(axis=1)
            stale = int((dropped & ~kept).sum())
            partly_stale = int((dropped & kept).sum())
            rows = rows.copy()
            rows[too_old] = np.nan
    known = ~np.isnan(ages).all(axis=1) if ages.shape[1] else np.zeros(len(ages), bool)
    oldest = np.nanmax(ages[known], axis=1) if known.any() else np.empty(0)
    return StoreLookup(
        rows, stale, oldest, found.cache_hits, absent=absent, partly_stale=partly_stale
    )


class FeatureLayout:
    """Where each manifest feature sits in the model input, and how store keys are named."""

    def __init__(self, manifest: Manifest) -> None:
        names = manifest.feature_names
        self.feature_names = names
        self.store_feature_names = [f.name for f in manifest.store_features]
        self.event_positions = np.array(
            [names.index(f.name) for f in manifest.event_features], dtype=np.intp
        )
        self.store_positions = np.array(
            [names.index(f.name) for f in manifest.store_features], dtype=np.intp
        )
        self._key_prefix, self._key_suffix = manifest.store.key_template.split(ENTITY_PLACEHOLDER)
        self._feast = FeastLayout.of(manifest) if manifest.store.layout == "feast" else None
        # how old a store value may be: one figure, or one per store feature (feast views)
        self.max_age_s: float | np.ndarray | None = manifest.store.max_age_s
        if self._feast is not None and manifest.store.feast and manifest.store.feast.view_max_age_s:
            self.max_age_s = self._feast.max_ages(manifest)

    def store_key(self, entity_id: Any) -> StoreKey:
        if self._feast is not None:
            return self._feast.key(entity_id)
        return f"{self._key_prefix}{entity_id}{self._key_suffix}"

    def store_keys(self, entity_ids: Sequence[Any]) -> StoreKeys:
        """One key per distinct entity, so a batch reads each entity once."""
        position: dict[Any, int] = {}
        key_index = np.fromiter(
            (position.setdefault(e, len(position)) for e in entity_ids),
            dtype=np.int64,
            count=len(entity_ids),
        )
        return StoreKeys([self.store_key(e) for e in position], key_index)

    def assemble(
        self, event_features: np.ndarray, store_rows: np.ndarray, key_index: np.ndarray
    ) -> np.ndarray:
        """The model input: one float32 row per event, columns in manifest order."""
        matrix = np.empty((event_features.shape[0], len(self.feature_names)), dtype=np.float32)
        matrix[:, self.event_positions] = event_features
        if len(self.store_positions):
            matrix[:, self.store_positions] = store_rows[key_index]
        return matrix


def vectors_to_rows(values: Sequence[bytes | None], width: int) -> np.ndarray:
    """Parse `vector` layout values (packed little-endian float32) into rows; absent -> NaN.

    A value of the wrong length cannot be trusted to be in manifest order and is treated as
    absent.
    """
    expected = width * VECTOR_DTYPE.itemsize
    present = [i for i, v in enumerate(values) if v is not None and len(v) == expected]
    if len(present) == len(values):
        joined = b"".join(values)  # type: ignore[arg-type]
        return np.frombuffer(joined, dtype=VECTOR_DTYPE).reshape(len(values), width).copy()
    rows = np.full((len(values), width), np.nan, dtype=np.float32)
    if present:
        joined = b"".join(values[i] for i in present)  # type: ignore[misc]
        rows[present] = np.frombuffer(joined, dtype=VECTOR_DTYPE).reshape(len(present), width)
    return rows


def hash_fields_to_rows(fields: Sequence[Sequence[bytes | None]], width: int) -> StoreRows:
    """Parse `hash` layout values (decimal strings: one per feature, then the `_ts` timestamp)
    into rows and write times; absent -> NaN. A value that is not a decimal number is absent."""
    if not fields:
        return StoreRows(np.empty((0, width), dtype=np.float32), np.empty(0))
    flat = [b"nan" if v is None else v for row in fields for v in row]
    try:
        parsed = np.array(flat, dtype=np.bytes_).astype(np.float64)
    except ValueError:
        parsed = np.array([_to_float(v) for v in flat], dtype=np.float64)
    parsed = parsed.reshape(len(fields), width + 1)
    return StoreRows(parsed[:, :width].astype(np.float32), parsed[:, width].copy())


def _to_float(value: bytes) -> float:
    try:
        return float(value)
    except ValueError:
        return float("nan")


def vector_bytes(values: Sequence[float] | np.ndarray) -> bytes:
    """The `vector` layout encoding of one entity's store features (what a writer stores)."""
    return np.asarray(values, dtype=VECTOR_DTYPE).tobytes()
