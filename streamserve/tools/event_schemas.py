"""The event a bundle reads, as an Avro schema, a Protobuf file or a JSON Schema, ready to
register (`streamserve model schema DIR --format ...`).

Ids are strings; every feature is optional (Avro: a null union with a null default; Protobuf:
`optional`, so an absent feature reads as missing rather than 0), and dotted field paths become
nested records or messages. Producers may write more fields: the worker reads these only.
"""

from __future__ import annotations

import re
from typing import Any

from streamserve.core.decoding.events import feature_path_tree
from streamserve.core.model import Manifest

Tree = dict[str, "Tree | None"]  # a field path tree: leaf features map to None


def _type_name(name: str) -> str:
    """A record or message name from a field name: merchant_info -> MerchantInfo."""
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^0-9A-Za-z]+", name) if part)


def avro_event_schema(manifest: Manifest) -> dict[str, Any]:
    def record(name: str, tree: Tree) -> dict[str, Any]:
        fields = []
        for field, child in tree.items():
            inner: Any = "double" if child is None else record(_type_name(field), child)
            fields.append({"name": field, "type": ["null", inner], "default": None})
        return {"type": "record", "name": name, "fields": fields}

    event = record("Event", feature_path_tree(manifest))
    ids = [
        {"name": manifest.event.id_field, "type": "string"},
        {"name": manifest.event.entity_field, "type": "string"},
    ]
    return {
        **event,
        "namespace": _namespace(manifest),
        "doc": f"Events scored by {manifest.name}",
        "fields": ids + event["fields"],
    }


def proto_event_file(manifest: Manifest) -> Any:
    """A proto3 ``FileDescriptorProto`` of one top-level message, `Event` (needs protobuf)."""
    from google.protobuf import descriptor_pb2

    field_type = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name=f"{_namespace(manifest).replace('.', '/')}/event.proto",
        package=_namespace(manifest),
        syntax="proto3",
    )

    def add_optional(message: Any, name: str, kind: int, type_name: str = "") -> None:
        field = message.field.add(
            name=name,
            number=len(message.field) + 1,
            type=kind,
            label=field_type.LABEL_OPTIONAL,
            proto3_optional=True,
            oneof_index=len(message.oneof_decl),
        )
        if type_name:
            field.type_name = type_name
        message.oneof_decl.add(name=f"_{field.name}")  # proto3 `optional` is a synthetic oneof

    def fill(message: Any, tree: Tree, scope: str) -> None:
        for name, child in tree.items():
            if child is None:
                add_optional(message, name, field_type.TYPE_DOUBLE)
            else:
                nested = message.nested_type.add(name=_type_name(name))
                fill(nested, child, f"{scope}.{nested.name}")
                add_optional(message, name, field_type.TYPE_MESSAGE, f"{scope}.{nested.name}")

    event = proto.message_type.add(name="Event")
    for name in (manifest.event.id_field, manifest.event.entity_field):
        event.field.add(
            name=name,
            number=len(event.field) + 1,
            type=field_type.TYPE_STRING,
            label=field_type.LABEL_OPTIONAL,
        )
    fill(event, feature_path_tree(manifest), f".{proto.package}.Event")
    return proto


def render_proto(proto: Any) -> str:
    """The .proto text of a FileDescriptorProto built by ``proto_event_file``."""
    from google.protobuf import descriptor_pb2

    field_type = descriptor_pb2.FieldDescriptorProto

    def message(descriptor: Any, indent: str) -> list[str]:
        lines = [f"{indent}message {descriptor.name} {{"]
        for nested in descriptor.nested_type:
            lines += message(nested, indent + "  ")
        for field in descriptor.field:
            kind = {field_type.TYPE_DOUBLE: "double", field_type.TYPE_STRING: "string"}.get(
                field.type, field.type_name.rsplit(".", 1)[-1]
            )
            optional = "optional " if field.proto3_optional else ""
            lines.append(f"{indent}  {optional}{kind} {field.name} = {field.number};")
        return [*lines, f"{indent}}}"]

    lines = [f'syntax = "{proto.syntax}";', "", f"package {proto.package};", ""]
    for descriptor in proto.message_type:
        lines += message(descriptor, "")
    return "\n".join(lines) + "\n"


def _namespace(manifest: Manifest) -> str:
    return "streamserve." + re.sub(r"[^0-9A-Za-z_]", "_", manifest.name)
