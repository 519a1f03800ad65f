"""Redis feature store: one round trip per batch (MGET, or pipelined HMGET), hiredis parsing."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import redis

from streamserve.core.features import hash_fields_to_rows, vector_bytes, vectors_to_rows
from streamserve.core.model import Manifest
from streamserve.errors import FeatureStoreError

TIMESTAMP_FIELD = "_ts"


def connect(url: str, timeout_s: float = 5.0) -> redis.Redis:
    """A Redis client for ``url`` (redis://, rediss://, unix://) that returns bytes."""
    return redis.Redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, decode_responses=False
    )


class RedisFeatureStore:
    """Reads store features in the manifest's layout; absent entities and fields become NaN."""

    def __init__(self, client: redis.Redis, manifest: Manifest) -> None:
        self._client = client
        self._layout = manifest.store.layout
        self._fields = [f.name for f in manifest.store_features]

    @property
    def width(self) -> int:
        return len(self._fields)

    def fetch(self, keys: list[str]) -> np.ndarray:
        if not keys or not self._fields:
            return np.full((len(keys), self.width), np.nan, dtype=np.float32)
        try:
            if self._layout == "vector":
                values: list[bytes | None] = self._client.mget(keys)  # type: ignore[assignment]
                return vectors_to_rows(values, self.width)
            pipe = self._client.pipeline(transaction=False)
            for key in keys:
                pipe.hmget(key, self._fields)
            return hash_fields_to_rows(pipe.execute(), self.width)
        except redis.RedisError as exc:
            raise FeatureStoreError(f"feature lookup of {len(keys)} keys failed: {exc}") from exc

    def ping(self) -> None:
        try:
            self._client.ping()
        except redis.RedisError as exc:
            raise FeatureStoreError(f"feature store unreachable: {exc}") from exc


def write_features(
    client: redis.Redis,
    manifest: Manifest,
    keys: Sequence[str],
    rows: np.ndarray,
    ttl_s: int | None = None,
    written_at: float | None = None,
    chunk: int = 5_000,
) -> int:
    """Write store-feature rows (manifest order) in the manifest's layout; returns keys written.

    NaN values are skipped in the `hash` layout (the field stays absent) and kept as NaN in the
    `vector` layout; ``written_at`` adds the `_ts` freshness field to hashes.
    """
    names = [f.name for f in manifest.store_features]
    if rows.shape != (len(keys), len(names)):
        raise ValueError(f"rows must have shape ({len(keys)}, {len(names)}), got {rows.shape}")
    for start in range(0, len(keys), chunk):
        pipe = client.pipeline(transaction=False)
        for key, row in zip(keys[start : start + chunk], rows[start : start + chunk], strict=True):
            if manifest.store.layout == "vector":
                pipe.set(key, vector_bytes(row), ex=ttl_s)
                continue
            mapping: dict[str, str | float] = {
                n: repr(float(v)) for n, v in zip(names, row, strict=True) if v == v
            }
            if written_at is not None:
                mapping[TIMESTAMP_FIELD] = written_at
            pipe.delete(key)
            if mapping:
                pipe.hset(key, mapping=mapping)  # type: ignore[arg-type]
                if ttl_s:
                    pipe.expire(key, ttl_s)
        pipe.execute()
    return len(keys)
