"""`streamserve worker`, and asking a running one: `probe`, `config`."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click

from streamserve import __version__
from streamserve.cli.common import command_settings, exit_on_error, worker_settings
from streamserve.config_shown import masked
from streamserve.errors import MissingExtraError
from streamserve.telemetry.logs import setup_logging

__all__ = ["probe", "show_config", "worker"]


@click.command()
@click.option(
    "--model-dir",
    type=click.Path(path_type=Path),
    envvar="STREAMSERVE_MODEL_DIR",
    show_envvar=True,
    help="Model bundle directory.",
)
@click.option(
    "--max-events",
    type=int,
    envvar="STREAMSERVE_MAX_EVENTS",
    show_envvar=True,
    help="Exit after this many records (per process).",
)
@click.option(
    "--exit-when-idle-s",
    type=float,
    envvar="STREAMSERVE_EXIT_WHEN_IDLE_S",
    show_envvar=True,
    help="Exit after this many seconds without records.",
)
@click.option(
    "--processes",
    type=click.IntRange(1, 256),
    default=1,
    show_default=True,
    help="Worker processes in the one consumer group (one per core). Process i serves HTTP on "
    "STREAMSERVE_HTTP_PORT + i.",
)
def worker(
    model_dir: Path | None, max_events: int | None, exit_when_idle_s: float | None, processes: int
) -> None:
    """Consume, score and publish until stopped (SIGTERM/SIGINT: finish batch, commit, exit 0)."""
    overrides = {
        "model_dir": model_dir,
        "max_events": max_events,
        "exit_when_idle_s": exit_when_idle_s,
    }
    settings = worker_settings(**overrides)
    setup_logging(settings.log_level, settings.log_format)
    if processes > 1:
        from streamserve.runtime.processes import refuse_shared_member_id, run_processes

        exit_on_error(lambda: refuse_shared_member_id(settings, processes))
        sys.exit(run_processes(settings, processes, overrides))
    from streamserve.io.http import serve
    from streamserve.runtime.identity import with_worker_id
    from streamserve.runtime.startup import build_worker

    settings = with_worker_id(settings)  # a restart on this host takes its predecessor's slot
    log = logging.getLogger("streamserve")
    config = masked(settings)
    log.info(
        "streamserve %s worker %s starting; configuration: %s",
        __version__,
        settings.worker_id,
        config,
        extra={"config": config},
    )
    if settings.runtime == "faust":

        def run_faust() -> Any:
            try:
                from streamserve.runtime.faust import run_faust_worker
            except ModuleNotFoundError as exc:  # faust-streaming is an extra
                if exc.name not in ("faust", "mode"):
                    raise
                raise MissingExtraError(
                    "the Faust runtime (STREAMSERVE_RUNTIME=faust)", "faust"
                ) from None
            return run_faust_worker(settings)

        click.echo(json.dumps(exit_on_error(run_faust).as_dict()))
        return
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    built = exit_on_error(lambda: build_worker(settings, stop))
    if settings.http_port:
        exit_on_error(lambda: serve(built.telemetry, settings.http_host, settings.http_port))
    summary = exit_on_error(built.run)
    click.echo(json.dumps(summary.as_dict()))


@click.command()
@click.option("--ready", is_flag=True, help="Ask /readyz instead of /healthz.")
@click.option("--timeout-s", type=click.FloatRange(min=0.1), default=3.0, show_default=True)
def probe(ready: bool, timeout_s: float) -> None:
    """Ask the local worker's /healthz (or /readyz); exit 0 if it says ok, else 1.

    For container health checks and exec probes: it reads STREAMSERVE_HTTP_PORT like the worker.
    """
    from streamserve.tools.probe import probe as ask

    s = command_settings()
    if not s.http_port:
        click.echo("streamserve: STREAMSERVE_HTTP_PORT is 0: the endpoint is off", err=True)
        sys.exit(2)
    ok, answer = ask(s.http_port, ready, timeout_s)
    if ok or answer.startswith("{"):  # what the endpoint said (503 with its failed checks)
        click.echo(answer)
    else:
        click.echo(f"streamserve: {answer}", err=True)
    if not ok:
        sys.exit(1)


@click.command("config")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of KEY=value lines.")
def show_config(as_json: bool) -> None:
    """Print the effective configuration, secrets masked; exit 2 if it is invalid (librdkafka
    options included)."""
    shown = masked(worker_settings())
    if as_json:
        click.echo(json.dumps(shown, indent=2))
    else:
        for var, value in shown.items():
            click.echo(f"{var}={value}")
