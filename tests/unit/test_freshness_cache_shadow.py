"""Feature freshness, the local feature cache and the shadow comparison, without Redis."""

from __future__ import annotations

import numpy as np
import pytest

from streamserve.core.batch import BatchScorer, Inference
from streamserve.core.features import StoreKey, StoreLookup, StoreRows, check_freshness
from streamserve.core.model import ModelBundle
from streamserve.core.shadow import decisions, shadow_batch
from streamserve.io.store import CachedFeatureStore
from tests.unit.fakes import MemoryStore, Record

NOW = 1_767_225_600.0


def test_values_older_than_the_max_age_or_without_a_timestamp_become_missing() -> None:
    rows = np.array([[1, 2], [3, 4], [5, 6], [np.nan, np.nan]], dtype=np.float32)
    written_at = np.array([NOW - 10, NOW - 100, np.nan, np.nan])
    lookup = check_freshness(StoreRows(rows, written_at), NOW, max_age_s=60)
    np.testing.assert_array_equal(lookup.rows[0], [1, 2])
    assert np.isnan(lookup.rows[1:]).all()
    assert lookup.stale == 2  # the absent entity (last row) is a miss, not stale
    np.testing.assert_array_equal(lookup.ages_s, [10, 100])
    np.testing.assert_array_equal(rows[1], [3, 4])  # the store's array is left alone


def test_without_a_max_age_values_are_kept_and_ages_still_reported() -> None:
    rows = np.ones((2, 1), dtype=np.float32)
    lookup = check_freshness(StoreRows(rows, np.array([NOW - 5000, np.nan])), NOW, None)
    assert lookup.stale == 0 and not np.isnan(lookup.rows).any()
    np.testing.assert_array_equal(lookup.ages_s, [5000])
    assert check_freshness(StoreRows(rows), NOW, 60).stale == 0  # `vector`: no clock, kept


class Timer:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_cache_fetches_only_what_it_does_not_hold_until_the_ttl_passes() -> None:
    inner = MemoryStore({"a": np.array([1.0]), "b": np.array([2.0])}, width=1)
    timer = Timer()
    cache = CachedFeatureStore(inner, ttl_s=10, max_keys=100, timed=False, clock=timer)
    first = cache.fetch(["a", "x"])
    assert first.cache_hits == 0 and first.written_at is None
    second = cache.fetch(["b", "a", "x"])
    assert inner.calls == [["a", "x"], ["b"]]  # the absent "x" is cached too
    assert second.cache_hits == 2
    np.testing.assert_array_equal(second.values[:2, 0], [2.0, 1.0])
    assert np.isnan(second.values[2, 0])
    timer.now = 10.5
    assert cache.fetch(["a"]).cache_hits == 0
    assert inner.calls[-1] == ["a"]


def test_a_full_cache_drops_its_oldest_entries_first() -> None:
    inner = MemoryStore({}, width=1)
    timer = Timer()
    cache = CachedFeatureStore(inner, ttl_s=10, max_keys=2, timed=False, clock=timer)
    cache.fetch(["a", "b"])
    timer.now = 5
    cache.fetch(["c"])  # "a" goes: it would expire first
    assert cache.fetch(["b", "c"]).cache_hits == 2
    assert cache.fetch(["a"]).cache_hits == 0


def test_the_cache_keeps_write_times_so_a_cached_value_still_ages() -> None:
    class Timed(MemoryStore):
        def fetch(self, keys: list[StoreKey]) -> StoreRows:
            return StoreRows(super().fetch(keys).values, np.full(len(keys), NOW - 50))

    cache = CachedFeatureStore(Timed({"a": np.array([1.0])}, 1), 600, 100, timed=True)
    cache.fetch(["a"])
    cached = cache.fetch(["a"])
    assert cached.cache_hits == 1
    assert cached.written_at is not None and cached.written_at[0] == NOW - 50
    assert check_freshness(cached, NOW + 20, max_age_s=60).stale == 1


def test_decisions_are_the_threshold_or_the_top_output() -> None:
    np.testing.assert_array_equal(decisions(np.array([0.2, 0.5, 0.9]), 0.5), [0, 1, 1])
    np.testing.assert_array_equal(decisions(np.array([[0.1, 0.9], [0.7, 0.3]]), 0.5), [1, 0])


@pytest.mark.parametrize("same_batch", [True, False])
def test_the_shadow_compares_the_events_both_models_scored(
    bundle: ModelBundle, same_batch: bool
) -> None:
    scorer = BatchScorer(bundle)
    values = [b'{"event_id": "e%d", "entity_id": "u", "amount": %d}' % (i, i) for i in range(4)]
    records = [Record(v, offset) for offset, v in enumerate(values)]
    batch = scorer.prepare(records)
    width = len(bundle.manifest.features)
    lookup = StoreLookup(np.full((1, width), np.nan, np.float32))
    matrix = np.zeros((4, width), np.float32)
    served = Inference(batch, lookup, matrix, np.array([0.1, 0.4, 0.6, 0.9], np.float32))
    theirs = np.array([0.1, 0.6, 0.6, 0.2], np.float32)
    # a challenger that cannot decode e0 scores only the others, at the same batch positions
    shadow_prepared = batch if same_batch else scorer.prepare([Record(b"{", 0), *records[1:]])
    if not same_batch:
        theirs = theirs[1:]
    shadow = Inference(shadow_prepared, lookup, matrix[: len(theirs)], theirs)
    result = shadow_batch(scorer, served, scorer, shadow, 7, "b1")
    assert len(result.predictions) == len(theirs)
    assert result.model_version == bundle.version
    assert result.flips == 2  # e1 (0.4 -> 0.6) and e3 (0.9 -> 0.2)
    expected = [0.0, 0.2, 0.0, 0.7] if same_batch else [0.2, 0.0, 0.7]
    np.testing.assert_allclose(result.abs_deltas, expected, atol=1e-6)
