"""`streamserve-loadgen`: put synthetic events on a topic."""

from __future__ import annotations

import json
import time

import click

from loadgen.produce import preload
from loadgen.watch import account
from streamserve.synthetic import generate_events


@click.group()
def main() -> None:
    """Load generator for streamserve."""


@main.command("preload")
@click.option(
    "--bootstrap",
    envvar="STREAMSERVE_KAFKA_BOOTSTRAP",
    show_envvar=True,
    default="127.0.0.1:9092",
    show_default=True,
    help="Kafka bootstrap servers.",
)
@click.option(
    "--topic",
    envvar="STREAMSERVE_INPUT_TOPIC",
    show_envvar=True,
    default="events",
    show_default=True,
    help="Topic to write to.",
)
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
    bootstrap: str, topic: str, count: int, entities: int, malformed_every: int, seed: int
) -> None:
    """Produce COUNT events with Zipf-distributed entities, then print one JSON line."""
    started = time.perf_counter()
    produced = preload(bootstrap, topic, generate_events(count, entities, seed, malformed_every))
    seconds = time.perf_counter() - started
    click.echo(json.dumps({"produced": produced, "seconds": round(seconds, 3),
                           "events_per_s": round(produced / seconds, 1)}))  # fmt: skip


@main.command("account")
@click.option(
    "--bootstrap",
    envvar="STREAMSERVE_KAFKA_BOOTSTRAP",
    show_envvar=True,
    default="127.0.0.1:9092",
    show_default=True,
    help="Kafka bootstrap servers.",
)
@click.option(
    "--input-topic",
    envvar="STREAMSERVE_INPUT_TOPIC",
    show_envvar=True,
    default="events",
    show_default=True,
)
@click.option(
    "--predictions-topic",
    envvar="STREAMSERVE_PREDICTIONS_TOPIC",
    show_envvar=True,
    default="predictions",
    show_default=True,
)
@click.option(
    "--dead-letter-topic",
    envvar="STREAMSERVE_DEAD_LETTER_TOPIC",
    show_envvar=True,
    default="dead-letters",
    show_default=True,
)
def account_command(
    bootstrap: str, input_topic: str, predictions_topic: str, dead_letter_topic: str
) -> None:
    """Match every input record with its prediction or dead letter; exit 1 if any is lost."""
    result = account(bootstrap, input_topic, predictions_topic, dead_letter_topic)
    click.echo(json.dumps(result))
    if result["lost"]:
        raise SystemExit(1)
