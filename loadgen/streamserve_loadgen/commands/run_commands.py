"""The harness's long runs on the embedded stack: bench, chaos and soak (make bench|chaos|soak).
Registered on `streamserve-loadgen` (cli.py)."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import click

from streamserve.errors import MissingExtraError

BENCH_EXTRA = ("psutil", "matplotlib", "faust")  # streamserve-loadgen[bench]


def require_bench_extra() -> None:
    """Stop with the pip line if the load generator's extra is not installed."""
    missing = [m for m in BENCH_EXTRA if importlib.util.find_spec(m) is None]
    if missing:
        error = MissingExtraError(f"the load generator's runs ({', '.join(missing)})", "loadgen")
        click.echo(f"streamserve-loadgen: {error}", err=True)
        raise SystemExit(2)


@click.command("bench")
@click.option("--events", type=click.IntRange(min=1000), default=300_000, show_default=True)
@click.option(
    "--sustained-seconds",
    type=click.FloatRange(min=1),
    default=60.0,
    show_default=True,
    help="How long 10,000 events/s are offered to the worker and the pass-through.",
)
@click.option(
    "--baseline-events",
    type=click.IntRange(min=100),
    default=20_000,
    show_default=True,
    help="Events the batch-size-1 baseline scores.",
)
@click.option(
    "--live-seconds",
    type=click.FloatRange(min=1),
    default=30.0,
    show_default=True,
    help="How long 1,000 events/s are offered to the worker and the pass-through.",
)
@click.option("--load-seconds", type=click.FloatRange(min=1), default=10.0, show_default=True)
@click.option(
    "--loads",
    default="30000",
    show_default=True,
    help="Further offered loads (events/s), comma-separated.",
)
@click.option(
    "--max-wait-ms",
    type=click.IntRange(min=0),
    default=None,
    help="The worker's STREAMSERVE_MAX_WAIT_MS (default: the worker's default).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=Path("bench-results"),
    show_default=True,
)
def bench_command(
    events: int,
    sustained_seconds: float,
    baseline_events: int,
    live_seconds: float,
    load_seconds: float,
    loads: str,
    max_wait_ms: int | None,
    out_dir: Path,
) -> None:
    """The benchmark: drains against the bare loop, far broker, sustained load, latency."""
    require_bench_extra()
    from rich.console import Console

    from streamserve.config import Settings
    from streamserve_loadgen.measure.bench import run_bench
    from streamserve_loadgen.measure.bench_report import print_table
    from streamserve_loadgen.measure.bench_steps import BenchPlan

    plan = BenchPlan(
        events=events,
        baseline_events=baseline_events,
        live_seconds=live_seconds,
        load_seconds=load_seconds,
        sustained_seconds=sustained_seconds,
        loads=tuple(int(x) for x in loads.split(",")),
        out_dir=out_dir,
        max_wait_ms=max_wait_ms
        if max_wait_ms is not None
        else Settings.model_fields["max_wait_ms"].default,
    )
    console = Console(stderr=True)
    results = run_bench(plan, console)
    print_table(results, Console())


@click.command("chaos")
@click.option("--events", type=click.IntRange(min=1000), default=300_000, show_default=True)
@click.option(
    "--rate",
    type=click.IntRange(min=100),
    default=10_000,
    show_default=True,
    help="Events/s offered.",
)
@click.option(
    "--kills",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help="Workers SIGKILLed (each replaced, after --replace-after-s).",
)
@click.option("--redis-outages", type=click.IntRange(min=0), default=2, show_default=True)
@click.option("--redis-down-s", type=click.FloatRange(min=0.1), default=5.0, show_default=True)
@click.option(
    "--redis-outage",
    type=click.Choice(["stop", "freeze", "both"]),
    default="both",
    show_default=True,
    help="Stop Redis (connections refused), freeze it (SIGSTOP: connections hang), or alternate.",
)
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True)
@click.option(
    "--replace-after-s",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="A killed worker's replacement starts this long after the kill.",
)
@click.option(
    "--commit-interval-ms",
    type=click.IntRange(min=10),
    default=200,
    show_default=True,
    help="At least once (exactly-once keeps its default, 100 ms).",
)
@click.option(
    "--guarantee",
    type=click.Choice(["at-least-once", "exactly-once", "both"]),
    default="both",
    show_default=True,
    help="The processing guarantee of the round (both: one round each, one after the other).",
)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=Path("chaos-results"),
    show_default=True,
)
def chaos_command(
    events: int,
    rate: int,
    kills: int,
    redis_outages: int,
    redis_down_s: float,
    redis_outage: str,
    workers: int,
    replace_after_s: float,
    commit_interval_ms: int,
    guarantee: str,
    seed: int,
    out_dir: Path,
) -> None:
    """Two workers under load, SIGKILLs, Redis outages, a third worker joining; then an audit
    (read_committed), per processing guarantee.

    Exit 1 if anything was lost, a malformed event has no dead letter with a reason, or the
    duplicates exceed what the killed workers had in hand.
    """
    require_bench_extra()
    from rich.console import Console

    from streamserve_loadgen.measure.chaos import ChaosPlan, render, run_chaos

    logging.basicConfig(level=logging.WARNING)
    failed = False
    out_dir.mkdir(parents=True, exist_ok=True)
    rounds = ["at-least-once", "exactly-once"] if guarantee == "both" else [guarantee]
    for round_guarantee in rounds:
        plan = ChaosPlan(
            events=events,
            rate=rate,
            kills=kills,
            redis_outages=redis_outages,
            redis_down_s=redis_down_s,
            redis_outage=redis_outage,  # type: ignore[arg-type]
            workers=workers,
            replace_after_s=replace_after_s,
            guarantee=round_guarantee,  # type: ignore[arg-type]
            commit_interval_ms=commit_interval_ms,
            seed=seed,
        )
        result = run_chaos(plan, Console(stderr=True))
        report = json.dumps(result.as_dict(), indent=2) + "\n"
        (out_dir / f"chaos-{round_guarantee}.json").write_text(report)
        click.echo(render(result))
        failed = failed or not result.ok
    if failed:
        raise SystemExit(1)


@click.command("soak")
@click.option("--minutes", type=click.FloatRange(min=0.5), default=10.0, show_default=True)
@click.option("--rate", type=click.IntRange(min=100), default=5_000, show_default=True)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=Path("soak-results"),
    show_default=True,
)
def soak_command(minutes: float, rate: int, out_dir: Path) -> None:
    """A steady load through one worker, its RSS sampled every 10 s; ends with an audit.

    Exit 1 if anything was lost.
    """
    require_bench_extra()
    from rich.console import Console

    from streamserve_loadgen.measure.soak import SoakPlan, run_soak

    logging.basicConfig(level=logging.WARNING)
    result = run_soak(SoakPlan(minutes=minutes, rate=rate), Console(stderr=True))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "soak.json").write_text(json.dumps(result, indent=2) + "\n")
    shown = {k: v for k, v in result.items() if k.startswith("rss_") and k != "rss_mb"}
    click.echo(
        json.dumps(
            {
                "events": result["audit"]["events"],
                "lost": result["audit"]["lost"],
                "rss_samples_mb": [round(r) for _, r in result["rss_mb"]],
                **shown,
            }
        )
    )
    if result["audit"]["lost"]:
        raise SystemExit(1)


RUN_COMMANDS = [bench_command, chaos_command, soak_command]
