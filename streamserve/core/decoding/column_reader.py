"""Batch readers generated per writer schema: framed records straight to columns.

A reader is a Python function written once per (writer schema, model) by a format's compiler
(``avro_reader``, ``protobuf_reader``). It walks each record's bytes, keeps the model's fields
in local variables and appends them to the batch's columns: no dict, no msgspec conversion, no
function call per record. It accepts only records it can read without doubt (ids present and
valid, features numbers or absent); every other record is handed back to be decoded the slow,
general way (the format's own library, then the event type's validation), which gives it its
dead-letter class and reason. So the fast path changes speed, never outcomes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from streamserve.core.records import MAX_ID_CHARS

# (values, indices to read, then the columns to append to: batch index, event id, entity id,
# flat features) -> the indices it handed back
BatchReader = Callable[
    [Sequence[bytes], Sequence[int], list[int], list[Any], list[Any], list[Any]], list[int]
]
Targets = dict[str, "Targets | str"]  # field name -> local variable, or a nested message's


class Unsupported(Exception):
    """A schema the compiler leaves to the slow path (the format's own library)."""


@dataclass(frozen=True)
class Wanted:
    """The fields a model reads from an event: its two ids and its feature paths in column
    order (dotted paths name fields of nested records)."""

    event_id: str
    entity_id: str
    features: tuple[str, ...]

    def targets(self) -> Targets:
        """Field tree -> the local variable each field is read into: ``eid``, ``ent``, and
        ``c0``... in column order."""
        tree: Targets = {self.event_id: "eid", self.entity_id: "ent"}
        for column, path in enumerate(self.features):
            *parents, leaf = path.split(".")
            node = tree
            for part in parents:
                child = node.setdefault(part, {})
                if isinstance(child, str):
                    raise Unsupported(f"{part} is both a value and a record")
                node = child
            node[leaf] = f"c{column}"
        return tree

    def locals(self) -> list[str]:
        return ["eid", "ent", *(f"c{column}" for column in range(len(self.features)))]


def assemble(
    wanted: Wanted, start: list[str], body: list[str], scope: dict[str, Any]
) -> BatchReader:
    """Wrap a record's decoding code (``start``: the framing checks, setting ``p``; ``body``:
    the fields into their locals) in the batch loop. Any exception, or an id that is absent or
    not a valid id, hands the record back."""
    features = "".join(f"c{column}, " for column in range(len(wanted.features)))
    lines = [
        "def read(values, indices, hits, eids, ents, feats):",
        "    slow = []",
        "    hit, add_eid, add_ent, add = hits.append, eids.append, ents.append, feats.extend",
        "    for i in indices:",
        "        b = values[i]",
        "        try:",
        *(f"            {line}" for line in start),
        f"            {' = '.join(wanted.locals())} = None",
        *(f"            {line}" for line in body),
        "        except Exception:",
        "            slow.append(i)",
        "            continue",
        f"        if not ({_valid_id('eid')} and {_valid_id('ent')}):",
        "            slow.append(i)",
        "            continue",
        "        hit(i)",
        "        add_eid(eid)",
        "        add_ent(ent)",
        f"        add(({features}))",
        "    return slow",
    ]
    namespace = dict(scope)
    exec("\n".join(lines), namespace)  # generated from the schema's field list only
    reader: BatchReader = namespace["read"]
    return reader


def _valid_id(name: str) -> str:
    """Code: is ``name`` an id as the event type accepts it, a string of 1 to MAX_ID_CHARS
    characters or an int (not a bool, not None)?"""
    return (
        f"(({name}.__class__ is str and 0 < len({name}) <= {MAX_ID_CHARS}) "
        f"or {name}.__class__ is int)"
    )


def varint(b: bytes, p: int) -> tuple[int, int]:
    """An unsigned base-128 varint at ``p`` (at most 10 bytes): (value, next position)."""
    value, shift = 0, 0
    while True:
        byte = b[p]
        p += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, p
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")
