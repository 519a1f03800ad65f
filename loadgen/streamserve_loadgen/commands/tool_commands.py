"""The harness's reference consumers and tools: the bare Faust agent, the bare loop, the
pass-through, the delay proxy and the decode-cost measurement. Registered on
`streamserve-loadgen` (cli.py)."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading

import click


@click.command("faust-bare")
def faust_bare_command() -> None:
    """A bare Faust agent that only counts stream.take() batches: Faust's own ceiling.

    Reads the worker's STREAMSERVE_* variables (bootstrap, input topic, group, batch size, max
    wait, idle exit, max events); SIGTERM stops it. Prints one JSON line like the worker's.
    """
    from streamserve.config import load_settings
    from streamserve_loadgen.load.faustbare import run_bare_faust

    settings = load_settings()
    logging.basicConfig(
        level=settings.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    click.echo(json.dumps(run_bare_faust(settings).as_dict()))


@click.command("decode-cost")
@click.option("--events", type=click.IntRange(min=1_000), default=20_000, show_default=True)
def decode_cost_command(events: int) -> None:
    """Microseconds per event the worker's decoder spends on the same demo events in JSON, Avro
    and Protobuf (in process, mock registry; best of 7 passes). Prints one JSON object."""
    from streamserve_loadgen.measure.decode_cost import decode_costs

    click.echo(json.dumps(decode_costs(events=events)))


@click.command("bareloop")
@click.option(
    "--output-topic", default="bareloop", show_default=True, help="Where its predictions go."
)
def bareloop_command(output_topic: str) -> None:
    """The 60-line loop a user writes by hand (no guarantees): the bench's reference.

    Reads the worker's STREAMSERVE_* variables (bootstrap, input topic, group, model directory,
    Redis, exit-when-idle); SIGTERM stops it. Prints one JSON line like the worker's.
    """
    from streamserve.config import load_settings
    from streamserve_loadgen.load.bareloop import run_bare_loop

    settings = load_settings()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    click.echo(json.dumps(run_bare_loop(settings, output_topic, stop).as_dict()))


@click.command("delay-proxy")
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
    from streamserve_loadgen.load.delayproxy import run_proxy

    run_proxy(listen, target, delay_ms)


@click.command("passthrough")
@click.option(
    "--output-topic", default="passthrough", show_default=True, help="Where the copies go."
)
def passthrough_command(output_topic: str) -> None:
    """Copy the input topic's records to OUTPUT_TOPIC untouched: the broker path's ceiling.

    Reads the worker's STREAMSERVE_* variables (bootstrap, input topic, group, batch size,
    exit-when-idle); SIGTERM stops it. Prints one JSON line like the worker's.
    """
    from streamserve.config import load_settings
    from streamserve_loadgen.load.passthrough import run_passthrough

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


TOOL_COMMANDS = [
    faust_bare_command,
    bareloop_command,
    delay_proxy_command,
    passthrough_command,
    decode_cost_command,
]
