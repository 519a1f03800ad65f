"""The scoring thread: the feature lookup and predict of one batch at a time, and what happens
to a batch when the feature store is down (STREAMSERVE_STORE_OUTAGE_POLICY).

Redis I/O and XGBoost release the GIL, so this thread overlaps the loop's decoding and producing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import numpy as np

from streamserve.core.batch import BatchScorer, PreparedBatch
from streamserve.errors import StoreUnavailable
from streamserve.io.store import ResilientStore

MIN_PROBE_WAIT_S = 0.001


@dataclass(frozen=True)
class Predicted:
    """What the scoring thread returns for a batch."""

    store_rows: np.ndarray
    matrix: np.ndarray
    scores: np.ndarray
    lookup_ms: float
    predict_ms: float
    degraded: bool  # the store was down (policy degrade): scored without its features


class ScoringThread:
    """One thread; ``submit`` a decoded batch and get a future of its prediction."""

    def __init__(
        self,
        scorer: BatchScorer,
        store: ResilientStore,
        outage_policy: Literal["wait", "degrade"],
    ) -> None:
        self._scorer = scorer
        self._store = store
        self._outage_policy = outage_policy
        self._store_width = len(scorer.bundle.manifest.store_features)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scoring")
        self._give_up = threading.Event()  # tells a lookup waiting for Redis to stop waiting

    def submit(self, prepared: PreparedBatch) -> Future[Predicted]:
        return self._executor.submit(self._lookup_and_predict, prepared)

    @contextmanager
    def giving_up(self) -> Iterator[None]:
        """Within it, a lookup waiting for Redis (policy `wait`) raises StoreUnavailable
        instead of waiting on; used when the worker stops or loses partitions."""
        self._give_up.set()
        try:
            yield
        finally:
            self._give_up.clear()

    def shutdown(self) -> None:
        """Stop waiting for Redis, drop batches not started, and let the thread end."""
        self._give_up.set()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def score_here(self, prepared: PreparedBatch) -> Predicted | None:
        """Lookup and predict on the calling thread, if the store answers at the first try (no
        pause, no retry: at most one Redis timeout); None when it does not: then ``submit``
        the batch, which retries, waits or degrades as the outage policy says."""
        started = time.perf_counter()
        store_rows = self._store.fetch_first_try(prepared.store_keys.keys)
        if store_rows is None:
            return None
        return self._predict(prepared, store_rows, False, started)

    def _lookup_and_predict(self, prepared: PreparedBatch) -> Predicted:
        """One Redis round trip, one booster call."""
        started = time.perf_counter()
        store_rows, degraded = self._lookup(prepared.store_keys.keys)
        return self._predict(prepared, store_rows, degraded, started)

    def _predict(
        self, prepared: PreparedBatch, store_rows: np.ndarray, degraded: bool, started: float
    ) -> Predicted:
        predict_started = time.perf_counter()
        matrix, scores = self._scorer.predict(prepared, store_rows)
        lookup_ms = (predict_started - started) * 1000
        predict_ms = (time.perf_counter() - predict_started) * 1000
        return Predicted(store_rows, matrix, scores, lookup_ms, predict_ms, degraded)

    def _lookup(self, keys: list[str]) -> tuple[np.ndarray, bool]:
        """Store rows, and whether they are all NaN because the store is down.

        Policy `wait` retries until Redis answers (the loop pauses meanwhile) or the loop gives
        up on the batch (stop or revoke); policy `degrade` scores without the store's features.
        """
        while True:
            try:
                return self._store.fetch(keys), False
            except StoreUnavailable:
                if self._outage_policy == "degrade":
                    return np.full((len(keys), self._store_width), np.nan, np.float32), True
                if self._give_up.wait(max(self._store.probe_in(), MIN_PROBE_WAIT_S)):
                    raise
