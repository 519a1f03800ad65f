"""`streamserve topics|audit|lag`: the operator's tools that read the cluster."""

from __future__ import annotations

import json
import sys

import click

from streamserve.cli.common import command_settings, exit_on_error, prediction_schemas

__all__ = ["audit", "lag", "topics"]


@click.command()
def topics() -> None:
    """Create the configured input and output topics that do not exist yet."""
    from streamserve.io import kafka as kafka_io

    s = command_settings()
    admin = exit_on_error(lambda: kafka_io.make_admin(s))
    created = exit_on_error(
        lambda: kafka_io.ensure_topics(admin, s.topic_names(), s.topic_partitions)
    )
    click.echo(f"created {', '.join(created)}" if created else "all topics exist")


@click.command()
@click.option(
    "--input-topic",
    envvar="STREAMSERVE_INPUT_TOPIC",
    show_envvar=True,
    help="Topic whose records are reconciled (default: the worker's).",
)
@click.option(
    "--timeout-s",
    type=click.FloatRange(min=1),
    default=120.0,
    show_default=True,
    help="Give up reading the topics after this long.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object only.")
def audit(input_topic: str | None, timeout_s: float, as_json: bool) -> None:
    """Match every input record with its prediction or dead letter by their provenance.

    Counts lost (no outcome), duplicated (more than one) and dead letters per class, from the
    configured input, prediction and dead-letter topics. Exit 1 if any record was lost or a dead
    letter has no reason.
    """
    from streamserve.io.kafka import Cluster
    from streamserve.tools.audit import audit as run_audit

    s = command_settings(input_topic=input_topic)
    report = exit_on_error(
        lambda: run_audit(
            Cluster.of(s),
            s.input_topic,
            s.predictions_topic,
            s.dead_letter_topic,
            timeout_s,
            schemas=prediction_schemas(s),
        )
    )
    if as_json:
        click.echo(json.dumps(report.as_dict()))
    else:
        click.echo(report.render())
    if not report.ok:
        sys.exit(1)


@click.command()
@click.option(
    "--group",
    envvar="STREAMSERVE_GROUP_ID",
    show_envvar=True,
    help="Consumer group (default: the worker's).",
)
@click.option(
    "--topic",
    envvar="STREAMSERVE_INPUT_TOPIC",
    show_envvar=True,
    help="Topic (default: the worker's input topic).",
)
@click.option(
    "--max-lag",
    type=click.IntRange(min=0),
    default=None,
    help="Exit 1 if the total lag is above this.",
)
@click.option("--timeout-s", type=click.FloatRange(min=1), default=10.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object only.")
def lag(
    group: str | None, topic: str | None, max_lag: int | None, timeout_s: float, as_json: bool
) -> None:
    """Committed offset, log end and lag per partition of a consumer group.

    Exit 0; 1 if --max-lag is given and the total lag is above it; 5 if the cluster cannot be
    reached or the topic does not exist. It never joins the group or commits.
    """
    from streamserve.io.kafka import Cluster
    from streamserve.tools.lag import group_lag

    s = command_settings(group_id=group, input_topic=topic)
    report = exit_on_error(lambda: group_lag(Cluster.of(s), s.group_id, s.input_topic, timeout_s))
    click.echo(json.dumps(report.as_dict()) if as_json else report.render())
    if max_lag is not None and report.total > max_lag:
        sys.exit(1)
