"""`streamserve-loadgen`: put synthetic events on a topic and account for their outcomes.

Options read the same STREAMSERVE_* variables as the worker, so one environment drives both.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from typing import Any

import click

from loadgen.produce import preload
from loadgen.watch import account
from streamserve.synthetic import generate_events


def env_option(flag: str, var: str, default: str, help_text: str) -> Any:
    """An option that falls back to the worker's environment variable."""
    return click.option(flag, envvar=var, show_envvar=True, default=default, show_default=True,
                        help=help_text)  # fmt: skip


bootstrap_option = env_option(
    "--bootstrap", "STREAMSERVE_KAFKA_BOOTSTRAP", "127.0.0.1:9092", "Kafka bootstrap servers."
)
input_topic_option = env_option(
    "--input-topic", "STREAMSERVE_INPUT_TOPIC", "events", "Topic the events go to."
)


@click.group()
def main() -> None:
    """Load generator for streamserve."""


@main.command("preload")
@bootstrap_option
@input_topic_option
@click.option("--events", "count", type=click.IntRange(min=1), default=100_000, show_default=True)
@click.option("--entities", type=click.IntRange(min=1), default=10_000, show_default=True)
@click.option("--malformed-every", type=click.IntRange(min=0), default=0, show_default=True,
              help="Every N-th event is malformed (0: none).")  # fmt: skip
@click.option("--seed", type=int, default=11, show_default=True)
def preload_command(
    bootstrap: str, input_topic: str, count: int, entities: int, malformed_every: int, seed: int
) -> None:
    """Produce COUNT events with Zipf-distributed entities, then print one JSON line."""
    started = time.perf_counter()
    events = generate_events(count, entities, seed, malformed_every)
    produced = preload(bootstrap, input_topic, events)
    seconds = time.perf_counter() - started
    click.echo(json.dumps({"produced": produced, "seconds": round(seconds, 3),
                           "events_per_s": round(produced / seconds, 1)}))  # fmt: skip


@main.command("account")
@bootstrap_option
@input_topic_option
@env_option("--predictions-topic", "STREAMSERVE_PREDICTIONS_TOPIC", "predictions", "Predictions.")
@env_option("--dead-letter-topic", "STREAMSERVE_DEAD_LETTER_TOPIC", "dead-letters", "Dead letters.")
def account_command(
    bootstrap: str, input_topic: str, predictions_topic: str, dead_letter_topic: str
) -> None:
    """Match every input record with its prediction or dead letter; exit 1 if any is lost."""
    result = account(bootstrap, input_topic, predictions_topic, dead_letter_topic)
    click.echo(json.dumps(result))
    if result["lost"]:
        raise SystemExit(1)


@main.command("passthrough")
@click.option("--output-topic", default="passthrough", show_default=True,
              help="Where the copies go.")  # fmt: skip
def passthrough_command(output_topic: str) -> None:
    """Copy the input topic's records to OUTPUT_TOPIC untouched: the broker path's ceiling.

    Reads the worker's STREAMSERVE_* variables (bootstrap, input topic, group, batch size,
    exit-when-idle); SIGTERM stops it. Prints one JSON line like the worker's.
    """
    from loadgen.passthrough import run_passthrough
    from streamserve.config import load_settings

    settings = load_settings()
    logging.basicConfig(level=settings.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    summary = run_passthrough(settings, output_topic, stop)
    click.echo(json.dumps(summary.as_dict()))
