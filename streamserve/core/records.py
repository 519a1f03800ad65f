"""Typed records on the output topics; schemas/ is generated from these types.

Provenance (source topic, partition and offset, batch id) travels in a prediction's value: five
Kafka headers per record cost the producer about 6 µs of CPU per prediction, three times the
fields' cost in the JSON. A dead letter's value is the original bytes, so its provenance is in
headers, whose names are defined once here, by the field names of ``DeadLetterHeaders``.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal, get_args

import msgspec

MAX_ID_CHARS = 1024  # a longer id is refused: it would make an oversized output key and record
EntityId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_CHARS)] | int
EventId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_CHARS)] | int
Int32 = Annotated[int, msgspec.Meta(extra={"bits": 32})]  # Avro int, Protobuf int32

ErrorClass = Literal[
    "empty_value",  # tombstone or zero-length value
    "malformed_json",  # not JSON at all
    "invalid_event",  # JSON, but not an object of the expected shape
    "missing_entity_id",  # the entity id field is absent or null
    "missing_event_id",  # the event id field is absent or null
    "invalid_feature",  # a feature is not a number, or out of float32 range
    "not_framed",  # Avro/Protobuf/JSON Schema input without the Schema Registry framing
    "unknown_schema",  # its schema id is not in the registry, or of another format
    "undecodable",  # the payload does not decode with its writer schema
]

ERROR_CLASSES: tuple[str, ...] = get_args(ErrorClass)

HEADER_SOURCE_TOPIC = "streamserve-source-topic"
HEADER_SOURCE_PARTITION = "streamserve-source-partition"
HEADER_SOURCE_OFFSET = "streamserve-source-offset"
HEADER_BATCH_ID = "streamserve-batch-id"
HEADER_ERROR_CLASS = "streamserve-error-class"
HEADER_ERROR_REASON = "streamserve-error-reason"
HEADER_FAILED_AT = "streamserve-failed-at"
HEADER_WORKER_ID = "streamserve-worker-id"


PREDICTION_SCHEMA_VERSION: Final = 2  # 2: event_time_ms, schema_version, decision, threshold


# The JSON Schema, Avro and Protobuf schemas of predictions are derived from this declaration
# (``prediction_schemas``); a Protobuf field's number is its position here: new fields go last.
class Prediction(msgspec.Struct, omit_defaults=True):
    """One scored event, published keyed by entity id."""

    event_id: EventId
    entity_id: EntityId
    score: float
    model_name: str
    model_version: str
    scored_at_ms: int
    event_time_ms: int | None  # the input record's timestamp; None when it carries none
    latency_ms: float | None  # scored_at_ms - event_time_ms; None without a timestamp
    missing_features: Int32
    source_topic: str  # provenance: the input record this prediction scored
    source_partition: Int32
    source_offset: int
    batch_id: str
    # PREDICTION_SCHEMA_VERSION: which fields a reader can expect (the schema's `$id` names it)
    schema_version: Literal[2]
    scores: list[float] | None = None  # every output of a multi-output model
    degraded: bool = False  # scored without store features: the feature store was down
    decision: bool | None = None  # score >= threshold, when the manifest sets a threshold
    threshold: float | None = None  # the manifest's decision_threshold that decided it


class Provenance(msgspec.Struct):
    """The provenance fields of a prediction, for readers that need nothing else (audit)."""

    source_topic: str
    source_partition: int
    source_offset: int


class DeadLetterHeaders(msgspec.Struct):
    """Kafka headers added to a dead letter; key and value stay the original bytes."""

    error_class: ErrorClass = msgspec.field(name=HEADER_ERROR_CLASS)
    error_reason: str = msgspec.field(name=HEADER_ERROR_REASON)
    source_topic: str = msgspec.field(name=HEADER_SOURCE_TOPIC)
    source_partition: str = msgspec.field(name=HEADER_SOURCE_PARTITION)
    source_offset: str = msgspec.field(name=HEADER_SOURCE_OFFSET)
    batch_id: str = msgspec.field(name=HEADER_BATCH_ID)
    failed_at: str = msgspec.field(name=HEADER_FAILED_AT)  # epoch milliseconds, in decimal
    worker_id: str = msgspec.field(name=HEADER_WORKER_ID)


def batch_id(worker_id: str, started_ms: int, seq: int) -> str:
    """``<worker id>-<worker start, hex ms>-<n>``: unique across workers and restarts."""
    return f"{worker_id}-{started_ms:x}-{seq}"


def worker_of(batch: str) -> str:
    """The worker id a ``batch_id`` starts with."""
    return batch.rsplit("-", 2)[0]


class LatencySummary(msgspec.Struct):
    """End-to-end latency (record timestamp to scoring) over an interval, in milliseconds."""

    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float


class TimingSummary(msgspec.Struct):
    """Per-batch wall time of one stage over an interval, in milliseconds."""

    total_ms: float
    mean_ms: float
    max_ms: float


class AgeSummary(msgspec.Struct):
    """Age of the store features read (now minus their `_ts`) over an interval, in seconds."""

    p50_s: float
    p99_s: float
    max_s: float


class ShadowSummary(msgspec.Struct):
    """How the challenger's scores compared with the served model's over an interval."""

    model_version: str
    compared: int  # events both models scored
    score_delta_mean: float  # mean |challenger - served| score
    score_delta_p99: float
    score_delta_max: float
    decision_flips: int  # events whose decision differs
    flip_rate: float


class PartitionLag(msgspec.Struct):
    """Records behind the log end on one assigned partition."""

    topic: str
    partition: int
    lag: int


class MetricsRecord(msgspec.Struct):
    """What one worker did over one interval, published to the metrics topic."""

    worker_id: str
    model_name: str
    model_version: str
    interval_start_ms: int
    interval_end_ms: int
    events_in: int
    predictions_out: int
    dead_letters: int
    dead_letters_by_class: dict[str, int]
    events_per_s: float
    lag: list[PartitionLag]
    total_lag: int
    latency: LatencySummary | None
    batches: int
    batches_by_trigger: dict[str, int]
    batch_size_mean: float
    batch_size_max: int
    lookup: TimingSummary | None
    predict: TimingSummary | None
    store_keys: int
    store_misses: int  # keys the store held no value for
    missing_features: dict[str, int]
    degraded_predictions: int  # scored without store features (policy degrade, store down)
    feature_store_up: bool  # the store's circuit is closed at the end of the interval
    predictions_by_model_version: dict[str, int]  # more than one when a new model took over
    store_stale: int  # keys whose every value was older than the model accepts: made missing
    store_partly_stale: int  # keys with some values too old (made missing), some kept
    feature_age: AgeSummary | None  # `hash` layout with `_ts` only
    cache_hits: int  # store keys answered by the local feature cache
    cache_hit_rate: float | None  # cache_hits / store_keys; None with no keys looked up
    shadow: ShadowSummary | None  # with a challenger model only
