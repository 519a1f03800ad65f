"""`streamserve-loadgen`: the demo, the embedded stack, and synthetic load with the accounting
of its outcomes (bench, chaos, soak).

Options read the same STREAMSERVE_* variables as the worker, so one environment drives both.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click

from streamserve_loadgen.demo_commands import DEMO_COMMANDS
from streamserve_loadgen.produce import preload, produce_at_rate
from streamserve_loadgen.profile import RateProfile
from streamserve_loadgen.synthetic import generate_events


def env_option(flag: str, var: str, default: str, help_text: str) -> Any:
    """An option that falls back to the worker's environment variable."""
    return click.option(
        flag, envvar=var, show_envvar=True, default=default, show_default=True, help=help_text
    )


bootstrap_option = env_option(
    "--bootstrap", "STREAMSERVE_KAFKA_BOOTSTRAP", "127.0.0.1:9092", "Kafka bootstrap servers."
)
input_topic_option = env_option(
    "--input-topic", "STREAMSERVE_INPUT_TOPIC", "events", "Topic the events go to."
)


@click.group()
def main() -> None:
    """streamserve's harness: demo, embedded stack, load generator, bench, chaos, soak."""


for command in DEMO_COMMANDS:
    main.add_command(command)


@main.command("preload")
@bootstrap_option
@input_topic_option
@click.option("--events", "count", type=click.IntRange(min=1), default=100_000, show_default=True)
@click.option("--entities", type=click.IntRange(min=1), default=10_000, show_default=True)
@click.option(
    "--malformed-every",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Every N-th event is malformed (0: none).",
)
@click.option("--seed", type=int, default=11, show_default=True)
def preload_command(
    bootstrap: str, input_topic: str, count: int, entities: int, malformed_every: int, seed: int
) -> None:
    """Produce COUNT events with Zipf-distributed entities, then print one JSON line."""
    started = time.perf_counter()
    events = generate_events(count, entities, seed, malformed_every)
    produced = preload(bootstrap, input_topic, events)
    seconds = time.perf_counter() - started
    click.echo(
        json.dumps(
            {
                "produced": produced,
                "seconds": round(seconds, 3),
                "events_per_s": round(produced / seconds, 1),
            }
        )
    )


