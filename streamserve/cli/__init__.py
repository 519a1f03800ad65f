"""The `streamserve` command: the worker and the operator's tools. Exit codes: 0 ok, 1 a check
failed (probe, audit, lag), 2 bad configuration or a missing extra, 3 bad model bundle, 4 feature
store unreachable, 5 Kafka or delivery failure, 7 Schema Registry unreachable at start-up."""

from __future__ import annotations

import click

from streamserve import __version__
from streamserve.cli.common import EXIT_CODES, exit_on_error
from streamserve.cli.dead_letters import dead_letters
from streamserve.cli.kafka_tools import audit, lag, topics
from streamserve.cli.models import model, schemas
from streamserve.cli.worker import probe, show_config, worker

__all__ = ["EXIT_CODES", "exit_on_error", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="streamserve")
def main() -> None:
    """Streaming inference: Kafka events, Redis features, XGBoost micro-batches.

    Every setting is a STREAMSERVE_* environment variable (see `streamserve config`).
    """


for command in (worker, probe, show_config, model, schemas, topics, audit, lag, dead_letters):
    main.add_command(command)
