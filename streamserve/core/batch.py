"""The batch as it flows: raw records -> decoded events -> feature matrix -> scores -> outputs.

Pure: no Kafka, no Redis, no clock. ``runtime/pipeline.py`` calls the stages in order, does the
I/O between them and times it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, TypedDict

import msgspec
import numpy as np

from streamserve.core import records as rec
from streamserve.core.decoding.events import DecodedEvents, EventDecoder, Rejection
from streamserve.core.decoding.formats import FramedDecoder, InputFormat, WriterSchemas
from streamserve.core.features import FeatureLayout, StoreKey, StoreKeys, StoreLookup, StoreRows
from streamserve.core.model import ModelBundle

MAX_REASON_CHARS = 500
MAX_DEAD_LETTER_BYTES = 900_000  # below librdkafka's and Kafka's default 1 MB message limit
Headers = list[tuple[str, str | bytes | None]]


class SourceRecord(Protocol):
    """What the core reads of a consumed record; confluent_kafka.Message satisfies it."""

    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def timestamp(self) -> tuple[int, int]: ...
    def headers(self) -> Any: ...  # a list of (name, value) pairs, or None


class FeatureStore(Protocol):
    """The one thing scoring needs of a feature store."""

    def fetch(self, keys: list[StoreKey]) -> StoreRows:
        """Store-feature rows for ``keys`` (float32, manifest order), NaN where absent."""
        ...


class PlainRecord(TypedDict):
    """A record to produce without headers (a prediction): the shape confluent-kafka's
    ``Producer.produce_batch`` takes, so the sink hands a whole batch over in one call."""

    key: bytes | None
    value: bytes | None


class OutputRecord(NamedTuple):
    """A record to produce with headers (a dead letter): the Sink only moves these bytes."""

    key: bytes | None
    value: bytes | None
    headers: Headers
    timestamp_ms: int | None = None  # None: the producer's clock


Position = tuple[str, int, int]  # (topic, partition, offset) of a consumed record
PREDICTION_FIELDS = rec.Prediction.__struct_fields__


@dataclass
class PreparedBatch:
    """Records decoded and store keys computed; ready for the feature lookup."""

    records: Sequence[SourceRecord]
    positions: list[Position]  # one per record
    events: DecodedEvents
    rejections: list[Rejection]
    store_keys: StoreKeys


def positions_of(records: Sequence[SourceRecord]) -> list[Position]:
    """Where each record was read from: what provenance and offsets are made of."""
    return [(r.topic(), r.partition(), r.offset()) for r in records]  # type: ignore[misc]


@dataclass(frozen=True)
class Inference:
    """One model's store lookup and scores of a prepared batch."""

    batch: PreparedBatch
    lookup: StoreLookup
    matrix: np.ndarray  # float32 model input, one row per decoded event
    scores: np.ndarray


@dataclass
class BatchOutputs:
    """Everything produced from one batch, and what the metrics need to know about it."""

    predictions: list[PlainRecord]
    dead_letters: list[OutputRecord]
    dead_letter_classes: Counter[str]
    latencies_ms: np.ndarray  # float64, one per prediction; NaN where no record timestamp
    missing_by_feature: dict[str, int]  # features missing from at least one prediction
    store_keys: int
    store_misses: int  # store keys the store held no value for
    model_version: str
    degraded: bool = False
    stale_keys: int = 0  # store keys whose every value was too old for the model
    partly_stale_keys: int = 0  # store keys with some values too old, some kept
    feature_ages_s: np.ndarray = field(default_factory=lambda: np.empty(0))
    cache_hits: int = 0  # store keys answered by the local cache
    shadow: ShadowBatch | None = None  # the challenger's scores of the same events


@dataclass(frozen=True)
class ShadowBatch:
    """A challenger model's predictions of a batch (for the shadow topic) and how they compare
    with the served model's."""

    predictions: list[PlainRecord]
    model_version: str
    abs_deltas: np.ndarray  # |challenger - champion| primary score, per event both scored
    flips: int  # events whose decision differs (threshold, or argmax of a multi-output model)


