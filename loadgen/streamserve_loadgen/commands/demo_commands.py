"""The harness's demo commands: the demo itself, the embedded stack, the demo model and its
entity features. Registered on `streamserve-loadgen` (cli.py)."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

import click

from streamserve.cli import EXIT_CODES, exit_on_error
from streamserve.config import load_settings
from streamserve.telemetry.logs import setup_logging
from streamserve_loadgen.world.embedded import EmbeddedStackError

HARNESS_EXIT_CODES = [(EmbeddedStackError, 6), *EXIT_CODES]


def run(action: Any) -> Any:
    """A command body whose streamserve errors exit with their code (6: the embedded stack)."""
    return exit_on_error(action, HARNESS_EXIT_CODES)


@click.command("demo")
@click.option("--seconds", type=click.FloatRange(min=1), default=12.0, show_default=True)
@click.option("--start-rate", type=click.FloatRange(min=1), default=2_000, show_default=True)
@click.option("--peak-rate", type=click.FloatRange(min=1), default=20_000, show_default=True)
@click.option("--entities", type=click.IntRange(min=1), default=10_000, show_default=True)
@click.option("--malformed-every", type=click.IntRange(min=0), default=100, show_default=True)
@click.option("--trees", type=click.IntRange(1, 5000), default=200, show_default=True)
def demo(
    seconds: float,
    start_rate: float,
    peak_rate: float,
    entities: int,
    malformed_every: int,
    trees: int,
) -> None:
    """Embedded stack, a worker under a ramp of load, a live view; ends with one JSON line."""
    from rich.console import Console

    from streamserve_loadgen.measure.demo import DemoPlan, run_demo
    from streamserve_loadgen.world.synthetic import World

    setup_logging("WARNING")
    plan = DemoPlan(seconds, start_rate, peak_rate, World(entities, malformed_every, trees))
    result = run(lambda: run_demo(plan, Console(stderr=True)))
    click.echo(json.dumps(result))
    if result["lost"]:
        sys.exit(1)


@click.command("embedded")
def embedded() -> None:
    """Run the embedded broker and Redis until Ctrl-C; prints the variables that point at them."""
    from streamserve_loadgen.world.embedded import start_stack

    stack = run(start_stack)
    for var, value in stack.env().items():
        click.echo(f"export {var}={value}")
    sys.stdout.flush()
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        stack.stop()


@click.command("demo-model")
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--trees", type=click.IntRange(1, 5000), default=300, show_default=True)
@click.option("--version", default="1", show_default=True, help="Version in the manifest.")
@click.option(
    "--layout",
    type=click.Choice(["vector", "hash"]),
    default="vector",
    show_default=True,
    help="Feature store layout in the manifest.",
)
def demo_model(out_dir: Path, trees: int, version: str, layout: str) -> None:
    """Train the synthetic fraud model (30 features) and write a bundle to OUT_DIR."""
    from streamserve_loadgen.world.synthetic import train_demo_model

    manifest = train_demo_model(out_dir, trees=trees, version=version, layout=layout)
    click.echo(
        f"wrote {manifest.name} v{manifest.version} ({len(manifest.features)} features, "
        f"{trees} trees, {layout} layout) to {out_dir}"
    )


@click.command("demo-features")
@click.option(
    "--model-dir",
    type=click.Path(path_type=Path),
    envvar="STREAMSERVE_MODEL_DIR",
    show_envvar=True,
    required=True,
    help="Bundle whose manifest gives keys and layout.",
)
@click.option("--entities", type=click.IntRange(min=1), default=10_000, show_default=True)
@click.option(
    "--skip-every",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="Leave every N-th entity out, to exercise missing features (0: none).",
)
def demo_features(model_dir: Path, entities: int, skip_every: int) -> None:
    """Write synthetic demo features for entities u0..u{N-1} to STREAMSERVE_REDIS_URL, in the
    bundle's layout."""
    from streamserve.core.model import read_manifest
    from streamserve_loadgen.measure.demo import load_entity_features

    settings = run(lambda: load_settings(model_dir=model_dir))
    manifest = run(lambda: read_manifest(model_dir))
    written = run(lambda: load_entity_features(settings, manifest, entities, skip_every))
    click.echo(f"wrote {len(written)} entities ({manifest.store.layout} layout)")


DEMO_COMMANDS = [demo, embedded, demo_model, demo_features]