def profile_options(command: Any) -> Any:
    """The options that describe an offered load."""
    options = [
        click.option(
            "--profile",
            "kind",
            type=click.Choice(["fixed", "ramp", "burst"]),
            default="fixed",
            show_default=True,
            help="Shape of the offered load.",
        ),
        click.option(
            "--rate",
            type=click.FloatRange(min=0),
            default=1000,
            show_default=True,
            help="Events/s (ramp: start rate; burst: base rate).",
        ),
        click.option(
            "--peak",
            type=click.FloatRange(min=0),
            default=0.0,
            help="Ramp: end rate. Burst: rate during a burst.",
        ),
        click.option("--seconds", type=click.FloatRange(min=0.1), default=10, show_default=True),
        click.option(
            "--burst-every-s", type=click.FloatRange(min=0.1), default=5.0, show_default=True
        ),
        click.option("--burst-s", type=click.FloatRange(min=0.1), default=1.0, show_default=True),
        click.option(
            "--entities",
            type=click.IntRange(min=1),
            default=10_000,
            show_default=True,
            help="Distinct entities (Zipf-distributed keys).",
        ),
        click.option(
            "--malformed-every",
            type=click.IntRange(min=0),
            default=100,
            show_default=True,
            help="Every N-th event is malformed (0: none).",
        ),
        click.option("--seed", type=int, default=11, show_default=True),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def make_profile(
    kind: str, rate: float, peak: float, seconds: float, burst_every_s: float, burst_s: float
) -> RateProfile:
    try:
        return RateProfile(kind, rate, seconds, peak, burst_every_s, burst_s)  # type: ignore[arg-type]
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@main.command("produce")
@bootstrap_option
@input_topic_option
@profile_options
@click.option(
    "--linger-ms",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    help="The producer's linger.ms: longer, fewer and larger batches.",
)
def produce_command(
    bootstrap: str,
    input_topic: str,
    kind: str,
    rate: float,
    peak: float,
    seconds: float,
    burst_every_s: float,
    burst_s: float,
    entities: int,
    malformed_every: int,
    seed: int,
    linger_ms: float,
) -> None:
    """Offer events at a fixed rate, a ramp or bursts; prints one JSON line of what was sent."""
    profile = make_profile(kind, rate, peak, seconds, burst_every_s, burst_s)
    events = generate_events(profile.total, entities, seed, malformed_every)
    offered = produce_at_rate(bootstrap, input_topic, profile, events, linger_ms=linger_ms)
    click.echo(json.dumps(offered))


@main.command("watch")
@bootstrap_option
@env_option("--outputs", "STREAMSERVE_PREDICTIONS_TOPIC", "predictions", "Topic to time.")
@click.option("--dead-letters", default=None, help="Dead-letter topic, for the accounting.")
@click.option(
    "--origin",
    type=click.Choice(["prediction", "record-timestamp"]),
    default="prediction",
    show_default=True,
    help="Where the produce time comes from: prediction fields, or the output "
    "record's timestamp (pass-through).",
)
@click.option(
    "--expected",
    type=click.IntRange(min=0),
    required=True,
    help="Events sent: stop once this many outputs arrived.",
)
@click.option("--idle-s", type=click.FloatRange(min=0.1), default=5.0, show_default=True)
def watch_command(
    bootstrap: str,
    outputs: str,
    dead_letters: str | None,
    origin: str,
    expected: int,
    idle_s: float,
) -> None:
    """Time every output from its event's produce time; prints one JSON line."""
    from streamserve_loadgen.latency import Watcher

    watcher = Watcher(bootstrap, outputs, dead_letters, origin)  # type: ignore[arg-type]
    watcher.poll(0.5)  # connect and start fetching before the load starts
    print("watching", file=sys.stderr, flush=True)  # the parent waits for this line
    try:
        watcher.run(expected, idle_s)
    finally:
        watcher.close()
    click.echo(json.dumps(watcher.result(expected)))


@main.command("run")
@bootstrap_option
@input_topic_option
@env_option("--predictions-topic", "STREAMSERVE_PREDICTIONS_TOPIC", "predictions", "Predictions.")
@env_option("--dead-letter-topic", "STREAMSERVE_DEAD_LETTER_TOPIC", "dead-letters", "Dead letters.")
@profile_options
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=Path("loadgen-results"),
    show_default=True,
    help="Where run.json and run.png go.",
)
def run_command(
    bootstrap: str,
    input_topic: str,
    predictions_topic: str,
    dead_letter_topic: str,
    kind: str,
    rate: float,
    peak: float,
    seconds: float,
    burst_every_s: float,
    burst_s: float,
    entities: int,
    malformed_every: int,
    seed: int,
    out_dir: Path,
) -> None:
    """Offer a load to running workers and watch the outcome: accounting, latency, chart.

    The producer runs in its own process; this one watches. Exit 1 if any event was lost.
    """
    from streamserve_loadgen.live import run_live

    profile = make_profile(kind, rate, peak, seconds, burst_every_s, burst_s)
    result = run_live(
        bootstrap,
        input_topic,
        predictions_topic,
        dead_letter_topic,
        profile,
        entities,
        malformed_every,
        seed,
        out_dir,
    )
    click.echo(json.dumps({k: v for k, v in result.items() if k != "series"}))
    if result["lost"]:
        raise SystemExit(1)


