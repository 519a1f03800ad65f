"""The batch readers generated per writer schema change speed, never outcomes: for random
records of every type they read, for records cut short, out of order or with unknown fields,
the decoder with them gives the same events, columns and dead letters as the decoder without
them (fastavro or the protobuf library, then the event type's validation)."""

from __future__ import annotations

import base64
import io
import json
import random
import struct
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from fastavro import parse_schema, schemaless_writer
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from streamserve.core.decoding.avro_reader import compile_avro_reader
from streamserve.core.decoding.column_reader import Wanted
from streamserve.core.decoding.events import EventDecoder
from streamserve.core.decoding.formats import FramedDecoder, InputFormat
from streamserve.core.decoding.protobuf_reader import compile_protobuf_reader
from streamserve.core.decoding.writer_schema import WriterSchema, parse_writer_schema
from streamserve.core.model import EventDef, FeatureDef, Manifest

SCHEMA_ID = 7
HEADER = b"\x00" + SCHEMA_ID.to_bytes(4, "big")
FEATURES = {  # feature name -> event path
    "avro": ["small", "big", "ratio", "amount", "at", "merchant.risk", "previous.risk", "gone"],
    "protobuf": [
        *("s32", "i32", "u64", "f", "amount", "merchant.risk", "merchant.opt", "sf64"),
        *("fx32", "far", "gone"),
    ],
}
ENTITY_FIELD = {"avro": "entity_id", "protobuf": "entity_num"}

AVRO_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "Event",
    "namespace": "test",
    "fields": [
        {"name": "event_id", "type": "string"},
        {"name": "entity_id", "type": ["null", "string", "long", "boolean"]},
        {"name": "skipped_bytes", "type": "bytes"},
        {"name": "skipped_text", "type": "string"},
        {"name": "flag", "type": "boolean"},
        {"name": "small", "type": "int"},
        {"name": "big", "type": "long"},
        {"name": "ratio", "type": "float"},
        {"name": "amount", "type": ["null", "double", "string"]},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "colour", "type": {"type": "enum", "name": "Colour", "symbols": ["R", "G"]}},
        {"name": "digest", "type": {"type": "fixed", "name": "Digest", "size": 4}},
        {
            "name": "merchant",
            "type": [
                "null",
                {
                    "type": "record",
                    "name": "Merchant",
                    "fields": [
                        {"name": "mcc", "type": "string"},
                        {"name": "risk", "type": ["null", "double"]},
                    ],
                },
            ],
        },
        {"name": "previous", "type": ["null", "Merchant"]},
        # unread, of every shape the batch reader skips block by block
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "attrs", "type": ["null", {"type": "map", "values": ["null", "long"]}]},
        {"name": "history", "type": {"type": "array", "items": "Merchant"}},
        {"name": "grid", "type": {"type": "array", "items": {"type": "array", "items": "null"}}},
    ],
}

EVENT_INDEX = b"\x02\x02"  # the message-index list [1]: Event, the file's second message
PROTO = """
Inner: risk double 1, opt double? 2, mcc string 3
Event: event_id string 1, entity_num int64 2, s32 sint32 3, i32 int32 4, u64 uint64 5,
  f float 6, amount double? 7, merchant Inner 8, tags int64* 9, labels string* 10,
  sf64 sfixed64 11, fx32 fixed32 12, blob bytes 13, flag bool 14, far int32 20
"""


def manifest(input_format: InputFormat, paths: list[str] | None = None) -> Manifest:
    paths = FEATURES[input_format] if paths is None else paths
    features = [FeatureDef(f"x{n}", "event", path) for n, path in enumerate(paths)]
    event = EventDef(id_field="event_id", entity_field=ENTITY_FIELD[input_format])
    return Manifest(name="t", version="1", features=features, event=event)


class OneSchema:
    """The WriterSchemas port with one schema, with or without its batch reader."""

    def __init__(self, schema: WriterSchema, batch_readers: bool) -> None:
        self.schema = schema if batch_readers else replace(schema, columns=None)

    def resolve(self, schema_ids: set[int]) -> Mapping[int, WriterSchema | None]:
        return {i: self.schema if i == SCHEMA_ID else None for i in schema_ids}


