"""JSON Schemas of every record on every topic, generated from the code's record types.

``schemas/`` holds the generated files (the public contract); a test regenerates them and fails
if they differ, so the files and the code cannot drift apart. Regenerate with
``streamserve schemas write schemas --model-dir BUNDLE`` (the demo bundle's event schema is the
one in ``schemas/``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec

from streamserve.core import prediction_schemas, records
from streamserve.core.decoding.events import build_event_type
from streamserve.core.model import Manifest


def _schema(title: str, description: str, type_: Any) -> dict[str, Any]:
    return {
        "$schema": prediction_schemas.JSON_SCHEMA_DRAFT,
        "title": title,
        "description": description,
        **msgspec.json.schema(type_),
    }


def event_schema(manifest: Manifest) -> dict[str, Any]:
    """The input event a bundle's manifest reads (other fields are allowed and ignored)."""
    return _schema(
        f"Event ({manifest.name})",
        f"Input event on the events topic, as model {manifest.name} reads it: field names come "
        "from its manifest (`streamserve model schema DIR` prints any bundle's).",
        build_event_type(manifest),
    )


def all_schemas(manifest: Manifest | None = None) -> dict[str, dict[str, Any]]:
    """File name -> schema, for every record type on every topic; the event's only with the
    ``manifest`` of the bundle that reads it."""
    events = {"event.schema.json": event_schema(manifest)} if manifest else {}
    return {
        **events,
        "prediction.schema.json": prediction_schemas.json_schema(),
        # Avro output's schema; its field order is also Protobuf output's field numbers
        "prediction.avsc": prediction_schemas.avro_schema(),
        "dead-letter-headers.schema.json": _schema(
            "Dead-letter headers",
            "Kafka headers streamserve adds to a dead letter (UTF-8 strings); the record's key, "
            "value and original headers are the input record's, untouched.",
            records.DeadLetterHeaders,
        ),
        "metrics.schema.json": _schema(
            "Metrics record",
            "Value of a record on the metrics topic: one worker, one interval.",
            records.MetricsRecord,
        ),
    }


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_schemas(directory: Path, manifest: Manifest | None = None) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in all_schemas(manifest).items():
        path = directory / name
        path.write_text(render(schema))
        written.append(path)
    return written