@main.command("bench")
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
@click.option("--load-seconds", type=click.FloatRange(min=1), default=10.0, show_default=True)
@click.option(
    "--loads",
    default="1000,30000",
    show_default=True,
    help="Offered loads (events/s), comma-separated.",
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
    load_seconds: float,
    loads: str,
    max_wait_ms: int | None,
    out_dir: Path,
) -> None:
    """The benchmark: drains against the bare loop, far broker, sustained load, latency."""
    from rich.console import Console

    from streamserve.config import Settings
    from streamserve_loadgen.bench import BenchPlan, print_table, run_bench

    plan = BenchPlan(
        events=events,
        baseline_events=baseline_events,
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


@main.command("chaos")
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
    help="Workers SIGKILLed (each replaced at once).",
)
@click.option("--redis-outages", type=click.IntRange(min=0), default=2, show_default=True)
@click.option("--redis-down-s", type=click.FloatRange(min=0.1), default=5.0, show_default=True)
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
    seed: int,
    out_dir: Path,
) -> None:
    """Two workers under load, SIGKILLs, Redis outages, a third worker joining; then an audit.

    Exit 1 if anything was lost, a malformed event has no dead letter with a reason, or the
    duplicates exceed what the killed workers had in hand.
    """
    from rich.console import Console

    from streamserve_loadgen.chaos import ChaosPlan, render, run_chaos

    logging.basicConfig(level=logging.WARNING)
    plan = ChaosPlan(
        events=events,
        rate=rate,
        kills=kills,
        redis_outages=redis_outages,
        redis_down_s=redis_down_s,
        seed=seed,
    )
    result = run_chaos(plan, Console(stderr=True))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "chaos.json").write_text(json.dumps(result.as_dict(), indent=2) + "\n")
    click.echo(render(result))
    if not result.ok:
        raise SystemExit(1)


@main.command("soak")
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
    from rich.console import Console

    from streamserve_loadgen.soak import SoakPlan, run_soak

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


@main.command("faust-bare")
def faust_bare_command() -> None:
    """A bare Faust agent that only counts stream.take() batches: Faust's own ceiling.

    Reads the worker's STREAMSERVE_* variables (bootstrap, input topic, group, batch size, max
    wait, idle exit, max events); SIGTERM stops it. Prints one JSON line like the worker's.
    """
    from streamserve.config import load_settings
    from streamserve_loadgen.faustbare import run_bare_faust

    settings = load_settings()
    logging.basicConfig(
        level=settings.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    click.echo(json.dumps(run_bare_faust(settings).as_dict()))


@main.command("bareloop")
@click.option(
    "--output-topic", default="bareloop", show_default=True, help="Where its predictions go."
)
def bareloop_command(output_topic: str) -> None:
    """The 60-line loop a user writes by hand (no guarantees): the bench's reference.

    Reads the worker's STREAMSERVE_* variables (bootstrap, input topic, group, model directory,
    Redis, exit-when-idle); SIGTERM stops it. Prints one JSON line like the worker's.
    """
    from streamserve.config import load_settings
    from streamserve_loadgen.bareloop import run_bare_loop

    settings = load_settings()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    click.echo(json.dumps(run_bare_loop(settings, output_topic, stop).as_dict()))


@main.command("delay-proxy")
@click.option("--listen", type=click.IntRange(1, 65_535), required=True, help="Loopback port.")
@click.option(
    "--target", type=click.IntRange(1, 65_535), required=True, help="Loopback port of the broker."
)
@click.option(
    "--delay-ms",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="Added to every byte, each way.",
)
def delay_proxy_command(listen: int, target: int, delay_ms: float) -> None:
    """A TCP proxy on 127.0.0.1 that delays every byte: a broker far away, on one machine.

    Start the broker with its advertised port set to LISTEN so every client goes through it.
    """
    from streamserve_loadgen.delayproxy import run_proxy

    run_proxy(listen, target, delay_ms)


@main.command("passthrough")
@click.option(
    "--output-topic", default="passthrough", show_default=True, help="Where the copies go."
)
def passthrough_command(output_topic: str) -> None:
    """Copy the input topic's records to OUTPUT_TOPIC untouched: the broker path's ceiling.

    Reads the worker's STREAMSERVE_* variables (bootstrap, input topic, group, batch size,
    exit-when-idle); SIGTERM stops it. Prints one JSON line like the worker's.
    """
    from streamserve.config import load_settings
    from streamserve_loadgen.passthrough import run_passthrough

    settings = load_settings()
    logging.basicConfig(
        level=settings.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    summary = run_passthrough(settings, output_topic, stop)
    click.echo(json.dumps(summary.as_dict()))
