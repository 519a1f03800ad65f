"""Events in the Schema Registry formats, written by confluent-kafka's own serializers: what a
producer using Confluent's clients puts on a topic. Shared by the unit and integration tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from confluent_kafka.serialization import MessageField, SerializationContext

from streamserve_loadgen.world.formats import serializer
from streamserve_loadgen.world.synthetic import demo_manifest


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


def serializers(client: Any, topic: str) -> dict[str, Callable[[dict[str, Any]], bytes]]:
    """confluent-kafka's own serializers, one per format, registering the demo bundle's event
    schemas (`streamserve model schema --format ...`) with ``client``."""
    return {
        input_format: serializer(input_format, client, topic, demo_manifest())
        for input_format in ("avro", "protobuf", "json-schema")
    }
