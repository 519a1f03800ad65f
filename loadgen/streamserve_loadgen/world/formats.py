"""Synthetic events in the Schema Registry formats, written the way a producer using Confluent's
clients writes them (confluent-kafka's own serializers, schemas from the bundle's manifest)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from streamserve.core.model import Manifest
from streamserve.tools.event_schemas import avro_event_schema, proto_event_file
from streamserve.tools.schemas import event_schema

Serialize = Callable[[dict[str, Any]], bytes]


def serializer(input_format: str, client: Any, topic: str, manifest: Manifest) -> Serialize:
    """Event dict -> framed bytes; registers the manifest's event schema under `<topic>-value`
    with ``client`` (a confluent-kafka Schema Registry client)."""
    from confluent_kafka.serialization import MessageField, SerializationContext

    context = SerializationContext(topic, MessageField.VALUE)
    if input_format == "avro":
        from confluent_kafka.schema_registry.avro import AvroSerializer

        avro = AvroSerializer(client, json.dumps(avro_event_schema(manifest)))
        return lambda event: avro(event, context)
    if input_format == "json-schema":
        from confluent_kafka.schema_registry.json_schema import JSONSerializer

        schema = json.dumps(event_schema(manifest))
        as_json = JSONSerializer(schema, client, conf={"validate": False})
        return lambda event: as_json(event, context)
    if input_format == "protobuf":
        from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
        from google.protobuf import descriptor_pool, message_factory

        proto = proto_event_file(manifest)
        file = descriptor_pool.DescriptorPool().Add(proto)
        message = message_factory.GetMessageClass(file.message_types_by_name["Event"])
        protobuf = ProtobufSerializer(message, client, {"use.deprecated.format": False})
        return lambda event: protobuf(_fill(message(), event), context)
    raise ValueError(f"no serializer for {input_format}")


def avro_with_unread_array(client: Any, topic: str, manifest: Manifest) -> Serialize:
    """Half the events (alternately) in a second version of the Avro event schema that adds
    an array the model does not read (``tags``, three strings): a producer rolling out a field
    the model has no use for."""
    from confluent_kafka.serialization import MessageField, SerializationContext

    first = serializer("avro", client, topic, manifest)
    schema = avro_event_schema(manifest)
    schema["fields"].append(
        {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []}
    )
    context = SerializationContext(topic, MessageField.VALUE)
    from confluent_kafka.schema_registry.avro import AvroSerializer

    second = AvroSerializer(client, json.dumps(schema))
    count = [0]

    def serialize(event: dict[str, Any]) -> bytes:
        count[0] += 1
        if count[0] % 2:
            return first(event)
        return second({**event, "tags": ["promo", "mobile", f"t{count[0] % 7}"]}, context)

    return serialize


def _fill(message: Any, event: dict[str, Any]) -> Any:
    """Set the fields the message has from ``event`` (nested dicts into nested messages)."""
    for field in message.DESCRIPTOR.fields:
        value = event.get(field.name)
        if value is None:
            continue
        if field.message_type is not None:
            _fill(getattr(message, field.name), value)
        else:
            setattr(message, field.name, value)
    return message


def framed(
    pairs: Iterable[tuple[bytes, bytes]], serialize: Serialize
) -> Iterator[tuple[bytes, bytes]]:
    """The events serialized; one a serializer refuses (malformed JSON, a missing id, a text
    feature) goes out as it came, as a producer without the serializer would send it."""
    for key, value in pairs:
        try:
            yield key, serialize(json.loads(value))
        except Exception:
            yield key, value
