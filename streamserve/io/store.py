"""Redis feature store: one round trip per batch (MGET, or pipelined HMGET), hiredis parsing;
retries with backoff and a circuit breaker in front of it. Works against one Redis or a Redis
Cluster (keys spread over slots: the client pipelines them per node)."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from streamserve.core.batch import FeatureStore
from streamserve.core.breaker import CircuitBreaker, backoff_delays
from streamserve.core.feast import FeastLayout
from streamserve.core.features import (
    StoreKey,
    StoreRows,
    hash_fields_to_rows,
    vector_bytes,
    vectors_to_rows,
)
from streamserve.core.model import Manifest
from streamserve.errors import FeatureStoreError, StoreUnavailable

log = logging.getLogger("streamserve.store")
MAX_RETRY_BACKOFF_S = 1.0

TIMESTAMP_FIELD = "_ts"


RedisClient = redis.Redis | redis.RedisCluster


def connect(url: str, timeout_s: float = 5.0, cluster: bool = False) -> RedisClient:
    """A Redis client for ``url`` (redis://, rediss://, unix://) that returns bytes; with
    ``cluster``, a Redis Cluster client that learns the other nodes from the one in ``url``."""
    options = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "decode_responses": False,
        "retry": Retry(NoBackoff(), 0),  # redis-py's own retries (10 by default) would hide ours
    }
    try:
        if cluster:
            return redis.RedisCluster.from_url(url, **options)
        return redis.Redis.from_url(url, **options)
    except redis.RedisError as exc:  # a cluster client asks for the slot map at once
        raise FeatureStoreError(f"feature store unreachable: {exc}") from exc


def hmget_many(
    client: RedisClient, keys: Sequence[str | bytes], fields: Sequence[str | bytes]
) -> list[list[bytes | None]]:
    """``HMGET key fields...`` for every key in one round trip. On one Redis the commands are
    written as one buffer (the field list encoded once): redis-py's pipeline packs each command
    argument by argument, about 15 µs a command with 26 fields, most of a 1,000-key batch's
    lookup. A cluster client pipelines per node as redis-py does."""
    if isinstance(client, redis.RedisCluster):
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.hmget(key, fields)
        return pipe.execute()
    encoded = [f.encode() if isinstance(f, str) else f for f in fields]
    head = b"*%d\r\n$5\r\nHMGET\r\n" % (len(encoded) + 2)
    tail = b"".join(b"$%d\r\n%s\r\n" % (len(f), f) for f in encoded)
    payload = b"".join(
        b"%s$%d\r\n%s\r\n%s" % (head, len(k), k, tail)
        for k in (key.encode() if isinstance(key, str) else key for key in keys)
    )
    pool = client.connection_pool
    connection = pool.get_connection()
    try:
        connection.send_packed_command([payload])
        return [connection.read_response() for _ in keys]
    except BaseException:
        connection.disconnect()  # replies may be left unread: never reuse this connection
        raise
    finally:
        pool.release(connection)


def ping(client: RedisClient) -> None:
    """Raise FeatureStoreError unless Redis answers."""
    try:
        client.ping()
    except redis.RedisError as exc:
        raise FeatureStoreError(f"feature store unreachable: {exc}") from exc


class RedisFeatureStore:
    """Reads store features in the manifest's layout; absent entities and fields become NaN.
    The `hash` layout also reads each entity's `_ts` write time."""

    def __init__(self, client: RedisClient, manifest: Manifest) -> None:
        self._client = client
        # MGET of keys in different slots is an error on a cluster: split per node instead
        self._mget = (
            client.mget_nonatomic if isinstance(client, redis.RedisCluster) else client.mget
        )
        self._layout = manifest.store.layout
        self._fields = [f.name for f in manifest.store_features]
        self._hash_fields = [*self._fields, TIMESTAMP_FIELD]
        self._feast = FeastLayout.of(manifest) if self._layout == "feast" else None

    @property
    def width(self) -> int:
        return len(self._fields)

    def fetch(self, keys: list[StoreKey]) -> StoreRows:
        if not keys or not self._fields:
            return StoreRows(np.full((len(keys), self.width), np.nan, dtype=np.float32))
        try:
            if self._layout == "vector":  # keys of the vector and hash layouts are str
                values: list[Any] = self._mget(keys)  # type: ignore[arg-type]
                return StoreRows(vectors_to_rows(values, self.width))
            if self._feast is not None:
                return self._fetch_feast(self._feast, keys)
            replies = hmget_many(self._client, keys, self._hash_fields)  # type: ignore[arg-type]
            return hash_fields_to_rows(replies, self.width)
        except redis.RedisError as exc:
            raise FeatureStoreError(f"feature lookup of {len(keys)} keys failed: {exc}") from exc

    def _fetch_feast(self, feast: FeastLayout, keys: list[StoreKey]) -> StoreRows:
        """One HMGET per entity of every view's fields and `_ts`s, all in one round trip (per
        node on a cluster); an entity without a key reads as absent."""
        replies = iter(hmget_many(self._client, [k for k in keys if k is not None], feast.fields))
        absent = [None] * len(feast.fields)
        values, written_at = feast.rows([next(replies) if k is not None else absent for k in keys])
        return StoreRows(values, written_at[:, feast.view_of_column])


class CachedFeatureStore:
    """An in-process TTL cache in front of a feature store: only the keys it does not hold (or
    has held for ``ttl_s``) go to the store, in one fetch. Absent keys are cached too, so a hot
    entity missing from Redis costs no round trip either. ``timed``: the store returns write
    times (the `hash` layout), kept with the rows so a cached value still ages.

    A plain dict in insertion order: with one TTL for every entry, insertion order is expiry
    order, so when it is full the first entries are the ones to drop (expired ones first, as
    cachetools' TTLCache does). A lookup is one dict get and a comparison, about 0.03 µs a key;
    TTLCache's get costs 1.2 µs here, as much as reading the key from a local Redis.
    """

    def __init__(
        self,
        store: FeatureStore,
        ttl_s: float,
        max_keys: int,
        timed: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._entries: dict[StoreKey, tuple[float, np.ndarray, Any]] = {}  # expires, row, written
        self._max_keys = max_keys
        self._timed = timed
        self._clock = clock
        self.ttl_s = ttl_s

    def fetch(self, keys: list[StoreKey]) -> StoreRows:
        if not keys:
            return self._store.fetch(keys)
        now = self._clock()
        entries = self._entries
        hits = [entries.get(key) for key in keys]
        missing = [i for i, hit in enumerate(hits) if hit is None or hit[0] <= now]
        if missing:
            found = self._store.fetch([keys[i] for i in missing])
            times = found.written_at
            if times is None:
                times = np.full(len(missing), np.nan)
            expires = now + self.ttl_s
            for i, row, at in zip(missing, found.values, times.tolist(), strict=True):
                key = keys[i]
                entries.pop(key, None)  # a refreshed key moves to the end: expiry order
                entries[key] = hits[i] = (expires, row.copy(), at)  # not the batch's array
            while len(entries) > self._max_keys:
                del entries[next(iter(entries))]
        rows = np.stack([hit[1] for hit in hits])  # type: ignore[index]
        written_at = np.array([hit[2] for hit in hits]) if self._timed else None  # type: ignore[index]
        return StoreRows(rows, written_at, len(keys) - len(missing))


class ResilientStore:
    """A feature store behind retries and a circuit breaker.

    A lookup is tried ``1 + retries`` times with doubling pauses; if all fail, the circuit opens
    and lookups fail fast with StoreUnavailable, without touching Redis, except one probe every
    ``reset_s``. Used by one thread at a time. ``using`` gives the same guard (one circuit: one
    Redis) in front of another reader, such as another model's.
    """

    def __init__(
        self,
        store: FeatureStore,
        retries: int,
        backoff_s: float,
        reset_s: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._store = store
        self._delays = backoff_delays(retries, backoff_s, MAX_RETRY_BACKOFF_S)
        self._breaker = CircuitBreaker(reset_s)
        self._clock = clock
        self._sleep = sleep

    def using(self, store: FeatureStore) -> ResilientStore:
        """The same retries and circuit in front of ``store``."""
        guarded = copy.copy(self)
        guarded._store = store
        return guarded

    @property
    def available(self) -> bool:
        """False while the circuit is open."""
        return not self._breaker.is_open

    def probe_in(self) -> float:
        """Seconds until the next lookup may go to Redis."""
        return self._breaker.probe_in(self._clock())

    def fetch_first_try(self, keys: list[StoreKey]) -> StoreRows | None:
        """One try, without pauses or retries, and only while the circuit is closed; None when
        the circuit is open or the try fails (``fetch`` then retries, and opens the circuit)."""
        if self._breaker.is_open:
            return None
        try:
            return self._store.fetch(keys)
        except FeatureStoreError:
            return None

    def fetch(self, keys: list[StoreKey]) -> StoreRows:
        breaker = self._breaker
        if not breaker.allows(self._clock()):
            raise StoreUnavailable(f"feature store down; next probe in {self.probe_in():.1f} s")
        delays = [] if breaker.is_open else self._delays  # a probe is a single try
        error: FeatureStoreError | None = None
        for delay in [0.0, *delays]:
            if delay:
                self._sleep(delay)
            try:
                rows = self._store.fetch(keys)
            except FeatureStoreError as exc:
                error = exc
                continue
            if breaker.failing_since is not None:
                log.warning(
                    "feature store answers again after %.1f s",
                    self._clock() - breaker.failing_since,
                )
            breaker.succeeded()
            return rows
        if breaker.failing_since is None:
            log.warning("feature store unavailable after %d tries: %s", 1 + len(delays), error)
        breaker.failed(self._clock())
        raise StoreUnavailable(str(error)) from error


def write_features(
    client: RedisClient,
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
