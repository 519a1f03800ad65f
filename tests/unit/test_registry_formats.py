"""Avro, Protobuf and JSON Schema events, serialized by confluent-kafka's own serializers against
its in-process mock Schema Registry, through the real pipeline: they score exactly as the same
events in JSON, and every kind of bad input is a dead letter with its own class and reason."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import fastavro
import msgspec
import numpy as np
import pytest
from confluent_kafka.schema_registry import Schema, SchemaReference
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONDeserializer
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer, ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import FieldDescriptor

from streamserve.config import load_settings
from streamserve.core import outputs, prediction_schemas
from streamserve.core import records as rec
from streamserve.core.batch import BatchScorer
from streamserve.core.decoding.formats import InputFormat
from streamserve.core.decoding.wire import HEADER
from streamserve.core.model import ModelBundle
from streamserve.errors import ConfigError, RegistryUnavailable
from streamserve.io.registry import RegistrySchemas, prediction_schema_id, registry_client
from streamserve.runtime.startup import prediction_encoder
from streamserve.tools.audit import provenance
from streamserve_loadgen.world import synthetic
from tests.conftest import is_scorable, offline_scores
from tests.schema_registry import avro_schema, serializers
from tests.unit.fakes import FakeProducer, MemoryStore, Record, pipeline

TYPE_DOUBLE, TYPE_STRING, TYPE_MESSAGE = (
    FieldDescriptor.TYPE_DOUBLE,
    FieldDescriptor.TYPE_STRING,
    FieldDescriptor.TYPE_MESSAGE,
)
LABEL_OPTIONAL = FieldDescriptor.LABEL_OPTIONAL
TOPIC = "events"
CONTEXT = SerializationContext(TOPIC, MessageField.VALUE)


@pytest.fixture
def client() -> Any:
    return registry_client({"url": f"mock://{uuid.uuid4().hex}"})


@pytest.fixture
def events() -> list[dict[str, Any]]:
    values = [v for _, v in synthetic.generate_events(300, 40, malformed_every=0)]
    decoded = [json.loads(v) for v in values]
    decoded[5]["amount"] = None  # a missing feature
    decoded[6]["merchant"] = None  # a missing parent object
    return decoded


@pytest.fixture
def world() -> tuple[MemoryStore, dict[str, np.ndarray]]:
    table = synthetic.entity_features(40)
    by_entity = {synthetic.entity_id(i): table[i] for i in range(40) if i % 3}
    return MemoryStore({f"feat:{e}": r for e, r in by_entity.items()}, table.shape[1]), by_entity


def scored(
    bundle: ModelBundle,
    store: MemoryStore,
    values: Sequence[bytes | None],
    scorer: BatchScorer | None = None,
) -> tuple[dict[str, float], list[Any]]:
    """(event id -> score, dead letters) of one batch through the pipeline."""
    producer = FakeProducer(auto_ack=False)
    records = [Record(v, offset) for offset, v in enumerate(values)]
    pipeline(bundle, store, producer, scorer=scorer).run(records)
    scores, dead = {}, []
    for out in producer.pending:
        if out.topic == "predictions":
            prediction = msgspec.json.decode(out.value or b"", type=rec.Prediction)
            scores[str(prediction.event_id)] = prediction.score
        else:
            dead.append(out)
    return scores, dead


def registry_scorer(bundle: ModelBundle, client: Any, input_format: InputFormat) -> BatchScorer:
    return BatchScorer(bundle, input_format, RegistrySchemas(client, input_format))


@pytest.mark.parametrize("input_format", ["avro", "protobuf", "json-schema"])
def test_registry_events_score_like_json_and_offline_predict(
    bundle: ModelBundle,
    bundle_dir: Path,
    client: Any,
    events: list,
    world: Any,
    input_format: InputFormat,
) -> None:
    store, by_entity = world
    as_json = [json.dumps(e).encode() for e in events]
    from_json, _ = scored(bundle, store, as_json)
    framed = [serializers(client, TOPIC)[input_format](e) for e in events]
    assert all(v[0] == 0 for v in framed)  # the Confluent framing
    got, dead = scored(bundle, store, framed, registry_scorer(bundle, client, input_format))
    assert not dead
    assert got.keys() == from_json.keys() and len(got) == len(events)
    np.testing.assert_array_equal([got[k] for k in from_json], list(from_json.values()))
    expected = offline_scores(bundle_dir, [v for v in as_json if is_scorable(v)], by_entity)
    np.testing.assert_allclose([got[k] for k in expected], list(expected.values()), rtol=1e-6)


def test_avro_schema_versions_on_one_topic_decode_to_the_same_columns(
    bundle: ModelBundle, client: Any, events: list, world: Any
) -> None:
    store, _ = world
    v1 = AvroSerializer(client, avro_schema())
    # v2 adds a field with a default and drops one the model does not read (merchant.mcc)
    v2 = AvroSerializer(client, avro_schema(extra_field=True, mcc=False))
    evolved = [{**e, "channel": "app"} for e in events]
    for e in evolved:
        if e["merchant"] is not None:
            e["merchant"] = {"risk": e["merchant"]["risk"]}
    mixed = [
        v1(e, CONTEXT) if i % 2 else v2(f, CONTEXT)
        for i, (e, f) in enumerate(zip(events, evolved, strict=True))
    ]
    assert len({int.from_bytes(v[1:5], "big") for v in mixed}) == 2  # two writer schemas
    got, dead = scored(bundle, store, mixed, registry_scorer(bundle, client, "avro"))
    one_version, _ = scored(
        bundle, store, [v1(e, CONTEXT) for e in events], registry_scorer(bundle, client, "avro")
    )
    assert not dead and got == one_version


def test_schemas_that_reference_other_schemas_score_like_json(
    bundle: ModelBundle, client: Any, events: list, world: Any
) -> None:
    """A Protobuf event importing its Merchant message from another file, and an Avro event
    whose Merchant record is a named type registered under a subject of its own: both are
    registered with references, as confluent-kafka's serializers do, and score like JSON."""
    store, _ = world
    from_json, _ = scored(bundle, store, [json.dumps(e).encode() for e in events])

    merchant = descriptor_pb2.FileDescriptorProto(name="demo/merchant.proto", package="demo")
    merchant.message_type.add(name="Merchant").field.add(
        name="risk", number=1, type=TYPE_DOUBLE, label=LABEL_OPTIONAL
    )
    event = descriptor_pb2.FileDescriptorProto(
        name="demo/event.proto", package="demo", dependency=["demo/merchant.proto"]
    )
    message = event.message_type.add(name="Event")
    message.field.add(name="event_id", number=1, type=TYPE_STRING, label=LABEL_OPTIONAL)
    message.field.add(name="entity_id", number=2, type=TYPE_STRING, label=LABEL_OPTIONAL)
    message.field.add(
        name="merchant",
        number=3,
        type=TYPE_MESSAGE,
        type_name=".demo.Merchant",
        label=LABEL_OPTIONAL,
    )
    for number, name in enumerate(["amount", "hour_of_day", "is_foreign"], start=4):
        message.field.add(name=name, number=number, type=TYPE_DOUBLE, label=LABEL_OPTIONAL)
    for number, name in enumerate(["device_age_days", "distance_km"], start=7):
        message.field.add(name=name, number=number, type=TYPE_DOUBLE, label=LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(merchant)
    event_class = message_factory.GetMessageClass(pool.Add(event).message_types_by_name["Event"])
    protobuf = ProtobufSerializer(event_class, client, {"use.deprecated.format": False})
    framed = [protobuf(fill(event_class(), e), CONTEXT) for e in events]
    got, dead = scored(bundle, store, framed, registry_scorer(bundle, client, "protobuf"))
    assert not dead and got == from_json
    assert "demo/merchant.proto" in client.get_subjects()  # registered as a reference

    avro_merchant = {
        "type": "record",
        "name": "Merchant",
        "namespace": "demo",
        "fields": [
            {"name": "risk", "type": ["null", "double"], "default": None},
        ],
    }
    client.register_schema("demo.Merchant", Schema(json.dumps(avro_merchant), "AVRO"))
    evented = json.loads(avro_schema(mcc=False))
    evented["fields"][4]["type"] = ["null", "demo.Merchant"]
    reference = SchemaReference("demo.Merchant", "demo.Merchant", 1)
    avro = AvroSerializer(client, Schema(json.dumps(evented), "AVRO", [reference]))
    plain = [{**e, "merchant": e["merchant"] and {"risk": e["merchant"]["risk"]}} for e in events]
    framed = [avro(e, CONTEXT) for e in plain]
    got, dead = scored(bundle, store, framed, registry_scorer(bundle, client, "avro"))
    assert not dead and got == from_json


def fill(message: Any, event: dict[str, Any]) -> Any:
    """A message with the event's fields set (nested dicts into nested messages)."""
    for name, value in event.items():
        if value is None or name not in message.DESCRIPTOR.fields_by_name:
            continue
        if isinstance(value, dict):
            fill(getattr(message, name), value)
        else:
            setattr(message, name, value)
    return message


def test_every_bad_avro_input_is_a_dead_letter_with_its_class(
    bundle: ModelBundle, client: Any, events: list, world: Any
) -> None:
    store, _ = world
    good = AvroSerializer(client, avro_schema())
    text_amount = AvroSerializer(client, avro_schema(amount="string"))
    valid = good(events[0], CONTEXT)
    bad: dict[str, bytes | None] = {
        "not_framed": json.dumps(events[1]).encode(),
        "unknown_schema": b"\x00" + (4242).to_bytes(4, "big") + valid[5:],
        "undecodable": valid[:9],
        "missing_entity_id": good({**events[2], "entity_id": None}, CONTEXT),
        "invalid_feature": text_amount({**events[3], "amount": "twelve"}, CONTEXT),
        "empty_value": b"",
    }
    values = [valid, *bad.values()]
    got, dead = scored(bundle, store, values, registry_scorer(bundle, client, "avro"))
    assert list(got) == [events[0]["event_id"]]
    classes = [dict(d.headers)[rec.HEADER_ERROR_CLASS] for d in dead]
    assert classes == list(bad)
    for letter, original in zip(dead, bad.values(), strict=True):
        assert dict(letter.headers)[rec.HEADER_ERROR_REASON]
        assert letter.value == original  # the original bytes, untouched


def test_an_unreachable_registry_fails_the_check_and_the_batch_rejects_nothing(
    bundle: ModelBundle, client: Any, events: list
) -> None:
    framed = AvroSerializer(client, avro_schema())(events[0], CONTEXT)
    away = registry_client({"url": "http://127.0.0.1:9", "timeout": "1"})  # nothing listens
    schemas = RegistrySchemas(away, "avro")
    with pytest.raises(RegistryUnavailable, match="unreachable"):
        schemas.check()
    scorer = BatchScorer(bundle, "avro", schemas)
    with pytest.raises(RegistryUnavailable):
        scorer.prepare([Record(framed, 0)])


@pytest.mark.parametrize("output_format", ["avro", "protobuf", "json-schema"])
def test_predictions_in_a_registry_format_read_back_with_confluent_deserializers(
    bundle: ModelBundle, events: list, world: Any, output_format: InputFormat
) -> None:
    store, _ = world
    url = f"mock://{uuid.uuid4().hex}"
    client = registry_client({"url": url})
    records = [Record(json.dumps(e).encode(), offset) for offset, e in enumerate(events)]
    as_json = FakeProducer(auto_ack=False)
    pipeline(bundle, store, as_json).run(records)
    expected = [msgspec.json.decode(p.value or b"") for p in as_json.pending]
    settings = load_settings(output_format=output_format, schema_registry_url=url)
    encode = prediction_encoder(settings, client)  # registers it under predictions-value
    framed = FakeProducer(auto_ack=False)
    scorer = BatchScorer(bundle, encode_prediction=encode)
    pipeline(bundle, store, framed, scorer=scorer).run(records)

    context = SerializationContext("predictions", MessageField.VALUE)
    schema_id = client.get_latest_version("predictions-value").schema_id
    assert all((p.value or b"")[:5] == HEADER.pack(0, schema_id) for p in framed.pending)
    schemas = RegistrySchemas(client, output_format)  # as `streamserve audit` reads them
    assert [provenance(Record(p.value, 0), schemas) for p in framed.pending] == [  # type: ignore[arg-type]
        (p["source_topic"], p["source_partition"], p["source_offset"]) for p in expected
    ]
    if output_format == "protobuf":
        proto = prediction_schemas.proto_file()
        message = message_factory.GetMessageClass(
            descriptor_pool.DescriptorPool().Add(proto).message_types_by_name["Prediction"]
        )
        from_protobuf = ProtobufDeserializer(message, {"use.deprecated.format": False})
        read = [from_protobuf(p.value, context) for p in framed.pending]
        for got, want in zip(read, expected, strict=True):
            assert (got.event_id, got.entity_id) == (str(want["event_id"]), want["entity_id"])
            assert (got.score, got.latency_ms, got.source_offset, got.batch_id) == (
                want["score"],
                want["latency_ms"],
                want["source_offset"],
                want["batch_id"],
            )
        return
    deserialize: Any = (
        AvroDeserializer(client)
        if output_format == "avro"
        else JSONDeserializer(None, schema_registry_client=client)
    )
    read_back = [deserialize(p.value, context) for p in framed.pending]
    # plain JSON leaves out the fields at their default; an Avro record has every field
    unset = {"scores": None, "degraded": False, "decision": None, "threshold": None}
    defaults = unset if output_format == "avro" else {}
    assert read_back == [{**defaults, **p} for p in expected]


def test_every_prediction_field_survives_the_derived_avro_and_protobuf_schemas() -> None:
    """Each field, set to a value other than its default, reads back from Avro and Protobuf
    (ids as text there); Protobuf numbers the fields in declaration order."""
    prediction = rec.Prediction(
        "e1", 42, 0.25, "m", "3", 1_700_000_000_000, 1_699_999_999_990, 10.5, 2, "events",
        3, 2**40, "w-1", rec.PREDICTION_SCHEMA_VERSION, scores=[0.25, 0.75], degraded=True,
        decision=True, threshold=0.2,
    )  # fmt: skip
    fields = msgspec.structs.asdict(prediction)
    assert all(v is not None for v in fields.values())
    out = io.BytesIO()
    schema = fastavro.parse_schema(prediction_schemas.avro_schema())
    fastavro.schemaless_writer(out, schema, fields)
    out.seek(0)
    assert fastavro.schemaless_reader(out, schema) == fields
    proto = prediction_schemas.proto_file()
    descriptor = descriptor_pool.DescriptorPool().Add(proto).message_types_by_name["Prediction"]
    message_class = message_factory.GetMessageClass(descriptor)
    framed = outputs.framed_protobuf(7, message_class)(prediction)
    read = message_class.FromString(framed[6:])
    as_text = {**fields, "event_id": "e1", "entity_id": "42"}
    assert {f: getattr(read, f) for f in fields} == {**as_text, "scores": [0.25, 0.75]}
    assert [(f.name, f.number) for f in descriptor.fields] == [
        (name, number) for number, name in enumerate(fields, start=1)
    ]


def test_predictions_must_be_registered_already_when_auto_register_is_off(client: Any) -> None:
    schema = json.dumps(prediction_schemas.avro_schema())
    with pytest.raises(ConfigError, match="not registered under predictions-value"):
        prediction_schema_id(client, ["predictions-value"], "AVRO", schema, False)
    registered = prediction_schema_id(client, ["predictions-value"], "AVRO", schema, True)
    assert prediction_schema_id(client, ["predictions-value"], "AVRO", schema, False) == registered
