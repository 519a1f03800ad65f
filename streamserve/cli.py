"""The `streamserve` command: the worker and the operator's tools. Exit codes: 0 ok, 1 a check
failed (probe, audit, lag), 2 bad configuration or a missing extra, 3 bad model bundle, 4 feature
store unreachable, 5 Kafka or delivery failure, 7 Schema Registry unreachable at start-up."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from streamserve import __version__
from streamserve.config import Settings, load_settings
from streamserve.errors import (
    ConfigError,
    DeliveryError,
    FeatureStoreError,
    MissingExtraError,
    ModelBundleError,
    RegistryUnavailable,
    StreamserveError,
)
from streamserve.telemetry.logs import fatal, setup_logging

EXIT_CODES: list[tuple[type[StreamserveError], int]] = [
    (ConfigError, 2),
    (ModelBundleError, 3),
    (FeatureStoreError, 4),
    (DeliveryError, 5),
    (RegistryUnavailable, 7),
    (StreamserveError, 5),
]


def exit_on_error(
    action: Callable[[], Any], exit_codes: list[tuple[type[StreamserveError], int]] = EXIT_CODES
) -> Any:
    """Run a command body; a streamserve error prints one line and exits with its code."""
    from confluent_kafka import KafkaException

    try:
        return action()
    except StreamserveError as exc:
        code = next((c for kind, c in exit_codes if isinstance(exc, kind)), 5)
        fatal(str(exc))
        sys.exit(code)
    except KafkaException as exc:
        fatal(f"Kafka error: {exc.args[0].str()}")
        sys.exit(5)


def _settings(**overrides: Any) -> Settings:
    return exit_on_error(
        lambda: load_settings(**{k: v for k, v in overrides.items() if v is not None})
    )


def _worker_settings(**overrides: Any) -> Settings:
    """The settings, with every librdkafka option checked: what a worker starts with."""
    from streamserve.io.kafka import check_client_options

    settings = _settings(**overrides)
    exit_on_error(lambda: check_client_options(settings))
    return settings


def _prediction_schemas(settings: Settings) -> Any:
    """Writer schemas from the registry, to read predictions written in a registry format
    (STREAMSERVE_OUTPUT_FORMAT); None for JSON."""
    if settings.output_format == "json":
        return None
    from streamserve.io.registry import RegistrySchemas, registry_client, require_format

    require_format(settings.output_format)
    client = registry_client(settings.schema_registry_config())
    return RegistrySchemas(client, settings.output_format)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="streamserve")
def main() -> None:
    """Streaming inference: Kafka events, Redis features, XGBoost micro-batches.

    Every setting is a STREAMSERVE_* environment variable (see `streamserve config`).
    """


@main.command()
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
    settings = _worker_settings(**overrides)
    setup_logging(settings.log_level, settings.log_format)
    if processes > 1:
        from streamserve.runtime.processes import refuse_shared_member_id, run_processes

        exit_on_error(lambda: refuse_shared_member_id(settings, processes))
        sys.exit(run_processes(settings, processes, overrides))
    from streamserve.io.http import serve
    from streamserve.runtime.confluent import build_worker
    from streamserve.runtime.identity import with_worker_id

    settings = with_worker_id(settings)  # a restart on this host takes its predecessor's slot
    log = logging.getLogger("streamserve")
    config = settings.masked()
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


@main.command()
@click.option("--ready", is_flag=True, help="Ask /readyz instead of /healthz.")
@click.option("--timeout-s", type=click.FloatRange(min=0.1), default=3.0, show_default=True)
def probe(ready: bool, timeout_s: float) -> None:
    """Ask the local worker's /healthz (or /readyz); exit 0 if it says ok, else 1.

    For container health checks and exec probes: it reads STREAMSERVE_HTTP_PORT like the worker.
    """
    from streamserve.tools.probe import probe as ask

    s = _settings()
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


@main.command("config")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of KEY=value lines.")
def show_config(as_json: bool) -> None:
    """Print the effective configuration, secrets masked; exit 2 if it is invalid (librdkafka
    options included)."""
    shown = _worker_settings().masked()
    if as_json:
        click.echo(json.dumps(shown, indent=2))
    else:
        for var, value in shown.items():
            click.echo(f"{var}={value}")


@main.group()
def model() -> None:
    """Model bundles."""


@model.command("check")
@click.argument("bundle_dir", type=click.Path(path_type=Path))
def model_check(bundle_dir: Path) -> None:
    """Load a bundle and check manifest against booster; exit 3 if they disagree."""
    from streamserve.core.model import load_bundle

    bundle = exit_on_error(lambda: load_bundle(bundle_dir))
    manifest = bundle.manifest
    click.echo(
        f"ok: {manifest.name} v{manifest.version}, {len(manifest.event_features)} event "
        f"and {len(manifest.store_features)} store features, "
        f"{manifest.store.layout} layout, keys {manifest.store.key_template}"
    )


@model.command("feast")
@click.argument("bundle_dir", type=click.Path(path_type=Path))
@click.option(
    "--repo",
    "repo_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="The Feast repository: its feature_store.yaml and the registry `feast apply` wrote.",
)
@click.option("--write", is_flag=True, help="Rewrite the bundle's manifest.json (else print it).")
def model_feast(bundle_dir: Path, repo_dir: Path, write: bool) -> None:
    """Point a bundle's store features at a Feast repository's Redis online store: each
    feature's view, the entity's join key and type, the views' TTLs as max ages. Exit 2 if the
    repository cannot be read, 3 if the model's features do not fit it."""
    from streamserve.core.model import manifest_text, read_manifest, write_manifest
    from streamserve.tools.feast_repo import feast_manifest, read_repository

    manifest = exit_on_error(
        lambda: feast_manifest(read_manifest(bundle_dir), read_repository(repo_dir))
    )
    if not write:
        click.echo(manifest_text(manifest), nl=False)
        return
    write_manifest(bundle_dir, manifest)
    assert manifest.store.feast is not None
    views = sorted({f.path.split(":")[0] for f in manifest.store_features if f.path})
    click.echo(
        f"wrote {bundle_dir / 'manifest.json'}: {len(manifest.store_features)} store features "
        f"from {', '.join(views)}, project {manifest.store.feast.project}, join key "
        f"{manifest.store.feast.join_key} ({manifest.store.feast.join_key_type})"
    )


