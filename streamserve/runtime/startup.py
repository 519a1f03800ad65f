"""What both runtimes (confluent.py, faust.py) do before the first record, and their wall clock."""

from __future__ import annotations

import time

from threadpoolctl import threadpool_limits

from streamserve.config import Settings
from streamserve.core.model import ModelBundle, load_bundle
from streamserve.errors import ConfigError
from streamserve.io import kafka as kafka_io
from streamserve.io import store as store_io


def wall_ms() -> int:
    """Wall-clock milliseconds, as stamped on predictions and metrics records."""
    return time.time_ns() // 1_000_000


def load_model_and_store(settings: Settings) -> tuple[ModelBundle, store_io.ResilientStore]:
    """The model bundle (manifest checked against booster) and the feature store behind retries
    and a circuit breaker, after one ping."""
    if settings.model_dir is None:
        raise ConfigError("STREAMSERVE_MODEL_DIR is not set; point it at a model bundle directory")
    # XGBoost's nthread does not cover every OpenMP region; without this cap an extra OpenMP
    # thread per core spins between predict calls and doubles the worker's CPU per event.
    threadpool_limits(settings.predict_threads, user_api="openmp")
    bundle = load_bundle(settings.model_dir, nthread=settings.predict_threads)
    redis_client = store_io.connect(
        settings.redis_url.get_secret_value(), settings.redis_timeout_s, settings.redis_cluster
    )
    redis_store = store_io.RedisFeatureStore(redis_client, bundle.manifest)
    redis_store.ping()
    feature_store = store_io.ResilientStore(
        redis_store,
        retries=settings.store_retries,
        backoff_s=settings.store_retry_backoff_ms / 1000,
        reset_s=settings.store_breaker_reset_s,
    )
    return bundle, feature_store


def prepare_topics(settings: Settings) -> None:
    """Create the missing topics, or with STREAMSERVE_CREATE_TOPICS=false require them."""
    admin = kafka_io.make_admin(settings)
    if settings.create_topics:
        kafka_io.ensure_topics(admin, settings.topic_names(), settings.topic_partitions)
    else:
        kafka_io.require_topics(admin, settings.topic_names())
