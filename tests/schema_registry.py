"""Events in the Schema Registry formats, written by confluent-kafka's own serializers: what a
producer using Confluent's clients puts on a topic. Shared by the unit and integration tests."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

import msgspec
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory


def context(topic: str) -> SerializationContext:
    return SerializationContext(topic, MessageField.VALUE)


def avro_schema(amount: str = "double", extra_field: bool = False, mcc: bool = True) -> str:
    """The demo event in Avro; nullable features, so a missing one can be written as null."""
    merchant_fields = [{"name": "risk", "type": ["null", "double"], "default": None}]
    if mcc:
        merchant_fields.append({"name": "mcc", "type": "string", "default": ""})
    fields: list[dict[str, Any]] = [
        {"name": "event_id", "type": "string"},
        {"name": "entity_id", "type": ["null", "string"], "default": None},
        {"name": "amount", "type": ["null", amount], "default": None},
        {"name": "hour_of_day", "type": ["null", "int"], "default": None},
        {
            "name": "merchant",
            "type": ["null", {"type": "record", "name": "Merchant", "fields": merchant_fields}],
            "default": None,
        },
        {"name": "is_foreign", "type": ["null", "int"], "default": None},
        {"name": "device_age_days", "type": ["null", "int"], "default": None},
        {"name": "distance_km", "type": ["null", "double"], "default": None},
    ]
    if extra_field:
        fields.append({"name": "channel", "type": "string", "default": "web"})
    return json.dumps(
        {"type": "record", "name": "Transaction", "namespace": "demo", "fields": fields}
    )


@functools.cache
def transaction_class() -> Any:
    """A Protobuf message class of the demo event, built without protoc. Features are
    `optional` (explicit presence), so a missing one reads as missing, not as 0."""
    proto = descriptor_pb2.FileDescriptorProto(
        name="streamserve_test_transaction.proto", package="demo", syntax="proto3"
    )
    merchant = proto.message_type.add(name="Merchant")
    transaction = proto.message_type.add(name="Transaction")
    double, int64, string = (
        descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE,
        descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
        descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
    )
    optional = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
    fields: list[tuple[Any, str, int, bool]] = [
        (merchant, "risk", double, True),
        (merchant, "mcc", string, False),
        (transaction, "event_id", string, False),
        (transaction, "entity_id", string, True),
        (transaction, "amount", double, True),
        (transaction, "hour_of_day", int64, True),
        (transaction, "is_foreign", int64, True),
        (transaction, "device_age_days", int64, True),
        (transaction, "distance_km", double, True),
    ]
    oneofs: dict[str, int] = {}
    for message, name, kind, present in fields:
        field = message.field.add(
            name=name, number=len(message.field) + 1, type=kind, label=optional
        )
        if present:  # proto3 `optional`: a synthetic oneof per field
            oneofs[f"{message.name}.{name}"] = len(message.oneof_decl)
            message.oneof_decl.add(name=f"_{name}")
            field.oneof_index = oneofs[f"{message.name}.{name}"]
            field.proto3_optional = True
    transaction.field.add(
        name="merchant",
        number=len(transaction.field) + 1,
        label=optional,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
        type_name=".demo.Merchant",
    )
    file = descriptor_pool.Default().Add(proto)
    return message_factory.GetMessageClass(file.message_types_by_name["Transaction"])


def serializers(client: Any, topic: str) -> dict[str, Callable[[dict[str, Any]], bytes]]:
    """confluent-kafka's own serializers, one per format, registering with ``client``."""
    avro = AvroSerializer(client, avro_schema())
    json_schema = JSONSerializer(
        json.dumps(msgspec.json.schema(dict[str, Any])), client, conf={"validate": False}
    )
    message = transaction_class()
    protobuf = ProtobufSerializer(message, client, {"use.deprecated.format": False})

    def as_message(event: dict[str, Any]) -> Any:
        fields = {k: v for k, v in event.items() if v is not None and k != "merchant"}
        built = message(**fields)
        if event.get("merchant") is not None:
            merchant = {k: v for k, v in event["merchant"].items() if v is not None}
            built.merchant.CopyFrom(type(built.merchant)(**merchant))
        return built

    return {
        "avro": lambda e: avro(e, context(topic)),
        "json-schema": lambda e: json_schema(e, context(topic)),
        "protobuf": lambda e: protobuf(as_message(e), context(topic)),
    }
