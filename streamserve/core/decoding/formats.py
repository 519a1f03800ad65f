"""Events in the Confluent wire format (Avro, Protobuf, JSON Schema), decoded a batch at a time.

Each record names its writer schema by id; the ids of a batch are resolved in one call to a
``WriterSchemas`` port (the registry adapter, with its cache), then every payload is read with
its writer schema and checked against the manifest's event type, as JSON events are: events of
several schema versions decode to the same columns. Pure: the port does the I/O.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

from streamserve.core.decoding.column_reader import BatchReader
from streamserve.core.decoding.events import DecodedEvents, EventDecoder, Rejection
from streamserve.core.decoding.wire import HEADER, HEADER_BYTES, MAGIC_BYTE
from streamserve.core.decoding.writer_schema import WriterSchema

InputFormat = Literal["json", "avro", "protobuf", "json-schema"]
REGISTRY_SCHEMA_TYPE = {"avro": "AVRO", "protobuf": "PROTOBUF", "json-schema": "JSON"}


class WriterSchemas(Protocol):
    """The registry, as decoding needs it: schema ids -> parsed schemas (None: not found)."""

    def resolve(self, schema_ids: set[int]) -> Mapping[int, WriterSchema | None]: ...


class FramedDecoder:
    """Unwraps the Confluent wire format, then decodes like the JSON path (``EventDecoder``).

    Records are grouped by their framing header (magic byte and schema id: one group in the
    usual batch); each group goes through the batch reader generated for its writer schema and
    this model (``column_reader``). The records a reader hands back, and the groups without one,
    take the general path: the format's library, then the event type's validation, which also
    names the dead letters' classes."""

    def __init__(
        self, events: EventDecoder, input_format: InputFormat, schemas: WriterSchemas
    ) -> None:
        self._events = events
        self._schema_type = REGISTRY_SCHEMA_TYPE[input_format]
        self._schemas = schemas
        self._wanted = events.wanted()
        self._batch_readers: dict[int, BatchReader | None] = {}  # per schema id, for this model

    def decode(self, values: Sequence[bytes | None]) -> tuple[DecodedEvents, list[Rejection]]:
        """Decode a batch; RegistryUnavailable (from the port) when a new schema id cannot be
        fetched: nothing is rejected then, and the batch can be decoded again later."""
        heads = [value[:HEADER_BYTES] if value is not None else b"" for value in values]
        groups = _group(heads)
        ids = {
            head: int.from_bytes(head[1:], "big")
            for head in groups
            if len(head) == HEADER_BYTES and head[0] == MAGIC_BYTE
        }
        schemas = self._schemas.resolve(set(ids.values()))
        hits: list[int] = []
        event_ids: list[Any] = []
        entity_ids: list[Any] = []
        features: list[Any] = []
        slow: list[int] = []
        for head, indices in groups.items():
            schema_id = ids.get(head)
            schema = schemas.get(schema_id) if schema_id is not None else None
            read = self._batch_reader(schema, values[indices[0]])  # type: ignore[arg-type]
            if read is None:
                slow.extend(indices)
            else:
                slow.extend(read(values, indices, hits, event_ids, entity_ids, features))  # type: ignore[arg-type]
        fast, rejections = self._events.from_columns(hits, event_ids, entity_ids, features)
        if len(groups) > 1:  # each group's events are in order, not the groups'
            fast = fast.in_order()
        if not slow:
            return fast, rejections
        slow.sort()
        decoded, more = self._decode_slowly([values[i] for i in slow], slow, schemas)
        rejections.extend(more)
        rejections.sort(key=lambda r: r.index)
        return fast.merged(decoded), rejections

    def _batch_reader(self, schema: WriterSchema | None, sample: bytes) -> BatchReader | None:
        """The batch reader of a schema id, made once, for the message type of its first
        sample record (a Protobuf schema's other message types take the general path)."""
        if schema is None or schema.schema_type != self._schema_type or schema.columns is None:
            return None
        if schema.schema_id not in self._batch_readers:
            try:
                self._batch_readers[schema.schema_id] = schema.columns(self._wanted, sample)
            except (ValueError, LookupError):  # a sample that does not read: try the next one
                return None
        return self._batch_readers[schema.schema_id]

    def _decode_slowly(
        self,
        values: Sequence[bytes | None],
        origin: Sequence[int],
        schemas: Mapping[int, WriterSchema | None],
    ) -> tuple[DecodedEvents, list[Rejection]]:
        """Each record through its format's library, then the event type: ``values[i]`` is the
        batch's record ``origin[i]``; ``schemas``: the batch's schema ids, resolved already."""
        ids: list[int] = []
        rejections: list[Rejection] = []
        unpack = HEADER.unpack_from
        for index, value in zip(origin, values, strict=True):
            try:
                magic, schema_id = unpack(value)  # type: ignore[arg-type]
            except (struct.error, TypeError):
                magic, schema_id = -1, -1
            if magic != MAGIC_BYTE:
                rejections.append(_unframed(index, value))
                schema_id = -1
            ids.append(schema_id)
        as_json = self._schema_type == "JSON"
        readable: list[Any] = []
        readable_origin: list[int] = []
        for index, schema_id, value in zip(origin, ids, values, strict=True):
            if schema_id < 0:
                continue
            schema = schemas.get(schema_id)
            if schema is None or schema.schema_type != self._schema_type:
                rejections.append(self._unknown(index, schema_id, schema))
                continue
            if as_json:
                readable.append(memoryview(value)[HEADER_BYTES:])  # type: ignore[arg-type]
            else:
                try:
                    readable.append(schema.read(value))  # type: ignore[arg-type,misc]
                except Exception as exc:  # whatever a reader raises on bad bytes
                    reason = f"does not decode with schema {schema_id}: {_describe(exc)}"
                    rejections.append(Rejection(index, "undecodable", reason))
                    continue
            readable_origin.append(index)
        return self._events.decode_framed(
            readable, readable_origin, rejections, objects=not as_json
        )

    def _unknown(self, index: int, schema_id: int, schema: WriterSchema | None) -> Rejection:
        if schema is None:
            reason = f"schema id {schema_id} is not in the Schema Registry"
        else:
            reason = f"schema id {schema_id} is {schema.schema_type}, not {self._schema_type}"
        return Rejection(index, "unknown_schema", reason)


def _group(heads: list[bytes]) -> Mapping[bytes, Sequence[int]]:
    """Batch indices by framing header; the usual batch, one schema id throughout, is one
    group with no loop in Python."""
    if not heads or heads.count(heads[0]) == len(heads):
        return {heads[0]: range(len(heads))} if heads else {}
    groups: dict[bytes, list[int]] = {}
    for index, head in enumerate(heads):
        groups.setdefault(head, []).append(index)
    return groups


def _describe(exc: Exception) -> str:
    """A reader's error for a dead letter's reason, without the object reprs fastavro puts in
    (``cannot read boolean from <_io.BytesIO object at 0x...>``)."""
    message = re.sub(r" from <[^>]*>", "", str(exc)) or "no message"
    return f"{type(exc).__name__}: {message}"[:400]


def _unframed(index: int, value: bytes | None) -> Rejection:
    if not value:
        return Rejection(index, "empty_value", "record value is empty")
    if value[0] != MAGIC_BYTE:
        reason = f"no Schema Registry framing: first byte {value[0]}, expected {MAGIC_BYTE}"
    else:
        reason = f"{len(value)} bytes: too short for the {HEADER_BYTES}-byte framing header"
    return Rejection(index, "not_framed", reason)