def assert_same_outcomes(
    input_format: InputFormat,
    schema: WriterSchema,
    values: list[bytes],
    paths: list[str] | None = None,
) -> None:
    """The decoder with batch readers and the decoder without give the same result."""
    events = EventDecoder(manifest(input_format, paths))
    fast = FramedDecoder(events, input_format, OneSchema(schema, batch_readers=True))
    slow = FramedDecoder(events, input_format, OneSchema(schema, batch_readers=False))
    got, got_rejections = fast.decode(values)
    expected, expected_rejections = slow.decode(values)
    assert got_rejections == expected_rejections
    assert got.indices == expected.indices
    assert got.event_ids == expected.event_ids
    assert got.entity_ids == expected.entity_ids
    np.testing.assert_array_equal(got.event_features, expected.event_features)


def assert_read_fast(input_format: InputFormat, schema: WriterSchema, values: list[bytes]) -> None:
    """Every event that scores was read by the batch reader itself, and there were both
    events and dead letters."""
    events = EventDecoder(manifest(input_format))
    decoded, rejections = FramedDecoder(events, input_format, OneSchema(schema, True)).decode(
        values
    )
    assert schema.columns is not None
    read = schema.columns(events.wanted(), values[0])
    assert read is not None
    hits: list[int] = []
    read(values, range(len(values)), hits, [], [], [])
    assert set(decoded.indices) <= set(hits)
    assert len(decoded.indices) > 100 and len(rejections) > 10


def maybe(rng: random.Random, value: Any, absent: Any = None, chance: float = 0.2) -> Any:
    return absent if rng.random() < chance else value


def random_avro(rng: random.Random) -> dict[str, Any]:
    merchant = {"mcc": "".join(rng.choices("0123456789é", k=4)), "risk": maybe(rng, rng.random())}
    return {
        "event_id": maybe(rng, f"ev-{rng.randrange(10**9)}", "", 0.05),
        "entity_id": rng.choice(
            [None, f"u{rng.randrange(1000)}", rng.randrange(-(2**40), 2**40), True, "x" * 1025]
            + ["u1"] * 6
        ),
        "skipped_bytes": rng.randbytes(rng.randrange(200)),
        "skipped_text": "".join(rng.choices("abcé€", k=rng.randrange(150))),
        "flag": rng.random() < 0.5,
        "small": rng.randrange(-(2**31), 2**31),
        "big": rng.randrange(-(2**63), 2**63),
        "ratio": rng.random(),
        "amount": rng.choice([None, rng.uniform(-1e6, 1e6), 1e300, "12"] + [1.5] * 6),
        "at": rng.randrange(0, 2**41),
        "colour": rng.choice(["R", "G"]),
        "digest": rng.randbytes(4),
        "merchant": maybe(rng, merchant),
        "previous": maybe(rng, dict(merchant)),
        "tags": ["".join(rng.choices("xyzé", k=rng.randrange(8))) for _ in range(rng.randrange(6))],
        "attrs": maybe(rng, {f"k{i}": maybe(rng, rng.randrange(-9, 2**40)) for i in range(4)}),
        "history": [dict(merchant) for _ in range(rng.randrange(3))],
        "grid": [[None] * rng.randrange(4) for _ in range(rng.randrange(3))],
    }


def avro_values(rng: random.Random, count: int) -> list[bytes]:
    parsed = parse_schema(AVRO_SCHEMA)
    values = []
    for _ in range(count):
        stream = io.BytesIO()
        schemaless_writer(stream, parsed, random_avro(rng))
        values.append(HEADER + stream.getvalue())
    return values


def proto_file(spec: str, name: str = "test.proto") -> descriptor_pb2.FileDescriptorProto:
    """A proto3 file from ``message: field type number, ...`` lines (`?` optional, `*`
    repeated, a capitalised type a message of the file)."""
    field = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name=name, package="test", syntax="proto3")
    messages = [m.strip() for m in spec.replace("\n ", " ").strip().split("\n")]
    for text in messages:
        message_name, fields = text.split(":", 1)
        message = file.message_type.add(name=message_name.strip())
        for item in fields.split(","):
            field_name, kind, number = item.split()
            optional, repeated = kind.endswith("?"), kind.endswith("*")
            kind = kind.rstrip("?*")
            added = message.field.add(name=field_name, number=int(number))
            added.label = field.LABEL_REPEATED if repeated else field.LABEL_OPTIONAL
            if kind[0].isupper():
                added.type, added.type_name = field.TYPE_MESSAGE, f".test.{kind}"
            else:
                added.type = getattr(field, f"TYPE_{kind.upper()}")
            if optional:
                added.proto3_optional = True
                added.oneof_index = len(message.oneof_decl)
                message.oneof_decl.add(name=f"_{field_name}")
    return file


