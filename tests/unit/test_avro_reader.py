"""The Avro reader specialised to a model's fields reads what fastavro reads, for every type it
accepts; schemas it does not handle are left to fastavro."""

from __future__ import annotations

import io
import random
import struct
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from streamserve.core.avro_reader import compile_reader

HEADER = b"\x00\x00\x00\x00\x07"
SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "Event",
    "namespace": "test",
    "fields": [
        {"name": "event_id", "type": "string"},
        {"name": "entity_id", "type": ["null", "string", "long"]},
        {"name": "skipped_bytes", "type": "bytes"},
        {"name": "flag", "type": "boolean"},
        {"name": "small", "type": "int"},
        {"name": "big", "type": "long"},
        {"name": "ratio", "type": "float"},
        {"name": "amount", "type": ["null", "double"]},
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
    ],
}
WANTED: dict[str, Any] = {
    "event_id": None,
    "entity_id": None,
    "flag": None,
    "small": None,
    "big": None,
    "ratio": None,
    "amount": None,
    "colour": None,
    "merchant": {"risk": None},
    "previous": {"risk": None},
}


def random_record(rng: random.Random) -> dict[str, Any]:
    def maybe(value: Any) -> Any:
        return None if rng.random() < 0.3 else value

    merchant = {"mcc": "".join(rng.choices("0123456789é", k=4)), "risk": maybe(rng.random())}
    return {
        "event_id": f"ev-{rng.randrange(10**9)}",
        "entity_id": rng.choice([None, f"u{rng.randrange(1000)}", rng.randrange(-(2**40), 2**40)]),
        "skipped_bytes": bytes(rng.randrange(256) for _ in range(rng.randrange(200))),
        "flag": rng.random() < 0.5,
        "small": rng.randrange(-(2**31), 2**31),
        "big": rng.randrange(-(2**63), 2**63),
        "ratio": rng.random(),
        "amount": maybe(rng.uniform(-1e6, 1e6)),
        "at": rng.randrange(0, 2**41),
        "colour": rng.choice(["R", "G"]),
        "digest": bytes(rng.randrange(256) for _ in range(4)),
        "merchant": maybe(merchant),
        "previous": maybe(dict(merchant)),
    }


def only(record: dict[str, Any], wanted: dict[str, Any]) -> dict[str, Any]:
    found = {}
    for name, child in wanted.items():
        value = record[name]
        found[name] = only(value, child) if child is not None and value is not None else value
    return found


def test_reads_what_fastavro_reads_for_every_supported_type() -> None:
    parsed = parse_schema(SCHEMA)
    read = compile_reader(SCHEMA, WANTED, len(HEADER))
    assert read is not None
    rng = random.Random(5)
    for _ in range(500):
        stream = io.BytesIO()
        schemaless_writer(stream, parsed, random_record(rng))
        expected: Any = schemaless_reader(io.BytesIO(stream.getvalue()), parsed, None)
        got = read(HEADER + stream.getvalue())
        assert got == only(expected, WANTED)


def test_truncated_bytes_raise_instead_of_reading_garbage() -> None:
    parsed = parse_schema(SCHEMA)
    read = compile_reader(SCHEMA, WANTED, len(HEADER))
    assert read is not None
    stream = io.BytesIO()
    schemaless_writer(stream, parsed, random_record(random.Random(1)))
    whole = HEADER + stream.getvalue()
    for cut in range(len(HEADER), len(whole) - 1, 3):
        with pytest.raises((ValueError, IndexError, struct.error)):
            read(whole[:cut])


@pytest.mark.parametrize(
    "field_type",
    [{"type": "array", "items": "long"}, {"type": "map", "values": "string"}, "NoSuchType"],
)
def test_arrays_maps_and_unknown_names_are_left_to_fastavro(field_type: Any) -> None:
    schema = {"type": "record", "name": "R", "fields": [{"name": "x", "type": field_type}]}
    assert compile_reader(schema, {"x": None}, 5) is None
