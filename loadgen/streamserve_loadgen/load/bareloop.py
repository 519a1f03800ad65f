"""The loop a user writes by hand, with no guarantees: the reference the worker must beat.

consume up to 2,000 records -> msgspec decode -> one MGET -> one ``inplace_predict`` -> produce
a small JSON prediction per event. No dead letters (a bad record is skipped), no provenance, no
metrics, offsets auto-committed whether or not the outputs were delivered. It reads the same
model bundle, Redis, topics and librdkafka options as the worker (the STREAMSERVE_* variables),
so the bench compares like with like; it decodes with the bundle's event type, as a user would
write a msgspec Struct for theirs.
"""

from __future__ import annotations

import operator
import threading
import time
from typing import Any

import msgspec
import numpy as np
import redis
import xgboost as xgb
from confluent_kafka import Consumer, Producer

from streamserve.config import Settings
from streamserve.core.decoding.events import build_event_type
from streamserve.core.model import read_manifest
from streamserve.runtime.summary import RunSummary

BATCH = 2_000


class Prediction(msgspec.Struct):
    event_id: str | int
    entity_id: str | int
    score: float


def run_bare_loop(settings: Settings, output_topic: str, stop: threading.Event) -> RunSummary:
    """Score the input topic to ``output_topic`` until idle for ``exit_when_idle_s``."""
    assert settings.model_dir is not None
    manifest = read_manifest(settings.model_dir)
    booster = xgb.Booster(model_file=str(settings.model_dir / manifest.model_file))
    booster.set_param({"nthread": 1})
    decode = msgspec.json.Decoder(build_event_type(manifest)).decode
    encode = msgspec.json.encode
    event_columns = [i for i, f in enumerate(manifest.features) if f.source == "event"]
    event_features = operator.attrgetter(*(manifest.features[i].event_path for i in event_columns))
    store_columns = [i for i, f in enumerate(manifest.features) if f.source == "store"]
    absent = np.full(len(store_columns), np.nan, dtype="<f4").tobytes()
    prefix, suffix = manifest.store.key_template.split("{entity_id}")
    store = redis.Redis.from_url(settings.redis_url.get_secret_value())
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": settings.group_id,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 10,
        }
    )
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "linger.ms": 5,
            **settings.rdkafka_common,
            **settings.rdkafka_producer,
        }
    )
    summary, last = RunSummary(), None

    def assigned(*_: object) -> None:
        nonlocal last
        last = time.monotonic()  # idle time counts from the assignment on

    consumer.subscribe([settings.input_topic], on_assign=assigned)
    while not stop.is_set():
        messages = consumer.consume(BATCH, 0.01)
        if not messages:
            idle = settings.exit_when_idle_s
            if idle and last is not None and time.monotonic() - last > idle:
                break
            continue
        last = time.monotonic()
        summary.record_arrived()
        events: list[Any] = []
        rows = []
        for message in messages:
            try:
                event = decode(message.value() or b"")
                rows.append(event_features(event))
                events.append(event)
            except (msgspec.MsgspecError, TypeError, AttributeError):
                pass  # no dead letters here
        matrix = np.empty((len(events), len(manifest.features)), dtype=np.float32)
        if events:
            matrix[:, event_columns] = np.array(rows, dtype=np.float64).reshape(len(events), -1)
            keys = [f"{prefix}{e.entity_id}{suffix}" for e in events]
            fetched: list[bytes | None] = store.mget(keys)  # type: ignore[assignment]
            vectors = b"".join(v or absent for v in fetched)
            matrix[:, store_columns] = np.frombuffer(vectors, "<f4").reshape(len(events), -1)
        scores = booster.inplace_predict(matrix).tolist() if events else []
        for event, score in zip(events, scores, strict=True):
            value = encode(Prediction(event.event_id, event.entity_id, score))
            producer.produce(output_topic, value, str(event.entity_id).encode())
        producer.poll(0)
        summary.batch_done(len(messages), len(events), 0, "size")
    producer.flush(30)
    consumer.close()
    return summary
