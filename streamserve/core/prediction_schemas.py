"""The prediction record in each registry format, derived from its one declaration,
``records.Prediction``: a JSON Schema, an Avro record and a proto3 message.

Fields keep the declaration's order; a Protobuf field's number is its position, so a new field
goes last. Ids (a string or an integer) are a union in Avro and text in Protobuf; a field that
may be None is a null union (Avro, default null) or an ``optional`` field (Protobuf); an ``Int32``
is Avro's int and Protobuf's int32, other integers are longs.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import inspect

from streamserve.core import records

JSON_SCHEMA_DRAFT = "https://json-schema.org/draft/2020-12/schema"
DOC = "One scored event, keyed by entity id; names the input record it scored."


def json_schema() -> dict[str, Any]:
    """A prediction's value as JSON (the JSON Schema registered for JSON Schema output, too)."""
    version = records.PREDICTION_SCHEMA_VERSION
    return {
        "$id": f"urn:streamserve:schema:prediction:v{version}",
        "$schema": JSON_SCHEMA_DRAFT,
        "title": f"Prediction (schema version {version})",
        "description": (
            "Value of a record on the predictions (and shadow) topic, keyed by entity id; it "
            "names its source record (provenance) and carries no headers. `schema_version` "
            "says which version of this schema a record follows."
        ),
        **msgspec.json.schema(records.Prediction),
    }


def avro_schema() -> dict[str, Any]:
    """A prediction as an Avro record."""
    fields = []
    for field in _fields():
        kind, nullable = _without_none(field.type)
        entry: dict[str, Any] = {"name": field.name, "type": _avro(kind)}
        if nullable:
            entry.update(type=["null", entry["type"]], default=None)
        elif field.default is not msgspec.NODEFAULT:
            entry["default"] = field.default
        fields.append(entry)
    return {
        "type": "record",
        "name": "Prediction",
        "namespace": "streamserve",
        "doc": DOC,
        "fields": fields,
    }


def proto_file() -> Any:
    """A prediction as a proto3 ``FileDescriptorProto`` of one message, `Prediction`."""
    from google.protobuf import descriptor_pb2

    proto = descriptor_pb2.FileDescriptorProto(
        name="streamserve/prediction.proto", package="streamserve", syntax="proto3"
    )
    message = proto.message_type.add(name="Prediction")
    for number, field in enumerate(_fields(), start=1):
        kind, nullable = _without_none(field.type)
        repeated = isinstance(kind, inspect.ListType)
        item = kind.item_type if isinstance(kind, inspect.ListType) else kind
        added = message.field.add(
            name=field.name,
            number=number,
            label=descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
            if repeated
            else descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
            type=_proto(item),
        )
        if nullable and not repeated:  # unknown or unset: explicit presence
            added.proto3_optional = True
            added.oneof_index = len(message.oneof_decl)
            message.oneof_decl.add(name=f"_{field.name}")
    return proto


def _fields() -> tuple[inspect.Field, ...]:
    info = inspect.type_info(records.Prediction)
    assert isinstance(info, inspect.StructType)
    return info.fields


def _without_none(kind: inspect.Type) -> tuple[inspect.Type, bool]:
    """The type without its None branch, and whether it had one."""
    if isinstance(kind, inspect.UnionType) and any(
        isinstance(t, inspect.NoneType) for t in kind.types
    ):
        rest = [t for t in kind.types if not isinstance(t, inspect.NoneType)]
        return (rest[0] if len(rest) == 1 else inspect.UnionType(tuple(rest))), True
    return kind, False


def _is_int32(kind: inspect.Type) -> bool:
    return (
        isinstance(kind, inspect.Metadata) and (kind.extra or {}).get("bits") == 32
    ) or isinstance(kind, inspect.LiteralType)


def _avro(kind: inspect.Type) -> Any:
    if _is_int32(kind):
        return "int"
    if isinstance(kind, inspect.Metadata):
        return _avro(kind.type)
    if isinstance(kind, inspect.UnionType):  # an id: text or a number
        return [_avro(t) for t in kind.types]
    if isinstance(kind, inspect.ListType):
        return {"type": "array", "items": _avro(kind.item_type)}
    return _SCALARS[type(kind)][0]


def _proto(kind: inspect.Type) -> int:
    from google.protobuf.descriptor_pb2 import FieldDescriptorProto as F

    if _is_int32(kind):
        return F.TYPE_INT32
    if isinstance(kind, inspect.Metadata):
        return _proto(kind.type)
    if isinstance(kind, inspect.UnionType):  # an id: written as its text
        return F.TYPE_STRING
    return int(getattr(F, _SCALARS[type(kind)][1]))


_SCALARS: dict[type, tuple[str, str]] = {  # msgspec type -> (Avro type, Protobuf type)
    inspect.StrType: ("string", "TYPE_STRING"),
    inspect.IntType: ("long", "TYPE_INT64"),
    inspect.FloatType: ("double", "TYPE_DOUBLE"),
    inspect.BoolType: ("boolean", "TYPE_BOOL"),
}
