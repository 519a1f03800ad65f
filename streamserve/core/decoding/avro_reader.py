"""Avro batch readers specialised to one writer schema and the fields a model reads.

fastavro decodes every field of every record into dicts through generic dispatch: about 4 µs
for an 8-field event with nullable unions, three times the JSON path's cost. The reader written
here walks each record's bytes in schema order, keeps the model's fields and skips the rest
(see ``column_reader``), arrays and maps included, block by block (a block written with its
byte size is jumped over whole). Logical types are read as their underlying number (a
timestamp-millis as its long). Writer schemas with types it does not handle (recursive records)
are left to fastavro: ``compile_avro_reader`` returns None for them.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

from streamserve.core.decoding.column_reader import (
    BatchReader,
    Targets,
    Unsupported,
    Wanted,
    assemble,
    varint,
)

PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
ID_TYPES = {"null", "int", "long", "string"}
FEATURE_TYPES = {"null", "int", "long", "float", "double"}


def compile_avro_reader(
    schema: Any, wanted: Wanted, header: int, named_types: Mapping[str, Any] | None = None
) -> BatchReader | None:
    """A batch reader of records written with ``schema``, their payload at offset ``header``
    (the caller hands it only records framed with this schema's id); None when the schema needs
    fastavro. ``named_types``: types defined in referenced schemas, by name."""
    body: list[str] = []
    try:
        if not isinstance(schema, dict) or schema.get("type") != "record":
            raise Unsupported("the writer schema is not a record")
        _emit_record(schema, wanted.targets(), body, "", dict(named_types or {}), depth=0)
    except Unsupported:
        return None
    body.append("if p > len(b): raise ValueError('truncated')")  # skipped values moved p only
    scope = {
        "unpack_float": struct.Struct("<f").unpack_from,
        "unpack_double": struct.Struct("<d").unpack_from,
        "varint": varint,
    }
    return assemble(wanted, [f"p = {header}"], body, scope)


def _resolve(schema: Any, named: dict[str, Any]) -> Any:
    if isinstance(schema, str) and schema not in PRIMITIVES:
        if schema not in named:
            raise Unsupported(f"unknown or recursive named type {schema}")
        return named[schema]
    if isinstance(schema, dict) and schema.get("type") in PRIMITIVES:
        return schema["type"]  # a primitive with a logical type: read the primitive
    return schema


def _emit_record(
    schema: dict[str, Any],
    targets: Targets,
    lines: list[str],
    pad: str,
    named: dict[str, Any],
    depth: int,
) -> None:
    if depth > 8:
        raise Unsupported("records nested too deeply")
    for key in ("name", "fullname"):
        if key in schema:
            named.setdefault(schema[key], schema)
    for field in schema["fields"]:
        _emit_value(field["type"], targets.get(field["name"]), lines, pad, named, depth)


def _emit_value(
    schema: Any,
    target: Targets | str | None,
    lines: list[str],
    pad: str,
    named: dict[str, Any],
    depth: int,
) -> None:
    """Code reading one value at ``p`` into ``target`` (a local, a nested record's locals, or
    None: skipped). A value the model cannot use (text where a number is read, a number where
    a record is) raises, which hands the record to the slow path for its dead letter."""
    schema = _resolve(schema, named)
    if isinstance(schema, list):
        if len(schema) > 64:
            raise Unsupported("a union of more than 64 branches")
        lines.append(f"{pad}x = b[p]")  # a branch index below 64: one byte, zigzag
        lines.append(f"{pad}p += 1")
        for index, branch in enumerate(schema):
            lines.append(f"{pad}{'if' if index == 0 else 'elif'} x == {index * 2}:")
            _emit_value(branch, target, lines, pad + "    ", named, depth)
            lines.append(f"{pad}    pass")
        lines.append(f"{pad}else: raise ValueError('union branch out of range')")
        return
    kind = schema.get("type") if isinstance(schema, dict) else schema
    if isinstance(target, str) and kind not in (
        ID_TYPES if target in ("eid", "ent") else FEATURE_TYPES
    ):
        lines.append(f"{pad}raise ValueError('{kind} where the model reads {target}')")
        return
    if isinstance(target, dict) and kind not in ("record", "null"):
        lines.append(f"{pad}raise ValueError('{kind} where the model reads a record')")
        return
    if isinstance(schema, dict):
        assert not isinstance(target, str), "refused above: a named type is not a number or id"
        _emit_named(schema, target, lines, pad, named, depth)
        return
    _emit_primitive(schema, f"{target} = " if isinstance(target, str) else "", lines, pad)


def _emit_primitive(schema: str, store: str, lines: list[str], pad: str) -> None:
    """Code reading a primitive at ``p``; ``store`` assigns it (empty: skipped)."""
    if schema == "null":
        pass  # every local starts as None
    elif schema == "boolean":
        lines.append(f"{pad}p += 1")
    elif schema in ("int", "long"):
        lines.append(f"{pad}x = b[p]")
        lines.append(f"{pad}if x < 128: p += 1")
        lines.append(f"{pad}else: x, p = varint(b, p)")
        if store:
            lines.append(f"{pad}{store}(x >> 1) ^ -(x & 1)")
    elif schema in ("float", "double"):
        if store:
            lines.append(f"{pad}{store}unpack_{schema}(b, p)[0]")
        lines.append(f"{pad}p += {4 if schema == 'float' else 8}")
    elif schema in ("string", "bytes"):
        lines.append(f"{pad}n = b[p]")
        lines.append(f"{pad}if n < 128: p += 1")
        lines.append(f"{pad}else: n, p = varint(b, p)")
        lines.append(f"{pad}n = (n >> 1) ^ -(n & 1)")
        lines.append(f"{pad}if n < 0: raise ValueError('negative length')")
        if schema == "string":  # decoded even when skipped: fastavro refuses bad UTF-8
            lines.append(f"{pad}{store}b[p:p + n].decode()")
        lines.append(f"{pad}p += n")
    else:
        raise Unsupported(f"type {schema}")


def _emit_named(
    schema: dict[str, Any],
    target: Targets | None,
    lines: list[str],
    pad: str,
    named: dict[str, Any],
    depth: int,
) -> None:
    """Records, enums, fixed, arrays and maps: a record is read into a nested target or
    skipped; the others are skipped (the model reads none of them)."""
    kind = schema.get("type")
    if kind == "record":
        named.setdefault(schema["name"], schema)
        _emit_record(schema, target or {}, lines, pad, named, depth + 1)
    elif kind == "enum":
        named.setdefault(schema["name"], schema)
        lines.append(f"{pad}x, p = varint(b, p)")
        lines.append(f"{pad}if x >> 1 >= {len(schema['symbols'])}: raise ValueError('enum')")
    elif kind == "fixed":
        named.setdefault(schema["name"], schema)
        lines.append(f"{pad}p += {int(schema['size'])}")
    elif kind in ("array", "map"):
        _emit_skip_blocks(schema, lines, pad, named, depth)
    else:
        raise Unsupported(f"type {kind}")


def _emit_skip_blocks(
    schema: dict[str, Any], lines: list[str], pad: str, named: dict[str, Any], depth: int
) -> None:
    """Skip an array's or a map's blocks: a count (zigzag long), then that many items (a map
    item: a string key, then its value), until a count of 0; a negative count is followed by
    the block's size in bytes, which is jumped. A count larger than the record is refused
    (items of no bytes, nulls, would otherwise loop for as long as the count says)."""
    if depth > 8:
        raise Unsupported("arrays or maps nested too deeply")
    count = f"k{depth}"
    lines += [
        f"{pad}while True:",
        f"{pad}    {count}, p = varint(b, p)",
        f"{pad}    {count} = ({count} >> 1) ^ -({count} & 1)",
        f"{pad}    if {count} == 0: break",
        f"{pad}    if {count} < 0:",
        f"{pad}        n, p = varint(b, p)",
        f"{pad}        n = (n >> 1) ^ -(n & 1)",
        f"{pad}        if n < 0 or p + n > len(b): raise ValueError('bad block size')",
        f"{pad}        p += n",
        f"{pad}        continue",
        f"{pad}    if {count} > len(b): raise ValueError('block count beyond the record')",
        f"{pad}    for _ in range({count}):",
    ]
    if schema["type"] == "map":
        _emit_value("string", None, lines, pad + "        ", named, depth + 1)
        item = schema["values"]
    else:
        item = schema["items"]
    _emit_value(item, None, lines, pad + "        ", named, depth + 1)
    lines.append(f"{pad}        pass")
