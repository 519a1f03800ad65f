import pytest

from streamserve_loadgen.load.profile import RateProfile


def test_fixed_rate_sends_rate_times_seconds() -> None:
    profile = RateProfile("fixed", rate=1000, seconds=10)
    assert profile.due(0.5) == 500
    assert profile.total == 10_000
    assert profile.due(99) == 10_000  # nothing more after the end


def test_ramp_rises_linearly_and_sends_the_average_rate() -> None:
    profile = RateProfile("ramp", rate=1000, peak=3000, seconds=10)
    assert profile.rate_at(5) == pytest.approx(2000)
    assert profile.total == 20_000  # (1000 + 3000) / 2 * 10


def test_bursts_add_the_peak_rate_for_their_duration() -> None:
    profile = RateProfile("burst", rate=1000, peak=11_000, seconds=10, burst_every_s=5, burst_s=1)
    assert profile.rate_at(1.0) == 1000
    assert profile.rate_at(2.5) == 11_000  # a burst in the middle of each 5 s window
    assert profile.total == 10 * 1000 + 2 * 10_000
    assert profile.due(2.5) == 2500 + 500 * 10


def test_a_profile_without_a_peak_is_refused() -> None:
    with pytest.raises(ValueError, match="peak"):
        RateProfile("ramp", rate=1000, seconds=10)
