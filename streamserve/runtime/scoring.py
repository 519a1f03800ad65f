"""The scoring threads: one looks up a batch's features, the next predicts it (and the
challenger's, when there is one); what happens to a batch when the feature store is down
(STREAMSERVE_STORE_OUTAGE_POLICY).

Redis I/O and XGBoost release the GIL, so these threads overlap the loop's decoding and producing,
and a batch's lookup overlaps the predict of the batch before it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from streamserve.core.batch import Inference, PreparedBatch
from streamserve.core.features import StoreKey, StoreLookup, StoreRows, check_freshness
from streamserve.errors import StoreUnavailable
from streamserve.runtime.models import LoadedModel, ServingModels

MIN_PROBE_WAIT_S = 0.001


@dataclass(frozen=True)
class ScoredBatch:
    """What the scoring threads return for a batch: each model's lookup and scores."""

    serving: ServingModels
    served: Inference
    shadow: Inference | None
    lookup_ms: float
    predict_ms: float


@dataclass(frozen=True)
class _Lookups:
    """A batch's store rows for the served model (and the challenger's own batch and rows,
    when its inputs differ), and how long they took."""

    served: StoreLookup
    own: tuple[PreparedBatch, StoreLookup] | None
    lookup_ms: float


@dataclass(frozen=True)
class Submitted:
    """A batch handed to the scoring threads: its lookup, then its prediction."""

    looked_up: Future[_Lookups]
    predicted: Future[ScoredBatch]

    def looked_up_within(self, timeout_s: float) -> bool:
        """Whether its lookup is done (the lookup thread is free); waits up to ``timeout_s``."""
        return _done(self.looked_up, timeout_s)

    def predicted_within(self, timeout_s: float) -> bool:
        """Whether it is predicted; waits up to ``timeout_s``."""
        return _done(self.predicted, timeout_s)


class ScoringThreads:
    """Two threads in a row: one looks a batch's features up in Redis, the other predicts.
    ``submit`` a decoded batch; the next batch's lookup overlaps this one's predict, so a
    slow lookup (a far Redis, Feast's layout) and the booster take turns instead of adding up.
    """

    def __init__(self, outage_policy: Literal["wait", "degrade"]) -> None:
        self._outage_policy = outage_policy
        self._lookup_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lookup")
        self._predict_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scoring")
        self._give_up = threading.Event()  # tells a lookup waiting for Redis to stop waiting

    def submit(self, prepared: PreparedBatch, serving: ServingModels) -> Submitted:
        """``prepared`` was decoded by ``serving.model``'s scorer."""
        looked_up = self._lookup_thread.submit(self._lookups_waiting, prepared, serving)
        predicted = self._predict_thread.submit(self._predict_after, looked_up, prepared, serving)
        return Submitted(looked_up, predicted)

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
        """Stop waiting for Redis, drop batches not started, and let the threads end."""
        self._give_up.set()
        self._lookup_thread.shutdown(wait=False, cancel_futures=True)
        self._predict_thread.shutdown(wait=False, cancel_futures=True)

    def score_here(self, prepared: PreparedBatch, serving: ServingModels) -> ScoredBatch | None:
        """Lookup and predict on the calling thread, if the store answers at the first try (no
        pause, no retry: at most one Redis timeout per model); None when it does not: then
        ``submit`` the batch, which retries, waits or degrades as the outage policy says."""
        lookups = self._lookups_for(prepared, serving, first_try=True)
        return None if lookups is None else self._predict(prepared, serving, lookups)

    def _lookups_waiting(self, prepared: PreparedBatch, serving: ServingModels) -> _Lookups:
        lookups = self._lookups_for(prepared, serving, first_try=False)
        assert lookups is not None  # only a first try gives up
        return lookups

    def _predict_after(
        self, looked_up: Future[_Lookups], prepared: PreparedBatch, serving: ServingModels
    ) -> ScoredBatch:
        return self._predict(prepared, serving, looked_up.result())  # re-raises its error

    def _lookups_for(
        self, prepared: PreparedBatch, serving: ServingModels, first_try: bool
    ) -> _Lookups | None:
        """One Redis round trip per model (the challenger reuses the served model's rows when
        its inputs are the same); None if a first try failed."""
        started = time.perf_counter()
        model, challenger = serving.model, serving.shadow
        lookup = self._lookup(model, prepared, first_try)
        if lookup is None:
            return None
        own: tuple[PreparedBatch, StoreLookup] | None = None  # the challenger's, inputs differ
        if challenger is not None and not _same_inputs(model, challenger):
            own_batch = challenger.scorer.prepare(prepared.records, prepared.positions)
            own_lookup = self._lookup(challenger, own_batch, first_try)
            if own_lookup is None:
                return None
            own = own_batch, own_lookup
        return _Lookups(lookup, own, (time.perf_counter() - started) * 1000)

    def _predict(
        self, prepared: PreparedBatch, serving: ServingModels, lookups: _Lookups
    ) -> ScoredBatch:
        """One booster call per model (the challenger scores the served model's matrix when
        its inputs are the same)."""
        started = time.perf_counter()
        model, challenger = serving.model, serving.shadow
        served = _infer(model, prepared, lookups.served)
        shadow = None
        if challenger is not None and lookups.own is not None:
            shadow = _infer(challenger, *lookups.own)
        elif challenger is not None:
            scores = challenger.bundle.predict(served.matrix)
            shadow = Inference(prepared, lookups.served, served.matrix, scores)
        predict_ms = (time.perf_counter() - started) * 1000
        return ScoredBatch(serving, served, shadow, lookups.lookup_ms, predict_ms)

    def _lookup(
        self, model: LoadedModel, prepared: PreparedBatch, first_try: bool
    ) -> StoreLookup | None:
        """The batch's store rows, freshness-checked; None if a first try failed."""
        keys = prepared.store_keys.keys
        if first_try:
            found = model.store.fetch_first_try(keys)
            if found is None:
                return None
        else:
            found = self._fetch(model, keys)
            if found is None:  # the store is down and the policy is degrade
                width = len(model.bundle.manifest.store_features)
                rows = np.full((len(keys), width), np.nan, np.float32)
                return StoreLookup(rows, degraded=True)
        return check_freshness(found, time.time(), model.scorer.layout.max_age_s)

    def _fetch(self, model: LoadedModel, keys: list[StoreKey]) -> StoreRows | None:
        """Store rows, or None when the store is down and the policy is `degrade`.

        Policy `wait` retries until Redis answers (the loop pauses meanwhile) or the loop gives
        up on the batch (stop or revoke).
        """
        while True:
            try:
                return model.store.fetch(keys)
            except StoreUnavailable:
                if self._outage_policy == "degrade":
                    return None
                if self._give_up.wait(max(model.store.probe_in(), MIN_PROBE_WAIT_S)):
                    raise


def _infer(model: LoadedModel, prepared: PreparedBatch, lookup: StoreLookup) -> Inference:
    matrix, scores = model.scorer.predict(prepared, lookup.rows)
    return Inference(prepared, lookup, matrix, scores)


def _same_inputs(model: LoadedModel, challenger: LoadedModel) -> bool:
    return model.bundle.manifest.inputs == challenger.bundle.manifest.inputs


def _done(future: Future[Any], timeout_s: float) -> bool:
    if timeout_s <= 0 or future.done():  # the hot path: no waiter to set up
        return future.done()
    done, _ = wait([future], timeout=timeout_s)
    return bool(done)
