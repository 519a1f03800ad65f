"""Events in the Confluent wire format (Avro, Protobuf, JSON Schema), decoded a batch at a time.

Each record names its writer schema by id; the ids of a batch are resolved in one call to a
``WriterSchemas`` port (the registry adapter, with its cache), then every payload is read with
its writer schema and checked against the manifest's event type, as JSON events are: events of
several schema versions decode to the same columns. Pure: the port does the I/O.
"""

from __future__ import annotations

import base64
import io
import json
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from streamserve.core.avro_reader import compile_reader
from streamserve.core.events import DecodedEvents, EventDecoder, Rejection
from streamserve.core.wire import HEADER, HEADER_BYTES, MAGIC_BYTE, split_message_indexes

InputFormat = Literal["json", "avro", "protobuf", "json-schema"]
REGISTRY_SCHEMA_TYPE = {"avro": "AVRO", "protobuf": "PROTOBUF", "json-schema": "JSON"}


class SchemaParseError(ValueError):
    """A writer schema that cannot be used (the records written with it are dead letters)."""


@dataclass(frozen=True)
class WriterSchema:
    """A registry schema, parsed once: how to read a payload written with it."""

    schema_id: int
    schema_type: str  # AVRO, PROTOBUF or JSON, as the registry names them
    read: Callable[[bytes], Any] | None  # a framed value -> an object; None: the payload is JSON
    avro: Any = None  # the parsed Avro schema, for a reader specialised to a model's fields


class WriterSchemas(Protocol):
    """The registry, as decoding needs it: schema ids -> parsed schemas (None: not found)."""

    def resolve(self, schema_ids: set[int]) -> Mapping[int, WriterSchema | None]: ...


def parse_writer_schema(schema_id: int, schema_type: str, schema_str: str) -> WriterSchema:
    """Parse a schema as the registry returns it; SchemaParseError when it cannot be used."""
    try:
        if schema_type == "AVRO":
            avro = json.loads(schema_str)
            return WriterSchema(schema_id, schema_type, _avro_reader(avro), avro)
        if schema_type == "PROTOBUF":
            return WriterSchema(schema_id, schema_type, _protobuf_reader(schema_str))
        if schema_type == "JSON":
            return WriterSchema(schema_id, schema_type, None)
    except SchemaParseError:
        raise
    except Exception as exc:
        raise SchemaParseError(f"schema {schema_id} ({schema_type}) does not parse: {exc}") from exc
    raise SchemaParseError(f"schema {schema_id} has an unknown type {schema_type}")


def _avro_reader(schema: Any) -> Callable[[bytes], Any]:
    from fastavro import parse_schema

    try:  # fastavro's reader without the schema parse schemaless_reader repeats per call
        from fastavro._read import _read_data  # type: ignore[attr-defined]
    except ImportError:  # pragma: no cover - another fastavro layout: the public reader
        from fastavro import schemaless_reader

        parsed = parse_schema(schema)

        def read_public(value: bytes) -> Any:
            stream = io.BytesIO(value)
            stream.seek(HEADER_BYTES)
            return schemaless_reader(stream, parsed, None)

        return read_public

    named: dict[str, dict[str, Any]] = {"writer": {}, "reader": {}}
    parsed = parse_schema(schema, named["writer"])
    options = {
        "return_record_name": False,
        "return_record_name_override": False,
        "handle_unicode_errors": "strict",
        "return_named_type": False,
        "return_named_type_override": False,
    }

    def read(value: bytes) -> Any:
        stream = io.BytesIO(value)
        stream.seek(HEADER_BYTES)
        return _read_data(stream, parsed, named, None, options)

    return read


