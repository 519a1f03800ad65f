"""Adaptive batching's policy: a cost fit from observed batches, limits from target and lag."""

from __future__ import annotations

import pytest

from streamserve.core.adaptive import AdaptiveBatching, CostModel


def test_the_cost_model_recovers_fixed_and_per_row_cost() -> None:
    cost = CostModel()
    for rows in (100, 1000, 300, 2000, 50, 800):
        cost.observe(rows, 0.002 + 10e-6 * rows)
    fixed_s, per_row_s = cost.fit()
    assert fixed_s == pytest.approx(0.002, rel=1e-6)
    assert per_row_s == pytest.approx(10e-6, rel=1e-6)


def test_batches_of_one_size_charge_everything_per_row() -> None:
    cost = CostModel()
    for _ in range(5):
        cost.observe(500, 0.01)
    assert cost.fit() == (0.0, pytest.approx(20e-6))


def test_the_size_fits_half_the_target_within_the_ceiling() -> None:
    adaptive = AdaptiveBatching(target_s=0.1, max_size=10_000, max_wait_s=0.005)
    assert adaptive.size_limit() == 10_000  # nothing measured yet: the ceiling
    for rows in (100, 1000, 3000):
        adaptive.observe(rows, 0.002 + 12e-6 * rows)
    assert adaptive.size_limit() in (3999, 4000)  # (50 ms - 2 ms) / 12 µs, up to rounding
    slow = AdaptiveBatching(target_s=0.001, max_size=10_000, max_wait_s=0.005)
    slow.observe(10, 0.01)
    assert slow.size_limit() == 1


def test_no_wait_when_caught_up_and_at_most_a_quarter_of_the_target_when_behind() -> None:
    adaptive = AdaptiveBatching(target_s=0.012, max_size=1000, max_wait_s=0.005)
    assert adaptive.limits(lag=0).max_wait_s == 0.0
    assert adaptive.limits(lag=5000).max_wait_s == 0.003