class BatchScorer:
    """Turns a batch of raw records into prediction and dead-letter records for one model."""

    def __init__(
        self,
        bundle: ModelBundle,
        input_format: InputFormat = "json",
        schemas: WriterSchemas | None = None,
        encode_prediction: Callable[[rec.Prediction], bytes] | None = None,
    ) -> None:
        """``schemas`` resolves writer schema ids for the Schema Registry input formats;
        ``encode_prediction`` writes a prediction's value (default: JSON)."""
        self.bundle = bundle
        self.layout = FeatureLayout(bundle.manifest)
        events = EventDecoder(bundle.manifest)
        if input_format == "json":
            self._decode = events.decode
        else:
            if schemas is None:
                raise ValueError(f"input format {input_format} needs a WriterSchemas port")
            self._decode = FramedDecoder(events, input_format, schemas).decode
        self._encode = encode_prediction or msgspec.json.Encoder().encode

    def prepare(
        self, records: Sequence[SourceRecord], positions: list[Position] | None = None
    ) -> PreparedBatch:
        """Decode ``records`` (whose ``positions`` may be known already)."""
        events, rejections = self._decode([r.value() for r in records])
        keys = self.layout.store_keys(events.entity_ids)
        return PreparedBatch(records, positions or positions_of(records), events, rejections, keys)

    def predict(
        self, batch: PreparedBatch, store_rows: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Assemble the float32 matrix and score it with one booster call."""
        matrix = self.layout.assemble(
            batch.events.event_features, store_rows, batch.store_keys.key_index
        )
        return matrix, self.bundle.predict(matrix)

    def encode(self, inference: Inference, scored_at_ms: int, batch_id: str) -> BatchOutputs:
        """Prediction records for the scored events, dead letters for the rejected ones;
        ``lookup.degraded`` flags predictions made without the store's features."""
        batch, lookup = inference.batch, inference.lookup
        missing = np.isnan(inference.matrix)
        columns, latencies = self._prediction_columns(inference, missing, scored_at_ms, batch_id)
        encode, make = self._encode, rec.Prediction
        entity_ids = batch.events.entity_ids
        keys = {entity: _key_bytes(entity) for entity in dict.fromkeys(entity_ids)}
        predictions: list[PlainRecord] = [
            {"key": keys[entity_id], "value": encode(prediction)}
            for entity_id, prediction in zip(entity_ids, map(make, *columns), strict=True)
        ]
        dead_letters = [
            dead_letter(batch.records[r.index], r, batch_id, scored_at_ms) for r in batch.rejections
        ]
        names = self.layout.feature_names
        return BatchOutputs(
            predictions=predictions,
            dead_letters=dead_letters,
            dead_letter_classes=Counter(r.error_class for r in batch.rejections),
            latencies_ms=latencies,
            missing_by_feature={
                names[i]: n for i, n in enumerate(missing.sum(axis=0).tolist()) if n
            },
            store_keys=len(batch.store_keys.keys),
            store_misses=lookup.absent,
            model_version=self.bundle.manifest.version,
            degraded=lookup.degraded,
            stale_keys=lookup.stale,
            partly_stale_keys=lookup.partly_stale,
            feature_ages_s=lookup.ages_s,
            cache_hits=lookup.cache_hits,
        )

    def _prediction_columns(
        self, inference: Inference, missing: np.ndarray, scored_at_ms: int, batch_id: str
    ) -> tuple[list[Sequence[Any]], np.ndarray]:
        """One column per ``Prediction`` field, in its declaration's order (a field without
        a column here fails the first batch), and the latencies in milliseconds."""
        batch, events = inference.batch, inference.batch.events
        records, positions = batch.records, batch.positions
        if batch.rejections:
            records = [records[i] for i in events.indices]
            positions = [positions[i] for i in events.indices]
        count = len(records)
        timestamps = np.fromiter((r.timestamp()[1] for r in records), dtype=np.float64, count=count)
        timestamps[timestamps <= 0] = np.nan
        latencies = scored_at_ms - timestamps
        manifest = self.bundle.manifest
        primary, every = _split_outputs(inference.scores)
        threshold = manifest.decision_threshold if every is None else None
        topics, partitions, offsets = zip(*positions, strict=True) if count else ((), (), ())
        by_field: dict[str, Sequence[Any]] = {
            "event_id": events.event_ids,
            "entity_id": events.entity_ids,
            "score": primary,
            "model_name": [manifest.name] * count,
            "model_version": [manifest.version] * count,
            "scored_at_ms": [scored_at_ms] * count,
            "event_time_ms": [None if t != t else int(t) for t in timestamps.tolist()],
            "latency_ms": [None if v != v else v for v in latencies.tolist()],
            "missing_features": missing.sum(axis=1).tolist(),
            "source_topic": topics,
            "source_partition": partitions,
            "source_offset": offsets,
            "batch_id": [batch_id] * count,
            "schema_version": [rec.PREDICTION_SCHEMA_VERSION] * count,
            "scores": every or [None] * count,
            "degraded": [inference.lookup.degraded] * count,
            "decision": [None] * count
            if threshold is None
            else (inference.scores >= threshold).tolist(),
            "threshold": [threshold] * count,
        }
        return [by_field[name] for name in PREDICTION_FIELDS], latencies


def _key_bytes(entity_id: str | int) -> bytes:
    """A prediction's key: the entity id as UTF-8 text."""
    return entity_id.encode() if isinstance(entity_id, str) else str(entity_id).encode()


def dead_letter(
    record: SourceRecord, rejection: Rejection, batch_id: str, failed_at_ms: int
) -> OutputRecord:
    """The original key, value and timestamp, untouched, with headers naming the error, the
    source, when it failed and the worker it failed in.

    A record so big that the dead letter would pass ``MAX_DEAD_LETTER_BYTES`` keeps its key but
    loses its value and original headers (the reason says so): it is still on the input topic,
    where the source headers point, and an unpublishable dead letter would stop the worker.
    """
    headers: Headers = list(record.headers() or [])
    reason = rejection.reason[:MAX_REASON_CHARS]
    key, value = record.key(), record.value()
    size = len(key or b"") + len(value or b"") + sum(len(k) + len(v or b"") for k, v in headers)
    if size > MAX_DEAD_LETTER_BYTES:
        reason = f"{reason[:200]} (original value and headers, {size} bytes, left out: too large)"
        value, headers = None, []
    headers += [
        (rec.HEADER_ERROR_CLASS, rejection.error_class),
        (rec.HEADER_ERROR_REASON, reason),
        (rec.HEADER_SOURCE_TOPIC, record.topic() or ""),
        (rec.HEADER_SOURCE_PARTITION, str(record.partition())),
        (rec.HEADER_SOURCE_OFFSET, str(record.offset())),
        (rec.HEADER_BATCH_ID, batch_id),
        (rec.HEADER_FAILED_AT, str(failed_at_ms)),
        (rec.HEADER_WORKER_ID, rec.worker_of(batch_id)),
    ]
    kind, timestamp_ms = record.timestamp()
    return OutputRecord(key, value, headers, timestamp_ms if kind and timestamp_ms > 0 else None)


def _split_outputs(scores: np.ndarray) -> tuple[list[float], list[list[float]] | None]:
    """A single-output model gives one score per row; a multi-output one also lists them all."""
    if scores.ndim == 1:
        return scores.tolist(), None
    return scores.max(axis=1).tolist(), scores.tolist()
