"""Feature matrix assembly: event columns plus store rows, in manifest order, float32.

Missing values are NaN, which XGBoost treats as missing. The store layouts are parsed here (pure)
so the Redis adapter only moves bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamserve.core.model import ENTITY_PLACEHOLDER, Manifest

VECTOR_DTYPE = np.dtype("<f4")


@dataclass(frozen=True)
class StoreKeys:
    """The de-duplicated store keys of a batch and, per event, the index of its key."""

    keys: list[str]
    key_index: np.ndarray  # int64, one entry per event


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

    def store_key(self, entity_id: Any) -> str:
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


def hash_fields_to_rows(fields: Sequence[Sequence[bytes | None]], width: int) -> np.ndarray:
    """Parse `hash` layout values (decimal strings, one per feature) into rows; absent -> NaN.

    A value that is not a decimal number is treated as absent.
    """
    if not fields:
        return np.empty((0, width), dtype=np.float32)
    flat = [b"nan" if v is None else v for row in fields for v in row]
    try:
        parsed = np.array(flat, dtype=np.bytes_).astype(np.float32)
    except ValueError:
        parsed = np.array([_to_float(v) for v in flat], dtype=np.float32)
    return parsed.reshape(len(fields), width)


def _to_float(value: bytes) -> float:
    try:
        return float(value)
    except ValueError:
        return float("nan")


def vector_bytes(values: Sequence[float] | np.ndarray) -> bytes:
    """The `vector` layout encoding of one entity's store features (what a writer stores)."""
    return np.asarray(values, dtype=VECTOR_DTYPE).tobytes()