def proto_classes(spec: str) -> dict[str, Any]:
    file = descriptor_pool.DescriptorPool().Add(proto_file(spec))
    return {
        name: message_factory.GetMessageClass(descriptor)
        for name, descriptor in file.message_types_by_name.items()
    }


def random_proto(rng: random.Random, event: Any) -> Any:
    message = event()
    message.event_id = maybe(rng, f"ev-{rng.randrange(10**9)}", "", 0.05)
    message.entity_num = maybe(rng, rng.randrange(-(2**63), 2**63), 0)
    message.s32 = rng.randrange(-(2**31), 2**31)
    message.i32 = maybe(rng, rng.randrange(-(2**31), 2**31), 0)
    message.u64 = rng.randrange(0, 2**64)
    message.f = maybe(rng, rng.uniform(-1e6, 1e6), 0.0)
    if rng.random() < 0.8:
        message.amount = rng.choice([rng.uniform(-1e6, 1e6), 1e300, 0.0])
    if rng.random() < 0.7:
        message.merchant.risk = maybe(rng, rng.random(), 0.0)
        message.merchant.mcc = "".join(rng.choices("0123456789é", k=4))
        if rng.random() < 0.5:
            message.merchant.opt = rng.random()
    message.tags.extend(rng.randrange(-(2**40), 2**40) for _ in range(rng.randrange(4)))
    message.labels.extend("lé" * rng.randrange(80) for _ in range(rng.randrange(3)))
    message.sf64 = rng.randrange(-(2**63), 2**63)
    message.fx32 = rng.randrange(0, 2**32)
    message.blob = rng.randbytes(rng.randrange(300))
    message.flag = rng.random() < 0.5
    message.far = maybe(rng, rng.randrange(-(2**31), 2**31), 0)
    return message


def proto_schema(spec: str) -> WriterSchema:
    serialized = base64.b64encode(proto_file(spec).SerializeToString()).decode()
    return parse_writer_schema(SCHEMA_ID, "PROTOBUF", serialized)


def test_avro_reader_reads_what_fastavro_reads() -> None:
    schema = parse_writer_schema(SCHEMA_ID, "AVRO", json.dumps(AVRO_SCHEMA))
    values = avro_values(random.Random(5), 600)
    assert_same_outcomes("avro", schema, values)
    assert_read_fast("avro", schema, values)


def test_protobuf_reader_reads_what_the_library_reads() -> None:
    event = proto_classes(PROTO)["Event"]
    rng = random.Random(6)
    values = [
        HEADER + EVENT_INDEX + random_proto(rng, event).SerializeToString() for _ in range(600)
    ]
    schema = proto_schema(PROTO)
    assert_same_outcomes("protobuf", schema, values)
    assert_read_fast("protobuf", schema, values)


@pytest.mark.parametrize(
    "path", ["colour", "flag", "merchant", "skipped_text", "digest", "tags", "attrs"]
)
def test_avro_fields_that_are_not_numbers_are_dead_letters_as_fastavro_reads_them(
    path: str,
) -> None:
    schema = parse_writer_schema(SCHEMA_ID, "AVRO", json.dumps(AVRO_SCHEMA))
    assert_same_outcomes("avro", schema, avro_values(random.Random(4), 50), ["amount", path])


@pytest.mark.parametrize("input_format", ["avro", "protobuf"])
def test_records_cut_short_decode_as_the_library_decodes_them(input_format: InputFormat) -> None:
    rng = random.Random(7)
    if input_format == "avro":
        schema = parse_writer_schema(SCHEMA_ID, "AVRO", json.dumps(AVRO_SCHEMA))
        whole = avro_values(rng, 3)
    else:
        schema, event = proto_schema(PROTO), proto_classes(PROTO)["Event"]
        whole = [
            HEADER + EVENT_INDEX + random_proto(rng, event).SerializeToString() for _ in range(3)
        ]
    cut = [value[:end] for value in whole for end in range(len(HEADER), len(value))]
    assert_same_outcomes(input_format, schema, cut)


