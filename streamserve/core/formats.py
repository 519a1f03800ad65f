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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from streamserve.core.events import DecodedEvents, EventDecoder, Rejection
from streamserve.core.records import ErrorClass
from streamserve.core.wire import FrameError, split_frame, split_message_indexes

InputFormat = Literal["json", "avro", "protobuf", "json-schema"]
REGISTRY_SCHEMA_TYPE = {"avro": "AVRO", "protobuf": "PROTOBUF", "json-schema": "JSON"}


class SchemaParseError(ValueError):
    """A writer schema that cannot be used (the records written with it are dead letters)."""


@dataclass(frozen=True)
class WriterSchema:
    """A registry schema, parsed once: how to read a payload written with it."""

    schema_id: int
    schema_type: str  # AVRO, PROTOBUF or JSON, as the registry names them
    read: Callable[[memoryview], Any] | None  # None: the payload is JSON text


class WriterSchemas(Protocol):
    """The registry, as decoding needs it: schema ids -> parsed schemas (None: not found)."""

    def resolve(self, schema_ids: set[int]) -> Mapping[int, WriterSchema | None]: ...


def parse_writer_schema(schema_id: int, schema_type: str, schema_str: str) -> WriterSchema:
    """Parse a schema as the registry returns it; SchemaParseError when it cannot be used."""
    try:
        if schema_type == "AVRO":
            return WriterSchema(schema_id, schema_type, _avro_reader(schema_str))
        if schema_type == "PROTOBUF":
            return WriterSchema(schema_id, schema_type, _protobuf_reader(schema_str))
        if schema_type == "JSON":
            return WriterSchema(schema_id, schema_type, None)
    except SchemaParseError:
        raise
    except Exception as exc:
        raise SchemaParseError(f"schema {schema_id} ({schema_type}) does not parse: {exc}") from exc
    raise SchemaParseError(f"schema {schema_id} has an unknown type {schema_type}")


def _avro_reader(schema_str: str) -> Callable[[memoryview], Any]:
    from fastavro import parse_schema, schemaless_reader

    parsed = parse_schema(json.loads(schema_str))

    def read(payload: memoryview) -> Any:
        return schemaless_reader(io.BytesIO(payload), parsed, None)

    return read


def _protobuf_reader(schema_str: str) -> Callable[[memoryview], Any]:
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
    classes: dict[tuple[int, ...], Any] = {}

    def message_class(indexes: tuple[int, ...]) -> Any:
        found = classes.get(indexes)
        if found is None:
            descriptor = file.message_types_by_name[proto.message_type[indexes[0]].name]
            for index in indexes[1:]:
                descriptor = descriptor.nested_types[index]
            found = classes[indexes] = message_factory.GetMessageClass(descriptor)
        return found

    def read(payload: memoryview) -> Any:
        indexes, body = split_message_indexes(payload)
        return _message_fields(message_class(indexes).FromString(bytes(body)))

    return read


def _message_fields(message: Any) -> dict[str, Any]:
    """A message as the event decoder reads it: fields that are not set are absent (so a
    missing feature is NaN and a missing id is missing), nested messages become dicts."""
    fields: dict[str, Any] = {}
    for descriptor, value in message.ListFields():
        if descriptor.message_type is not None and not descriptor.is_repeated:
            fields[descriptor.name] = _message_fields(value)
        else:
            fields[descriptor.name] = value
    return fields


class FramedDecoder:
    """Unwraps the Confluent wire format, then decodes like the JSON path (``EventDecoder``)."""

    def __init__(
        self, events: EventDecoder, input_format: InputFormat, schemas: WriterSchemas
    ) -> None:
        self._events = events
        self._schema_type = REGISTRY_SCHEMA_TYPE[input_format]
        self._schemas = schemas

    def decode(self, values: Sequence[bytes | None]) -> tuple[DecodedEvents, list[Rejection]]:
        """Decode a batch; RegistryUnavailable (from the port) when a new schema id cannot be
        fetched: nothing is rejected then, and the batch can be decoded again later."""
        frames: list[tuple[int, int, memoryview]] = []
        rejections: list[Rejection] = []
        for index, value in enumerate(values):
            try:
                schema_id, payload = split_frame(value)
            except FrameError as exc:
                kind: ErrorClass = "empty_value" if not value else "not_framed"
                rejections.append(Rejection(index, kind, str(exc)))
                continue
            frames.append((index, schema_id, payload))
        schemas = self._schemas.resolve({schema_id for _, schema_id, _ in frames})
        as_json = self._schema_type == "JSON"
        readable: list[Any] = []
        origin: list[int] = []
        for index, schema_id, payload in frames:
            schema = schemas.get(schema_id)
            if schema is None:
                reason = f"schema id {schema_id} is not in the Schema Registry"
                rejections.append(Rejection(index, "unknown_schema", reason))
            elif schema.schema_type != self._schema_type:
                reason = f"schema id {schema_id} is {schema.schema_type}, not {self._schema_type}"
                rejections.append(Rejection(index, "unknown_schema", reason))
            elif as_json:
                readable.append(payload)
                origin.append(index)
            else:
                try:
                    readable.append(schema.read(payload))  # type: ignore[misc]
                except Exception as exc:  # whatever a reader raises on bad bytes
                    reason = f"does not decode with schema {schema_id}: {exc!r}"[:400]
                    rejections.append(Rejection(index, "undecodable", reason))
                    continue
                origin.append(index)
        return self._events.decode_framed(readable, origin, rejections, objects=not as_json)
