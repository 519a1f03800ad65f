"""The chaos run's schedule of moves (pure)."""

from __future__ import annotations

from streamserve_loadgen.measure.chaos import ChaosPlan


def test_the_schedule_puts_every_move_inside_the_load_and_outages_apart() -> None:
    plan = ChaosPlan(events=300_000, rate=10_000, kills=5, redis_outages=2, redis_down_s=5.0)
    moves = plan.schedule()
    assert [a for _, a in moves].count("kill") == 5
    assert all(0 < at < plan.seconds for at, _ in moves)
    outages = [at for at, a in moves if a.startswith("redis")]
    assert outages == sorted(outages)  # stop, start, stop, start: never two down at once
    assert [a for _, a in moves if a.startswith("redis")] == ["redis-stop", "redis-start"] * 2
