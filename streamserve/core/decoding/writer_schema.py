"""Writer schemas from a Schema Registry, parsed once: Avro through fastavro, Protobuf through
the protobuf library (its imports from the schema's references), JSON Schema as JSON; each with
the factory of batch readers specialised to a model's fields (``avro_reader``,
``protobuf_reader``). Pure: the registry adapter fetches the schema text."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from streamserve.core.decoding.avro_reader import compile_avro_reader
from streamserve.core.decoding.column_reader import BatchReader, Wanted
from streamserve.core.decoding.protobuf_reader import compile_protobuf_reader
from streamserve.core.decoding.wire import HEADER_BYTES, split_message_indexes


class SchemaParseError(ValueError):
    """A writer schema that cannot be used (the records written with it are dead letters)."""


@dataclass(frozen=True)
class WriterSchema:
    """A registry schema, parsed once: how to read a payload written with it."""

    schema_id: int
    schema_type: str  # AVRO, PROTOBUF or JSON, as the registry names them
    read: Callable[[bytes], Any] | None  # a framed value -> an object; None: the payload is JSON
    # (a model's fields, a sample record) -> a batch reader specialised to them (None: the
    # schema needs ``read``); ValueError or LookupError when the sample cannot be read
    columns: Callable[[Wanted, bytes], BatchReader | None] | None = None


def parse_writer_schema(
    schema_id: int,
    schema_type: str,
    schema_str: str,
    references: Mapping[str, str] | None = None,
) -> WriterSchema:
    """Parse a schema as the registry returns it, with the schemas it references by reference
    name (Avro named types, Protobuf imports), each after those it references in turn;
    SchemaParseError when it cannot be used."""
    references = references or {}
    try:
        if schema_type == "AVRO":
            avro = json.loads(schema_str)
            named = _avro_named_types(references)

            def avro_columns(wanted: Wanted, sample: bytes) -> BatchReader | None:
                return compile_avro_reader(avro, wanted, HEADER_BYTES, named)

            return WriterSchema(schema_id, schema_type, _avro_reader(avro, named), avro_columns)
        if schema_type == "PROTOBUF":
            return WriterSchema(schema_id, schema_type, *_protobuf_reader(schema_str, references))
        if schema_type == "JSON":
            return WriterSchema(schema_id, schema_type, None)
    except SchemaParseError:
        raise
    except Exception as exc:
        raise SchemaParseError(f"schema {schema_id} ({schema_type}) does not parse: {exc}") from exc
    raise SchemaParseError(f"schema {schema_id} has an unknown type {schema_type}")


def _avro_named_types(references: Mapping[str, str]) -> dict[str, Any]:
    """Named types from referenced schemas, by their reference name and their full name, in
    the references' order (each after those it references)."""
    named: dict[str, Any] = {}
    for name, text in references.items():
        schema = json.loads(text)
        named[name] = schema
        if isinstance(schema, dict) and "name" in schema:
            namespace, short = schema.get("namespace"), schema["name"]
            named[f"{namespace}.{short}" if namespace and "." not in short else short] = schema
    return named


def _avro_reader(schema: Any, named_types: Mapping[str, Any]) -> Callable[[bytes], Any]:
    """fastavro's reader of a framed value, logical types read as their underlying type, as
    the batch readers read them (a timestamp-millis is its long: a model reads numbers)."""
    from fastavro import parse_schema

    schema = _without_logical_types(schema)
    writer_named: dict[str, Any] = {}  # fastavro's parsed named types, filled by parse_schema
    for type_schema in {id(t): t for t in named_types.values()}.values():  # each type once
        parse_schema(_without_logical_types(type_schema), writer_named)
    try:  # fastavro's reader without the schema parse schemaless_reader repeats per call
        from fastavro._read import _read_data  # type: ignore[attr-defined]
    except ImportError:  # pragma: no cover - another fastavro layout: the public reader
        from fastavro import schemaless_reader

        parsed = parse_schema(schema, writer_named)

        def read_public(value: bytes) -> Any:
            stream = io.BytesIO(value)
            stream.seek(HEADER_BYTES)
            return schemaless_reader(stream, parsed, None)

        return read_public

    named: dict[str, dict[str, Any]] = {"writer": writer_named, "reader": {}}
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


def _without_logical_types(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_without_logical_types(item) for item in schema]
    if isinstance(schema, dict):
        return {k: _without_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    return schema


def _protobuf_reader(
    schema_str: str, references: Mapping[str, str]
) -> tuple[Callable[[bytes], Any], Callable[[Wanted, bytes], BatchReader | None]]:
    """A schema registered as a serialized FileDescriptorProto (base64), as confluent-kafka's
    ProtobufSerializer registers it and as the registry returns it with ``format=serialized``,
    its imports from ``references`` (by file name) or Google's well-known types: (the reader of
    a framed value, the factory of batch readers)."""
    from google.protobuf import descriptor_pool, message_factory

    proto = _file_descriptor(schema_str)
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(file_proto: Any) -> Any:
        for dependency in file_proto.dependency:
            if dependency in added:
                continue
            if dependency in references:
                add(_file_descriptor(references[dependency], dependency))
            else:
                add(_well_known_file(dependency))
        added.add(file_proto.name)
        return pool.Add(file_proto)

    file = add(proto)
    readers: dict[tuple[int, ...], tuple[Any, Callable[[Any], dict[str, Any]]]] = {}

    def descriptor_at(indexes: tuple[int, ...]) -> Any:
        descriptor = file.message_types_by_name[proto.message_type[indexes[0]].name]
        for index in indexes[1:]:
            descriptor = descriptor.nested_types[index]
        return descriptor

    def message_type(indexes: tuple[int, ...]) -> tuple[Any, Callable[[Any], dict[str, Any]]]:
        found = readers.get(indexes)
        if found is None:
            descriptor = descriptor_at(indexes)
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

    def columns(wanted: Wanted, sample: bytes) -> BatchReader | None:
        """A batch reader of the message type ``sample`` (a batch's first record) is of."""
        indexes, body = split_message_indexes(memoryview(sample)[HEADER_BYTES:])
        index_list = bytes(sample[HEADER_BYTES : len(sample) - len(body)])
        return compile_protobuf_reader(descriptor_at(indexes), wanted, HEADER_BYTES, index_list)

    return read, columns


def _file_descriptor(schema_str: str, name: str = "") -> Any:
    from google.protobuf import descriptor_pb2

    try:
        proto = descriptor_pb2.FileDescriptorProto.FromString(base64.b64decode(schema_str))
    except Exception as exc:
        raise SchemaParseError(
            f"Protobuf schema {name} is not a serialized FileDescriptorProto (ask the registry "
            f"for format=serialized): {exc}"
        ) from exc
    if name:
        proto.name = name  # imports name the file as the reference does
    return proto


def _well_known_file(name: str) -> Any:
    from google.protobuf import descriptor_pb2, descriptor_pool

    try:
        known = descriptor_pool.Default().FindFileByName(name)
    except KeyError:
        raise SchemaParseError(
            f"the schema imports {name}, which is neither among its references nor one of "
            "Google's well-known types"
        ) from None
    proto = descriptor_pb2.FileDescriptorProto()
    known.CopyToProto(proto)
    return proto


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
