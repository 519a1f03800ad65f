"""A reader of Avro records specialised to one writer schema and the fields a model reads.

fastavro decodes every field of every record into dicts through generic dispatch: about 4 µs
for an 8-field event with nullable unions, three times the JSON path's cost. This module writes
(once per writer schema) a Python function that walks the record's bytes in order, decodes the
fields the manifest asks for and skips the rest, returning the small dict the event decoder
reads. Writer schemas with types it does not handle (arrays, maps, recursive records) are left
to fastavro: ``compile_reader`` returns None for them.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

Tree = dict[str, "Tree | None"]  # the field paths wanted: leaves map to None
PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


class Unsupported(Exception):
    """A schema construct the generated reader leaves to fastavro."""


def compile_reader(schema: Any, wanted: Tree, header: int) -> Callable[[bytes], Any] | None:
    """A function: framed value -> dict of the ``wanted`` fields, reading from offset
    ``header``; None when the schema needs fastavro. Raises ValueError/IndexError/struct.error
    on bytes that do not decode."""
    named: dict[str, Any] = {}
    lines = ["def read(b):", f"    p = {header}", "    out = {}"]
    try:
        _emit_record(schema, wanted, "out", lines, "    ", named, depth=0)
    except Unsupported:
        return None
    lines.append("    return out")
    scope: dict[str, Any] = {"unpack_from": struct.unpack_from, "varint": _varint}
    exec("\n".join(lines), scope)  # generated from the schema's field list only
    reader: Callable[[bytes], Any] = scope["read"]
    return reader


def _varint(b: bytes, p: int) -> tuple[int, int]:
    """A zigzag varint at ``p`` (the multi-byte case): (value, next position)."""
    value, shift = 0, 0
    while True:
        byte = b[p]
        p += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (value >> 1) ^ -(value & 1), p
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _resolve(schema: Any, named: dict[str, Any]) -> Any:
    if isinstance(schema, str) and schema not in PRIMITIVES:
        if schema not in named:
            raise Unsupported(f"unknown or recursive named type {schema}")
        return named[schema]
    if isinstance(schema, dict) and schema.get("type") in PRIMITIVES:
        return schema["type"]  # a primitive with a logical type: read the primitive
    return schema


def _emit_record(
    schema: dict[str, Any], wanted: Tree, target: str, lines: list[str], pad: str,
    named: dict[str, Any], depth: int,
) -> None:  # fmt: skip
    if depth > 8:
        raise Unsupported("records nested too deeply")
    for key in ("name", "fullname"):
        if key in schema:
            named.setdefault(schema[key], schema)
    for field in schema["fields"]:
        name = field["name"]
        into = (target, name, wanted[name]) if name in wanted else None
        _emit_value(field["type"], into, lines, pad, named, depth)


def _emit_value(
    schema: Any, into: tuple[str, str, Tree | None] | None, lines: list[str], pad: str,
    named: dict[str, Any], depth: int,
) -> None:  # fmt: skip
    """Code reading one value at ``p``; with ``into`` (dict, key, subtree) it is stored."""
    schema = _resolve(schema, named)
    if isinstance(schema, list):
        lines.append(f"{pad}x = b[p]")
        lines.append(f"{pad}if x < 128: p += 1; x = (x >> 1) ^ -(x & 1)")
        lines.append(f"{pad}else: x, p = varint(b, p)")
        for index, branch in enumerate(schema):
            lines.append(f"{pad}{'if' if index == 0 else 'elif'} x == {index}:")
            _emit_value(branch, into, lines, pad + "    ", named, depth)
            lines.append(f"{pad}    pass")
        lines.append(f"{pad}else: raise ValueError(f'union branch {{x}} of {len(schema)}')")
        return
    store = f"{into[0]}[{into[1]!r}] = " if into is not None else ""
    if isinstance(schema, dict):
        kind = schema.get("type")
        if kind == "record":
            named.setdefault(schema["name"], schema)
            if into is not None and into[2] is not None:
                inner = f"r{depth + 1}"
                lines.append(f"{pad}{inner} = {into[0]}[{into[1]!r}] = {{}}")
                _emit_record(schema, into[2], inner, lines, pad, named, depth + 1)
            else:
                _emit_record(schema, {}, "_", lines, pad, named, depth + 1)
                if into is not None:
                    lines.append(f"{pad}{store}'not a number'")  # a record where a number was
            return
        if kind == "enum":
            named.setdefault(schema["name"], schema)
            lines.append(f"{pad}x, p = varint(b, p)")
            symbols = tuple(schema["symbols"])
            if into is not None:
                lines.append(f"{pad}{store}{symbols!r}[x]")
            return
        if kind == "fixed":
            named.setdefault(schema["name"], schema)
            size = int(schema["size"])
            if into is not None:
                lines.append(f"{pad}{store}b[p:p + {size}]")
            lines.append(f"{pad}p += {size}")
            return
        raise Unsupported(f"type {kind}")
    if schema == "null":
        if into is not None:
            lines.append(f"{pad}{store}None")
    elif schema == "boolean":
        if into is not None:
            lines.append(f"{pad}{store}b[p] == 1")
        lines.append(f"{pad}p += 1")
    elif schema in ("int", "long"):
        lines.append(f"{pad}x = b[p]")
        lines.append(f"{pad}if x < 128: p += 1; x = (x >> 1) ^ -(x & 1)")
        lines.append(f"{pad}else: x, p = varint(b, p)")
        if into is not None:
            lines.append(f"{pad}{store}x")
    elif schema in ("float", "double"):
        code, size = ("<f", 4) if schema == "float" else ("<d", 8)
        if into is not None:
            lines.append(f"{pad}{store}unpack_from({code!r}, b, p)[0]")
        else:
            lines.append(f"{pad}if p + {size} > len(b): raise ValueError('truncated')")
        lines.append(f"{pad}p += {size}")
    elif schema in ("string", "bytes"):
        lines.append(f"{pad}n = b[p]")
        lines.append(f"{pad}if n < 128: p += 1; n = (n >> 1) ^ -(n & 1)")
        lines.append(f"{pad}else: n, p = varint(b, p)")
        lines.append(f"{pad}if n < 0 or p + n > len(b): raise ValueError('truncated')")
        if into is not None:
            text = ".decode()" if schema == "string" else ""
            lines.append(f"{pad}{store}b[p:p + n]{text}")
        lines.append(f"{pad}p += n")
    else:
        raise Unsupported(f"type {schema}")