def test_protobuf_out_of_order_repeated_and_unknown_fields_decode_as_the_library_does() -> None:
    event = proto_classes(PROTO)["Event"]
    newer = proto_classes(PROTO.replace("far int32 20", "far int32 20, extra string 21"))["Event"]
    rng = random.Random(8)
    values = []
    for _ in range(200):
        first, second = random_proto(rng, event), random_proto(rng, event)
        later = newer(extra="新しい", event_id="ev-new", entity_num=3, amount=2.5)
        values += [
            first.SerializeToString() + second.SerializeToString(),  # merged: last wins
            second.SerializeToString()[::-1],  # garbage
            later.SerializeToString(),  # a field this schema does not know
            event(event_id="ev-x", entity_num=4, amount=1.0).SerializeToString()
            + event(amount=9.0).SerializeToString(),  # a scalar twice
        ]
    assert_same_outcomes(
        "protobuf", proto_schema(PROTO), [HEADER + EVENT_INDEX + v for v in values]
    )


def test_avro_unknown_or_recursive_names_are_left_to_fastavro() -> None:
    schema = {"type": "record", "name": "R", "fields": [{"name": "x", "type": "NoSuchType"}]}
    assert compile_avro_reader(schema, Wanted("id", "entity", ()), 5) is None
    linked = {
        "type": "record",
        "name": "Node",
        "fields": [{"name": "next", "type": ["null", "Node"]}],
    }
    assert compile_avro_reader(linked, Wanted("id", "entity", ()), 5) is None


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def test_avro_array_blocks_written_with_their_size_are_read_as_fastavro_reads_them() -> None:
    """Writers may frame an array's block as (-count, byte size, items): the batch reader
    jumps the block; fastavro reads it item by item."""

    def zigzag(n: int) -> bytes:
        return encode_varint((n << 1) ^ (n >> 63))

    schema_json = {
        "type": "record",
        "name": "E",
        "fields": [
            {"name": "tags", "type": {"type": "array", "items": "long"}},
            {"name": "event_id", "type": "string"},
            {"name": "entity_id", "type": "string"},
            {"name": "amount", "type": ["null", "double"]},
        ],
    }
    items = b"".join(zigzag(v) for v in (5, -300, 2**40))
    tail = zigzag(4) + b"ev-1" + zigzag(2) + b"u1" + zigzag(1) + struct.pack("<d", 2.5)
    values = [
        HEADER + zigzag(-3) + zigzag(len(items)) + items + zigzag(0) + tail,  # sized block
        HEADER + zigzag(3) + items + zigzag(0) + tail,  # counted block
        HEADER + zigzag(-3) + zigzag(len(items) + 999) + items + zigzag(0) + tail,  # lies
        HEADER + zigzag(2**40) + tail,  # a count beyond the record
    ]
    schema = parse_writer_schema(SCHEMA_ID, "AVRO", json.dumps(schema_json))
    assert_same_outcomes("avro", schema, values, ["amount"])


@pytest.mark.parametrize(
    ("spec", "wanted"),
    [
        ("Event: event_id string 1, flag bool 2", Wanted("event_id", "flag", ())),
        ("Event: event_id string 1, name string 2", Wanted("event_id", "x", ("name",))),
        ("Event: event_id string 1, x double 2", Wanted("event_id", "y", ("x.z",))),
    ],
)
def test_protobuf_fields_only_the_library_reads_exactly_are_left_to_it(
    spec: str, wanted: Wanted
) -> None:
    file = descriptor_pool.DescriptorPool().Add(proto_file(spec))
    assert compile_protobuf_reader(file.message_types_by_name["Event"], wanted, 5, b"\0") is None


def test_a_batch_of_several_schema_ids_keeps_its_order() -> None:
    """Records of two writer schemas interleaved (a producer rolling out a new version) come
    out in batch order with their own columns."""
    values = avro_values(random.Random(9), 40)
    other_id = SCHEMA_ID + 1
    other = HEADER[:1] + other_id.to_bytes(4, "big")
    mixed = [other + v[len(HEADER) :] if i % 3 else v for i, v in enumerate(values)]
    schema = parse_writer_schema(SCHEMA_ID, "AVRO", json.dumps(AVRO_SCHEMA))

    class TwoIds(OneSchema):
        def resolve(self, schema_ids: set[int]) -> Mapping[int, WriterSchema | None]:
            return {i: replace(self.schema, schema_id=i) for i in schema_ids}

    decoder = FramedDecoder(EventDecoder(manifest("avro")), "avro", TwoIds(schema, True))
    got, _ = decoder.decode(mixed)
    single, _ = FramedDecoder(
        EventDecoder(manifest("avro")), "avro", OneSchema(schema, True)
    ).decode(values)
    assert got.indices == single.indices == sorted(got.indices)
    assert got.event_ids == single.event_ids
    np.testing.assert_array_equal(got.event_features, single.event_features)
