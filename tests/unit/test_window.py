import pytest

from streamserve.core.window import BatchWindow


def test_size_trigger_fires_when_the_batch_is_full() -> None:
    window = BatchWindow(max_size=3, max_wait_s=10.0)
    window.add(2, now=100.0)
    assert window.trigger(100.0) is None
    assert window.room() == 1
    window.add(1, now=100.1)
    assert window.trigger(100.1) == "size"


def test_time_trigger_counts_from_the_first_record_not_the_last() -> None:
    window = BatchWindow(max_size=100, max_wait_s=0.05)
    window.add(1, now=10.0)
    window.add(5, now=10.04)  # a later record does not extend the deadline
    assert window.remaining_s(10.04) == pytest.approx(0.01, abs=1e-9)
    assert window.trigger(10.049) is None
    assert window.trigger(10.05) == "time"


def test_an_empty_window_has_no_deadline_and_never_fires() -> None:
    window = BatchWindow(max_size=10, max_wait_s=0.0)
    window.add(0, now=5.0)
    assert window.remaining_s(1000.0) is None
    assert window.trigger(1000.0) is None


def test_reset_starts_a_new_window() -> None:
    window = BatchWindow(max_size=2, max_wait_s=1.0)
    window.add(2, now=1.0)
    window.reset()
    assert (window.size, window.remaining_s(50.0), window.trigger(50.0)) == (0, None, None)


def test_a_free_scoring_stage_takes_the_batch_at_once() -> None:
    window = BatchWindow(max_size=100, max_wait_s=1.0)
    window.add(3, now=20.0)
    assert window.trigger(20.001, stage_free=False) is None  # busy: the batch keeps filling
    assert window.trigger(20.001, stage_free=True) == "idle"
    assert window.trigger(21.0, stage_free=True) == "time"  # it waited its max_wait


def test_an_empty_window_never_fires_even_with_the_stage_free() -> None:
    window = BatchWindow(max_size=10, max_wait_s=0.0)
    assert window.trigger(5.0, stage_free=True) is None
