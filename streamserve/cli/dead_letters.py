"""`streamserve dead-letters count|replay` (tools/dead_letters.py does the work)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from streamserve.cli.common import command_settings, exit_on_error

__all__ = ["dead_letters"]


@click.group("dead-letters")
def dead_letters() -> None:
    """What is on STREAMSERVE_DEAD_LETTER_TOPIC, and replaying a selection of it.

    A selection: failure time in [--since, --until) (ISO 8601, UTC unless a zone is given, or
    epoch ms) and --class (repeatable; every class if none)."""


def _selection_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(
        [
            click.option("--since", help="Failed at or after (ISO 8601 or epoch ms)."),
            click.option("--until", help="Failed before (ISO 8601 or epoch ms)."),
            click.option("--class", "classes", multiple=True, help="An error class; repeatable."),
            click.option("--timeout-s", type=click.FloatRange(min=1), default=60.0),
            click.option("--json", "as_json", is_flag=True, help="Print one JSON object only."),
        ]
    ):
        command = option(command)
    return command


def _selection(since: str | None, until: str | None, classes: tuple[str, ...]) -> Any:
    from streamserve.core.records import ERROR_CLASSES
    from streamserve.tools.dead_letters import Selection, parse_time

    unknown = sorted(set(classes) - set(ERROR_CLASSES))
    if unknown:
        raise click.BadParameter(f"{unknown}; the classes are {', '.join(ERROR_CLASSES)}")
    try:
        bounds = [None if t is None else parse_time(t) for t in (since, until)]
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return Selection(bounds[0], bounds[1], frozenset(classes))


@dead_letters.command("count")
@_selection_options
def dead_letters_count(
    since: str | None, until: str | None, classes: tuple[str, ...], timeout_s: float, as_json: bool
) -> None:
    """Count the selected dead letters by class and by reason."""
    from streamserve.io.kafka import Cluster
    from streamserve.tools.dead_letters import count

    s = command_settings()
    selection = _selection(since, until, classes)
    counts = exit_on_error(lambda: count(Cluster.of(s), s.dead_letter_topic, selection, timeout_s))
    click.echo(json.dumps(counts.as_dict()) if as_json else counts.render())


@dead_letters.command("replay")
@_selection_options
@click.option("--to", "target", help="Topic to replay to (default: STREAMSERVE_INPUT_TOPIC).")
@click.option("--execute", is_flag=True, help="Produce them (else a dry run: what would go).")
def dead_letters_replay(
    since: str | None,
    until: str | None,
    classes: tuple[str, ...],
    timeout_s: float,
    as_json: bool,
    target: str | None,
    execute: bool,
) -> None:
    """Send the selected dead letters' original records back to a topic, once the cause is
    fixed: each selection is replayed once (a second run of it sends only newer ones)."""
    from streamserve.io.kafka import Cluster, make_producer
    from streamserve.tools.dead_letters import replay

    s = command_settings()
    selection = _selection(since, until, classes)
    report = exit_on_error(
        lambda: replay(
            Cluster.of(s),
            make_producer(s),
            s.dead_letter_topic,
            selection,
            target or s.input_topic,
            execute,
            timeout_s,
        )
    )
    click.echo(json.dumps(report.as_dict()) if as_json else report.render())
