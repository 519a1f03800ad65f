"""Start-up, the one place a worker is assembled from its settings: models (feature store,
bundles, Schema Registry), topics, then the Kafka clients and the worker (``build_worker``);
the Faust runtime (faust.py) shares the first two."""

from __future__ import annotations

import base64
import json
import threading
from typing import Any

from threadpoolctl import threadpool_limits

from streamserve.config import Settings
from streamserve.core.decoding.formats import WriterSchemas
from streamserve.core.outputs import EncodePrediction
from streamserve.errors import ConfigError
from streamserve.io import kafka as kafka_io
from streamserve.io import store as store_io
from streamserve.io.registry import (
    RegistrySchemas,
    prediction_schema_id,
    registry_client,
    require_format,
)
from streamserve.runtime.confluent import Worker
from streamserve.runtime.identity import with_worker_id
from streamserve.runtime.models import ModelLoader
from streamserve.runtime.offsets import Unconfirmed


def load_models(settings: Settings) -> ModelLoader:
    """The served model and the challenger (each manifest checked against its booster), their
    feature readers behind one set of retries and circuit breaker, after one Redis ping; with a
    Schema Registry format, the registry checked and the prediction schema registered."""
    if settings.model_dir is None and settings.model_pointer_key is None:
        raise ConfigError("STREAMSERVE_MODEL_DIR is not set; point it at a model bundle directory")
    registry_formats = {settings.input_format, settings.output_format} - {"json"}
    for wire_format in registry_formats:
        require_format(wire_format)  # before connecting to anything
    # XGBoost's nthread does not cover every OpenMP region; without this cap an extra OpenMP
    # thread per core spins between predict calls and doubles the worker's CPU per event.
    threadpool_limits(settings.predict_threads, user_api="openmp")
    redis_client = store_io.connect(
        settings.redis_url.get_secret_value(), settings.redis_timeout_s, settings.redis_cluster
    )
    store_io.ping(redis_client)
    registry = registry_client(settings.schema_registry_config()) if registry_formats else None
    models = ModelLoader(
        settings,
        redis_client,
        writer_schemas(settings, registry),
        prediction_encoder(settings, registry),
    )
    models.start()
    return models


def writer_schemas(settings: Settings, registry: Any) -> WriterSchemas | None:
    """The input's writer schemas from ``registry`` (checked reachable) for the registry input
    formats; else None."""
    if settings.input_format == "json":
        return None
    schemas = RegistrySchemas(registry, settings.input_format)
    schemas.check()
    return schemas


def prediction_encoder(settings: Settings, registry: Any) -> EncodePrediction | None:
    """How predictions are written when STREAMSERVE_OUTPUT_FORMAT names a registry format (its
    schema registered in ``registry``, or looked up, under the prediction and shadow topics'
    subjects)."""
    if settings.output_format == "json":
        return None
    from streamserve.core import outputs, prediction_schemas

    topics = [settings.predictions_topic]
    if settings.shadow_model_dir is not None:
        topics.append(settings.shadow_topic)
    subjects = [f"{topic}-value" for topic in topics]
    auto = settings.schema_registry_auto_register
    if settings.output_format == "avro":
        schema = prediction_schemas.avro_schema()
        schema_id = prediction_schema_id(registry, subjects, "AVRO", json.dumps(schema), auto)
        return outputs.framed_avro(schema_id, schema)
    if settings.output_format == "protobuf":
        from google.protobuf import descriptor_pool, message_factory

        proto = prediction_schemas.proto_file()
        message = descriptor_pool.DescriptorPool().Add(proto).message_types_by_name["Prediction"]
        serialized = base64.b64encode(proto.SerializeToString()).decode()
        schema_id = prediction_schema_id(registry, subjects, "PROTOBUF", serialized, auto)
        return outputs.framed_protobuf(schema_id, message_factory.GetMessageClass(message))
    as_json = json.dumps(prediction_schemas.json_schema())
    return outputs.framed_json(prediction_schema_id(registry, subjects, "JSON", as_json, auto))


def prepare_topics(settings: Settings) -> None:
    """Create the missing topics, or with STREAMSERVE_CREATE_TOPICS=false require them."""
    admin = kafka_io.make_admin(settings)
    if settings.create_topics:
        kafka_io.ensure_topics(admin, settings.topic_names(), settings.topic_partitions)
    else:
        kafka_io.require_topics(admin, settings.topic_names())


def build_worker(settings: Settings, stop_event: threading.Event | None = None) -> Worker:
    """Validate everything a worker needs, in order, before it consumes a single record.

    Worker id (a slot on this host, unless STREAMSERVE_WORKER_ID names it) -> feature store
    reachable -> model bundles (manifest vs booster) -> topics -> clients.
    """
    settings = with_worker_id(settings)
    models = load_models(settings)
    prepare_topics(settings)
    producer = kafka_io.make_producer(settings, transactional=settings.exactly_once)
    if settings.exactly_once:
        # metrics records go outside the transactions (they are no input's outputs)
        metrics_producer = kafka_io.make_producer(settings)
        consumer = kafka_io.make_consumer(settings)
        return Worker(settings, models, consumer, producer, stop_event, metrics_producer)
    unconfirmed = Unconfirmed(settings.commit_interval_s, settings.commit_every_events)
    consumer = kafka_io.make_consumer(settings, on_commit=unconfirmed.on_commit)
    return Worker(settings, models, consumer, producer, stop_event, unconfirmed=unconfirmed)
