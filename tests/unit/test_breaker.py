"""Retries, backoff and the circuit breaker in front of the feature store (fakes, fake clock)."""

from __future__ import annotations

import numpy as np
import pytest

from streamserve.core.breaker import CircuitBreaker, backoff_delays
from streamserve.core.features import StoreKey, StoreRows
from streamserve.errors import FeatureStoreError, StoreUnavailable
from streamserve.io.store import ResilientStore


class FlakyStore:
    """Fails while ``down``; counts the lookups that reached it."""

    def __init__(self) -> None:
        self.down = False
        self.calls = 0

    def fetch(self, keys: list[StoreKey]) -> StoreRows:
        self.calls += 1
        if self.down:
            raise FeatureStoreError("connection refused")
        return StoreRows(np.ones((len(keys), 2), dtype=np.float32))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def parts() -> tuple[FlakyStore, Clock, ResilientStore]:
    inner, clock = FlakyStore(), Clock()
    store = ResilientStore(
        inner, retries=3, backoff_s=0.05, reset_s=2.0, clock=clock, sleep=clock.sleep
    )
    return inner, clock, store


def test_backoff_doubles_up_to_the_cap() -> None:
    assert backoff_delays(5, 0.1, 0.5) == [0.1, 0.2, 0.4, 0.5, 0.5]
    assert backoff_delays(0, 0.1, 0.5) == []


def test_a_lookup_that_fails_then_recovers_within_its_retries_succeeds(
    parts: tuple[FlakyStore, Clock, ResilientStore],
) -> None:
    inner, clock, store = parts
    inner.down = True
    original_fetch = inner.fetch

    def recover_on_third(keys: list[StoreKey]) -> StoreRows:
        if inner.calls == 2:
            inner.down = False
        return original_fetch(keys)

    inner.fetch = recover_on_third  # type: ignore[method-assign]
    assert store.fetch(["a"]).values.shape == (1, 2)
    assert clock.slept == [0.05, 0.1]
    assert store.available


def test_retries_used_up_open_the_circuit_and_later_lookups_fail_fast(
    parts: tuple[FlakyStore, Clock, ResilientStore],
) -> None:
    inner, clock, store = parts
    inner.down = True
    with pytest.raises(StoreUnavailable, match="connection refused"):
        store.fetch(["a"])
    assert inner.calls == 4  # one try and three retries
    assert clock.slept == [0.05, 0.1, 0.2]
    assert not store.available
    with pytest.raises(StoreUnavailable, match=r"next probe in 2\.0 s"):
        store.fetch(["a"])
    assert inner.calls == 4  # failed fast: Redis was not asked


def test_an_open_circuit_lets_one_probe_through_per_reset_interval(
    parts: tuple[FlakyStore, Clock, ResilientStore],
) -> None:
    inner, clock, store = parts
    inner.down = True
    with pytest.raises(StoreUnavailable):
        store.fetch(["a"])
    clock.now += 2.0
    with pytest.raises(StoreUnavailable):
        store.fetch(["a"])
    assert inner.calls == 5  # the probe is a single try, no retries
    assert store.probe_in() == 2.0
    inner.down = False
    clock.now += 2.0
    assert store.fetch(["a", "b"]).values.shape == (2, 2)
    assert store.available and store.probe_in() == 0.0


def test_breaker_state_machine() -> None:
    breaker = CircuitBreaker(reset_s=1.0)
    assert breaker.allows(0.0) and not breaker.is_open
    breaker.failed(10.0)
    assert breaker.is_open and not breaker.allows(10.5) and breaker.allows(11.0)
    assert breaker.probe_in(10.25) == 0.75
    breaker.failed(11.0)
    assert breaker.failures == 2 and not breaker.allows(11.5)
    breaker.succeeded()
    assert not breaker.is_open and breaker.failures == 0
    with pytest.raises(ValueError):
        CircuitBreaker(reset_s=0)
