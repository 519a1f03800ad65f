"""`streamserve-loadgen`: the demo, the embedded stack, and synthetic load with the accounting
of its outcomes (bench, chaos, soak).

Options read the same STREAMSERVE_* variables as the worker, so one environment drives both.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from streamserve_loadgen.commands.demo_commands import DEMO_COMMANDS
from streamserve_loadgen.commands.run_commands import RUN_COMMANDS
from streamserve_loadgen.commands.tool_commands import TOOL_COMMANDS
from streamserve_loadgen.load.produce import preload, produce_at_rate
from streamserve_loadgen.load.profile import RateProfile
from streamserve_loadgen.world.synthetic import generate_events


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


for command in [*DEMO_COMMANDS, *RUN_COMMANDS, *TOOL_COMMANDS]:
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
@click.option(
    "--format",
    "input_format",
    type=click.Choice(["json", "avro", "protobuf", "json-schema"]),
    envvar="STREAMSERVE_INPUT_FORMAT",
    show_envvar=True,
    default="json",
    show_default=True,
    help="Plain JSON, or framed by confluent-kafka's serializers (needs the two options below).",
)
@click.option(
    "--schema-registry-url",
    envvar="STREAMSERVE_SCHEMA_REGISTRY_URL",
    show_envvar=True,
    help="Where the event schema is registered, as <topic>-value.",
)
@click.option(
    "--model-dir",
    type=click.Path(path_type=Path),
    envvar="STREAMSERVE_MODEL_DIR",
    show_envvar=True,
    help="Bundle whose manifest gives the event schema.",
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
    input_format: str,
    schema_registry_url: str | None,
    model_dir: Path | None,
) -> None:
    """Offer events at a fixed rate, a ramp or bursts; prints one JSON line of what was sent."""
    profile = make_profile(kind, rate, peak, seconds, burst_every_s, burst_s)
    events = generate_events(profile.total, entities, seed, malformed_every)
    if input_format != "json":
        from streamserve.core.model import read_manifest
        from streamserve.io.registry import registry_client
        from streamserve_loadgen.world.formats import framed, serializer

        if not (schema_registry_url and model_dir):
            raise click.UsageError(
                f"--format {input_format} needs --schema-registry-url and --model-dir"
            )
        manifest = read_manifest(model_dir)
        events = framed(
            events,
            serializer(
                input_format, registry_client({"url": schema_registry_url}), input_topic, manifest
            ),
        )
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
    from streamserve_loadgen.measure.latency import Watcher

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
    from streamserve_loadgen.measure.live import run_live

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
