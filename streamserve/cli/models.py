"""`streamserve model check|feast|schema` and `streamserve schemas write`: bundles and the
record schemas."""

from __future__ import annotations

import json
from pathlib import Path

import click

from streamserve.cli.common import exit_on_error

__all__ = ["model", "schemas"]


@click.group()
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


@click.group()
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
