"""Decode input events with one msgspec decoder built from the manifest.

The event type is generated once from the manifest: its id fields and one optional float field per
event feature (dotted paths become nested objects). Decoding a batch is one C call per record;
anything that does not decode becomes a ``Rejection`` with a class and a short reason.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np

from streamserve.core.decoding.column_reader import Wanted
from streamserve.core.model import Manifest
from streamserve.core.records import EntityId, ErrorClass, EventId


@dataclass(frozen=True)
class Rejection:
    """Why the record at ``index`` of a batch cannot be scored."""

    index: int
    error_class: ErrorClass
    reason: str


def feature_path_tree(manifest: Manifest) -> dict[str, Any]:
    """The event features' dotted paths as a tree: nested objects map to subtrees, features to
    None (check_manifest refuses a path that is both)."""
    tree: dict[str, Any] = {}
    for feature in manifest.event_features:
        *parents, leaf = feature.event_path.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = None
    return tree


def build_event_type(manifest: Manifest) -> type[msgspec.Struct]:
    """A msgspec Struct type that decodes exactly the fields the manifest reads from an event."""
    tree = feature_path_tree(manifest)
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = [
        (manifest.event.id_field, EventId),
        (manifest.event.entity_field, EntityId),
    ]
    fields.extend(_struct_fields(tree, "Event"))
    return msgspec.defstruct("Event", fields, forbid_unknown_fields=False)


def _struct_fields(tree: dict[str, Any], prefix: str) -> list[tuple[str, Any, Any]]:
    fields: list[tuple[str, Any, Any]] = []
    for name, child in tree.items():
        if child is None:
            fields.append((name, float | None, None))
        else:
            sub = msgspec.defstruct(f"{prefix}_{name}", _struct_fields(child, f"{prefix}_{name}"))
            fields.append((name, sub | None, None))
    return fields


@dataclass
class DecodedEvents:
    """The records of a batch that decoded, with their batch indices and feature columns."""

    indices: list[int]
    event_ids: list[Any]
    entity_ids: list[Any]
    event_features: np.ndarray  # float32 (len(indices), event feature count); NaN = missing

    def merged(self, other: DecodedEvents) -> DecodedEvents:
        """The events of both, in batch order."""
        if not other.indices:
            return self
        if not self.indices:
            return other
        return DecodedEvents(
            self.indices + other.indices,
            self.event_ids + other.event_ids,
            self.entity_ids + other.entity_ids,
            np.concatenate([self.event_features, other.event_features]),
        ).in_order()

    def in_order(self) -> DecodedEvents:
        """The events sorted by batch index."""
        order = sorted(range(len(self.indices)), key=self.indices.__getitem__)
        return DecodedEvents(
            [self.indices[i] for i in order],
            [self.event_ids[i] for i in order],
            [self.entity_ids[i] for i in order],
            self.event_features[order],
        )


class EventDecoder:
    """Decodes raw values into ids and an event-feature matrix; bad records are rejected."""

    def __init__(self, manifest: Manifest) -> None:
        self._type = build_event_type(manifest)
        self._decoder = msgspec.json.Decoder(self._type)
        self._id_field = manifest.event.id_field
        self._entity_field = manifest.event.entity_field
        self._event_id = operator.attrgetter(self._id_field)
        self._entity_id = operator.attrgetter(self._entity_field)
        self._paths = [f.event_path for f in manifest.event_features]
        self._getters: list[Callable[[Any], Any]] = [_path_getter(p) for p in self._paths]
        # attrgetter of several paths returns a tuple; of one path, a bare value
        self._all_features: Callable[[Any], Any] | None = (
            operator.attrgetter(*self._paths) if self._paths else None
        )

    def wanted(self) -> Wanted:
        """The fields an event is read for, as batch readers take them."""
        return Wanted(self._id_field, self._entity_field, tuple(self._paths))

    def decode(self, values: Sequence[bytes | None]) -> tuple[DecodedEvents, list[Rejection]]:
        """Decode a batch of raw JSON values; returns the good events and one Rejection per bad
        one."""
        events, indices, rejections = self._decode_all(values, self._decoder.decode)
        return self._finish(events, indices, rejections)

    def decode_framed(
        self,
        values: Sequence[Any],
        origin: Sequence[int],
        rejections: list[Rejection],
        objects: bool,
    ) -> tuple[DecodedEvents, list[Rejection]]:
        """Decode what a wire format unwrapped: JSON bytes, or (``objects``) the Python objects
        a schema reader made; ``origin[i]`` is the batch index of ``values[i]``, and
        ``rejections`` those the unwrapping made already."""
        convert = self._convert if objects else self._decoder.decode
        events, positions, found = self._decode_all(values, convert)
        indices = [origin[p] for p in positions]
        rejections = rejections + [
            Rejection(origin[r.index], r.error_class, r.reason) for r in found
        ]
        rejections.sort(key=lambda r: r.index)
        return self._finish(events, indices, rejections)

    def _convert(self, value: Any) -> Any:
        return msgspec.convert(value, self._type)

    def from_columns(
        self,
        indices: list[int],
        event_ids: list[Any],
        entity_ids: list[Any],
        features: list[Any],
    ) -> tuple[DecodedEvents, list[Rejection]]:
        """Events a batch reader read already: valid ids, and ``features`` flat, row after row
        (numbers, or None for missing); events with a feature out of float32 range are
        rejected, as in every other path."""
        with np.errstate(over="ignore"):
            flat = np.array(features, dtype=np.float64).astype(np.float32)
        columns = flat.reshape(len(indices), len(self._paths))
        return self._checked(indices, event_ids, entity_ids, columns, [])

    def _finish(
        self, events: list[Any], indices: list[int], rejections: list[Rejection]
    ) -> tuple[DecodedEvents, list[Rejection]]:
        return self._checked(
            indices,
            list(map(self._event_id, events)),
            list(map(self._entity_id, events)),
            self._feature_columns(events),
            rejections,
        )

    def _checked(
        self,
        indices: list[int],
        event_ids: list[Any],
        entity_ids: list[Any],
        columns: np.ndarray,
        rejections: list[Rejection],
    ) -> tuple[DecodedEvents, list[Rejection]]:
        """Reject the events with a feature out of float32 range (a number that turned inf)."""
        out_of_range = ~np.isfinite(columns) & ~np.isnan(columns)
        if out_of_range.any():
            keep = ~out_of_range.any(axis=1)
            for row, col in zip(*np.nonzero(out_of_range), strict=True):
                reason = f"number out of float32 range - at `$.{self._paths[col]}`"
                rejections.append(Rejection(indices[row], "invalid_feature", reason))
            kept = np.flatnonzero(keep).tolist()
            indices = [indices[r] for r in kept]
            event_ids = [event_ids[r] for r in kept]
            entity_ids = [entity_ids[r] for r in kept]
            columns = columns[keep]
            rejections = _first_per_index(rejections)
        return DecodedEvents(indices, event_ids, entity_ids, columns), rejections

    def _decode_all(
        self, values: Sequence[Any], decode: Callable[[Any], Any]
    ) -> tuple[list[Any], list[int], list[Rejection]]:
        """Decode in C runs between bad records: ``list.extend`` keeps what ``map`` decoded
        before a record raised, so a bad record costs one exception, not a slower loop."""
        events: list[Any] = []
        indices: list[int] = []
        rejections: list[Rejection] = []
        start, total = 0, len(values)
        while start < total:
            before = len(events)
            try:
                events.extend(map(decode, values[start:] if start else values))
            except (msgspec.MsgspecError, TypeError, RecursionError) as exc:
                bad = start + len(events) - before
                indices.extend(range(start, bad))
                rejections.append(self._classify(bad, values[bad], exc))
                start = bad + 1
                continue
            indices.extend(range(start, total))
            break
        return events, indices, rejections

    def _feature_columns(self, events: list[Any]) -> np.ndarray:
        width = len(self._paths)
        if self._all_features is None:
            return np.empty((len(events), 0), dtype=np.float32)
        try:  # fast path: no null parent object (one C call per event reads every feature)
            rows = list(map(self._all_features, events))
            with np.errstate(over="ignore"):
                return np.array(rows, dtype=np.float64).astype(np.float32).reshape(-1, width)
        except AttributeError:  # a null parent object (numpy turns a null feature into NaN)
            pass
        matrix = np.empty((len(events), width), dtype=np.float32)
        for col, getter in enumerate(self._getters):
            values = [getter(e) for e in events]
            if None in values:
                values = [np.nan if v is None else v for v in values]
            with np.errstate(over="ignore"):
                matrix[:, col] = np.asarray(values, dtype=np.float64)
        return matrix

    def _classify(self, index: int, value: Any, exc: Exception) -> Rejection:
        if value is None or (isinstance(value, bytes | memoryview) and not len(value)):
            return Rejection(index, "empty_value", "record value is empty")
        if isinstance(exc, RecursionError):  # msgspec's decoder recurses per nesting level
            return Rejection(index, "invalid_event", "JSON nested too deeply to decode")
        message = str(exc)
        if isinstance(exc, msgspec.DecodeError) and not isinstance(exc, msgspec.ValidationError):
            return Rejection(index, "malformed_json", f"malformed JSON: {message}")
        absent = "missing required field" in message or "got `null`" in message
        if absent and _names_field(message, self._entity_field):
            return Rejection(index, "missing_entity_id", message)
        if absent and _names_field(message, self._id_field):
            return Rejection(index, "missing_event_id", message)
        if any(f"`$.{path}`" in message for path in self._paths):
            return Rejection(index, "invalid_feature", message)
        return Rejection(index, "invalid_event", message)


def _names_field(message: str, field: str) -> bool:
    return f"`$.{field}`" in message or f"field `{field}`" in message


def _path_getter(path: str) -> Callable[[Any], Any]:
    parts = path.split(".")
    if len(parts) == 1:
        return operator.attrgetter(parts[0])

    def get(event: Any) -> Any:
        node = event
        for part in parts:
            node = getattr(node, part)
            if node is None:
                return None
        return node

    return get


def _first_per_index(rejections: list[Rejection]) -> list[Rejection]:
    seen: dict[int, Rejection] = {}
    for rejection in rejections:
        seen.setdefault(rejection.index, rejection)
    return sorted(seen.values(), key=lambda r: r.index)
