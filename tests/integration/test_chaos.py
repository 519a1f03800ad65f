"""A reduced `make chaos`: the same harness, fewer events and moves."""

from __future__ import annotations

from rich.console import Console

from streamserve_loadgen.measure.chaos import ChaosPlan, run_chaos
from streamserve_loadgen.world.synthetic import World


def test_kills_a_redis_outage_and_a_rebalance_under_load_lose_nothing() -> None:
    plan = ChaosPlan(
        events=24_000,
        rate=4_000,
        kills=2,
        redis_outages=1,
        redis_down_s=2.0,
        max_batch_size=200,
        world=World(entities=2_000, trees=50),
        seed=3,
    )
    result = run_chaos(plan, Console(stderr=True))

    report = result.report
    assert (result.kills, result.redis_outages, result.joined) == (2, 1, 1)
    assert report.events == 24_000
    assert report.lost == 0, report.lost_examples
    assert report.dead_lettered == 240  # every malformed event, once at least
    assert report.dead_letters_without_reason == 0
    assert report.extra_outputs <= plan.duplicate_bound(result.kills)
    assert result.ok, result.problems


def test_a_worker_joining_mid_load_causes_no_duplicates() -> None:
    """A rebalance alone: revoked partitions finish their batches and commit before they move."""
    plan = ChaosPlan(
        events=16_000,
        rate=4_000,
        kills=0,
        redis_outages=0,
        max_batch_size=200,
        world=World(entities=2_000, trees=50),
        seed=5,
    )
    result = run_chaos(plan, Console(stderr=True))
    assert result.joined == 1
    assert (result.report.lost, result.report.duplicated) == (0, 0)
    assert result.ok, result.problems


def test_exactly_once_with_default_settings_shows_every_event_to_read_committed() -> None:
    """Workers with no identity settings, SIGKILLed and restarted: each restart fences its
    predecessor (the same slot, the same transactional.id), so the audit's read_committed
    reader finds every event's outcome; Tansu does not abort the fenced transactions, so
    their outputs may surface as duplicates (0 on Apache Kafka)."""
    plan = ChaosPlan(
        events=16_000,
        rate=4_000,
        kills=2,
        redis_outages=1,
        redis_down_s=2.0,
        max_batch_size=200,
        guarantee="exactly-once",
        world=World(entities=2_000, trees=50),
        seed=4,
    )
    result = run_chaos(plan, Console(stderr=True))

    report = result.report
    assert result.kills == 2
    assert report.events == 16_000
    assert report.lost == 0, report.lost_examples
    assert report.dead_lettered == 160
    assert report.extra_outputs <= plan.duplicate_bound(result.kills)
    assert result.ok, result.problems