def _protobuf_reader(schema_str: str) -> Callable[[bytes], Any]:
    """A schema registered as a serialized FileDescriptorProto (base64), as confluent-kafka's
    ProtobufSerializer registers it and as the registry returns it with ``format=serialized``."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    try:
        proto = descriptor_pb2.FileDescriptorProto.FromString(base64.b64decode(schema_str))
    except Exception as exc:
        raise SchemaParseError(
            "Protobuf schema is not a serialized FileDescriptorProto (ask the registry for "
            f"format=serialized): {exc}"
        ) from exc
    pool = descriptor_pool.DescriptorPool()
    for dependency in proto.dependency:  # well-known types only: google/protobuf/*.proto
        known = descriptor_pool.Default().FindFileByName(dependency)
        dependency_proto = descriptor_pb2.FileDescriptorProto()
        known.CopyToProto(dependency_proto)
        pool.Add(dependency_proto)
    file = pool.Add(proto)
    readers: dict[tuple[int, ...], tuple[Any, Callable[[Any], dict[str, Any]]]] = {}

    def message_type(indexes: tuple[int, ...]) -> tuple[Any, Callable[[Any], dict[str, Any]]]:
        found = readers.get(indexes)
        if found is None:
            descriptor = file.message_types_by_name[proto.message_type[indexes[0]].name]
            for index in indexes[1:]:
                descriptor = descriptor.nested_types[index]
            cls = message_factory.GetMessageClass(descriptor)
            found = readers[indexes] = (cls.FromString, _field_reader(descriptor))
        return found

    first = message_type((0,))

    def read(value: bytes) -> Any:
        if value[HEADER_BYTES] == 0:  # the first message of the file: the usual case
            parse, fields = first
            return fields(parse(memoryview(value)[HEADER_BYTES + 1 :]))
        indexes, body = split_message_indexes(memoryview(value)[HEADER_BYTES:])
        parse, fields = message_type(indexes)
        return fields(parse(body))

    return read


def _field_reader(descriptor: Any) -> Callable[[Any], dict[str, Any]]:
    """A message -> the dict the event decoder reads, compiled once per message type. A field
    with presence (`optional`, a message) that is not set is absent, so a missing feature is
    NaN; an implicit proto3 scalar reads as its value (0 is 0), except an empty string, which
    is absent (a missing id is a missing id)."""
    plan = [
        (
            field.name,
            field.has_presence,
            _field_reader(field.message_type) if field.message_type is not None else None,
        )
        for field in descriptor.fields
        if not field.is_repeated
    ]

    def read(message: Any) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        for name, presence, nested in plan:
            if presence and not message.HasField(name):
                continue
            value = getattr(message, name)
            if nested is not None:
                fields[name] = nested(value)
            elif value != "":
                fields[name] = value
        return fields

    return read


class FramedDecoder:
    """Unwraps the Confluent wire format, then decodes like the JSON path (``EventDecoder``)."""

    def __init__(
        self, events: EventDecoder, input_format: InputFormat, schemas: WriterSchemas
    ) -> None:
        self._events = events
        self._schema_type = REGISTRY_SCHEMA_TYPE[input_format]
        self._schemas = schemas
        self._wanted = events.field_tree()
        self._readers: dict[int, Callable[[bytes], Any]] = {}  # per schema id, for this model

    def _reader(self, schema: WriterSchema) -> Callable[[bytes], Any]:
        """An Avro reader specialised to this model's fields when the schema allows; else the
        schema's own reader (fastavro, protobuf)."""
        found = self._readers.get(schema.schema_id)
        if found is None:
            compiled = None
            if schema.avro is not None:
                compiled = compile_reader(schema.avro, self._wanted, HEADER_BYTES)
            reader = compiled or schema.read
            assert reader is not None, "JSON payloads are not read by a schema reader"
            found = self._readers[schema.schema_id] = reader
        return found

    def decode(self, values: Sequence[bytes | None]) -> tuple[DecodedEvents, list[Rejection]]:
        """Decode a batch; RegistryUnavailable (from the port) when a new schema id cannot be
        fetched: nothing is rejected then, and the batch can be decoded again later."""
        ids: list[int] = []
        rejections: list[Rejection] = []
        unpack = HEADER.unpack_from
        for index, value in enumerate(values):
            try:
                magic, schema_id = unpack(value)  # type: ignore[arg-type]
            except (struct.error, TypeError):
                magic, schema_id = -1, -1
            if magic != MAGIC_BYTE:
                rejections.append(_unframed(index, value))
                schema_id = -1
            ids.append(schema_id)
        schemas = self._schemas.resolve(set(ids) - {-1})
        as_json = self._schema_type == "JSON"
        readable: list[Any] = []
        origin: list[int] = []
        for index, (schema_id, value) in enumerate(zip(ids, values, strict=True)):
            if schema_id < 0:
                continue
            schema = schemas.get(schema_id)
            if schema is None or schema.schema_type != self._schema_type:
                rejections.append(self._unknown(index, schema_id, schema))
            elif as_json:
                readable.append(memoryview(value)[HEADER_BYTES:])  # type: ignore[arg-type]
                origin.append(index)
            else:
                try:
                    readable.append(self._reader(schema)(value))  # type: ignore[arg-type]
                except Exception as exc:  # whatever a reader raises on bad bytes
                    reason = f"does not decode with schema {schema_id}: {exc!r}"[:400]
                    rejections.append(Rejection(index, "undecodable", reason))
                    continue
                origin.append(index)
        return self._events.decode_framed(readable, origin, rejections, objects=not as_json)

    def _unknown(self, index: int, schema_id: int, schema: WriterSchema | None) -> Rejection:
        if schema is None:
            reason = f"schema id {schema_id} is not in the Schema Registry"
        else:
            reason = f"schema id {schema_id} is {schema.schema_type}, not {self._schema_type}"
        return Rejection(index, "unknown_schema", reason)


def _unframed(index: int, value: bytes | None) -> Rejection:
    if not value:
        return Rejection(index, "empty_value", "record value is empty")
    if value[0] != MAGIC_BYTE:
        reason = f"no Schema Registry framing: first byte {value[0]}, expected {MAGIC_BYTE}"
    else:
        reason = f"{len(value)} bytes: too short for the {HEADER_BYTES}-byte framing header"
    return Rejection(index, "not_framed", reason)
