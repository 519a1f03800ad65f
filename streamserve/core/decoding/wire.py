"""The Confluent wire format of Schema Registry serializers: magic byte 0, the writer schema's
id (4 bytes, big-endian), then the payload (Protobuf puts its message-index list first)."""

from __future__ import annotations

import struct

MAGIC_BYTE = 0
HEADER_BYTES = 5
HEADER = struct.Struct(">bI")  # magic byte, schema id


class FrameError(ValueError):
    """A value that is not in the Confluent wire format; the message says why."""


def split_message_indexes(payload: memoryview) -> tuple[tuple[int, ...], memoryview]:
    """Protobuf: (the message's index path in its schema, the message bytes). The path is a
    zigzag-varint count then that many zigzag varints; a lone 0 means the first message."""
    count, at = _zigzag_varint(payload, 0)
    if count == 0:
        return (0,), payload[at:]
    if count < 0 or count > 100:
        raise FrameError(f"message-index count {count} is not plausible")
    indexes = []
    for _ in range(count):
        index, at = _zigzag_varint(payload, at)
        indexes.append(index)
    return tuple(indexes), payload[at:]


def _zigzag_varint(data: memoryview, at: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if at >= len(data) or shift > 63:
            raise FrameError("truncated message-index list")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return (value >> 1) ^ -(value & 1), at