@model.command("schema")
@click.argument("bundle_dir", type=click.Path(path_type=Path))
@click.option(
    "--format",
    "schema_format",
    type=click.Choice(["json-schema", "avro", "protobuf"]),
    default="json-schema",
    show_default=True,
    help="JSON Schema (plain JSON or JSON Schema input), Avro schema or .proto file.",
)
def model_schema(bundle_dir: Path, schema_format: str) -> None:
    """Print the schema of the events a bundle reads, ready to register."""
    from streamserve.core.model import read_manifest
    from streamserve.io.registry import require_format
    from streamserve.tools import event_schemas
    from streamserve.tools.schemas import event_schema, render

    manifest = exit_on_error(lambda: read_manifest(bundle_dir))
    if schema_format == "avro":
        click.echo(json.dumps(event_schemas.avro_event_schema(manifest), indent=2))
    elif schema_format == "protobuf":
        exit_on_error(lambda: require_format("protobuf"))
        click.echo(event_schemas.render_proto(event_schemas.proto_event_file(manifest)), nl=False)
    else:
        click.echo(render(event_schema(manifest)), nl=False)


@main.command()
def topics() -> None:
    """Create the configured input and output topics that do not exist yet."""
    from streamserve.io import kafka as kafka_io

    s = _settings()
    admin = exit_on_error(lambda: kafka_io.make_admin(s))
    created = exit_on_error(
        lambda: kafka_io.ensure_topics(admin, s.topic_names(), s.topic_partitions)
    )
    click.echo(f"created {', '.join(created)}" if created else "all topics exist")


@main.command()
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

    s = _settings(input_topic=input_topic)
    report = exit_on_error(
        lambda: run_audit(
            Cluster.of(s),
            s.input_topic,
            s.predictions_topic,
            s.dead_letter_topic,
            timeout_s,
            schemas=_prediction_schemas(s),
        )
    )
    if as_json:
        click.echo(json.dumps(report.as_dict()))
    else:
        click.echo(report.render())
    if not report.ok:
        sys.exit(1)


@main.command()
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

    s = _settings(group_id=group, input_topic=topic)
    report = exit_on_error(lambda: group_lag(Cluster.of(s), s.group_id, s.input_topic, timeout_s))
    click.echo(json.dumps(report.as_dict()) if as_json else report.render())
    if max_lag is not None and report.total > max_lag:
        sys.exit(1)


@main.group("dead-letters")
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

    s = _settings()
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

    s = _settings()
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


@main.group()
def schemas() -> None:
    """The JSON Schemas of every record on every topic."""


@schemas.command("write")
@click.argument("directory", type=click.Path(path_type=Path), default=Path("schemas"))
@click.option(
    "--model-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write event.schema.json: the events this bundle reads.",
)
def schemas_write(directory: Path, model_dir: Path | None) -> None:
    """Regenerate the schema files from the code's record types."""
    from streamserve.core.model import read_manifest
    from streamserve.tools.schemas import write_schemas

    manifest = exit_on_error(lambda: read_manifest(model_dir)) if model_dir else None
    for path in write_schemas(directory, manifest):
        click.echo(f"wrote {path}")


if __name__ == "__main__":
    main()
