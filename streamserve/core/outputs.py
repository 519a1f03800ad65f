"""Prediction values in the Confluent wire format (the header, then Avro or JSON), for
STREAMSERVE_OUTPUT_FORMAT; the schema id comes from the registry at start-up."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import msgspec

from streamserve.core import records as rec
from streamserve.core.decoding.wire import HEADER

EncodePrediction = Callable[[rec.Prediction], bytes]


def framed_json(schema_id: int) -> EncodePrediction:
    """JSON Schema output: the header, then the same JSON as plain JSON output."""
    header, encode = HEADER.pack(0, schema_id), msgspec.json.Encoder().encode

    def write(prediction: rec.Prediction) -> bytes:
        return header + encode(prediction)

    return write


def framed_avro(schema_id: int, schema: dict[str, Any]) -> EncodePrediction:
    """Avro output: the header, then the prediction written with ``schema``."""
    from fastavro import parse_schema, schemaless_writer

    header, parsed, fields = HEADER.pack(0, schema_id), parse_schema(schema), msgspec.structs.asdict

    def write(prediction: rec.Prediction) -> bytes:
        out = io.BytesIO()
        out.write(header)
        schemaless_writer(out, parsed, fields(prediction))
        return out.getvalue()

    return write


def framed_protobuf(schema_id: int, message_class: Any) -> EncodePrediction:
    """Protobuf output: the header, the message index (0: the file's first message), then the
    prediction as ``message_class`` (``prediction_schemas.proto_file``'s; ids as text)."""
    header, fields = HEADER.pack(0, schema_id) + b"\x00", msgspec.structs.asdict

    def write(p: rec.Prediction) -> bytes:
        values = fields(p)
        values["event_id"], values["entity_id"] = str(p.event_id), str(p.entity_id)
        message = message_class(**values)
        return header + message.SerializeToString()

    return write
