"""One frozen settings model: every tunable is a STREAMSERVE_* environment variable.

librdkafka options pass through untouched: ``STREAMSERVE_RDKAFKA_FETCH_WAIT_MAX_MS=10`` sets
``fetch.wait.max.ms`` on consumer and producer; ``STREAMSERVE_RDKAFKA_CONSUMER_*`` and
``STREAMSERVE_RDKAFKA_PRODUCER_*`` set an option on one client only. Underscores become dots.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from streamserve.config_env import (
    ENV_PREFIX,
    RDKAFKA_PREFIX,
    RdkafkaSource,
    env_name,
    mask_url,
)
from streamserve.errors import ConfigError

REDIS_SCHEMES = ("redis", "rediss", "unix")  # what redis-py's from_url reads
# exactly-once: how long the broker keeps a dead worker's open transaction (io/kafka.py says why)
TRANSACTION_TIMEOUT_MS = 10_000


class Settings(BaseSettings):
    """Effective configuration of a worker; see the README table for each variable."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="forbid")

    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers.")
    input_topic: str = Field("events", min_length=1, description="Topic the events are read from.")
    predictions_topic: str = Field("predictions", min_length=1, description="Prediction output.")
    dead_letter_topic: str = Field("dead-letters", min_length=1, description="Dead-letter output.")
    metrics_topic: str = Field("streamserve-metrics", min_length=1, description="Metrics output.")
    group_id: str = Field("streamserve", min_length=1, description="Kafka consumer group id.")
    create_topics: bool = Field(True, description="Create missing topics at start-up.")
    topic_partitions: int = Field(8, ge=1, le=10_000, description="Partitions of created topics.")
    redis_url: SecretStr = Field(
        SecretStr("redis://127.0.0.1:6379/0"), description="Feature store Redis URL."
    )
    redis_timeout_s: float = Field(1.0, gt=0, le=300, description="Redis socket timeout.")
    redis_cluster: bool = Field(
        False, description="STREAMSERVE_REDIS_URL names one node of a Redis Cluster."
    )
    store_outage_policy: Literal["wait", "degrade"] = Field(
        "wait",
        description="When Redis fails: wait (pause, keep offsets, resume) or degrade "
        "(score without store features, flagged).",
    )
    store_retries: int = Field(
        2, ge=0, le=20, description="Retries of a failed feature lookup before the circuit opens."
    )
    store_retry_backoff_ms: float = Field(
        50.0, ge=0, le=60_000, description="First retry pause; doubles per retry, at most 1 s."
    )
    store_breaker_reset_s: float = Field(
        1.0, gt=0, le=3600, description="While the circuit is open, probe Redis this often."
    )
    runtime: Literal["confluent", "faust"] = Field(
        "confluent", description="Worker runtime: confluent-kafka loop, or a faust-streaming app."
    )
    input_format: Literal["json", "avro", "protobuf", "json-schema"] = Field(
        "json",
        description="Event encoding: plain JSON, or Avro, Protobuf or JSON Schema in the "
        "Confluent wire format (needs STREAMSERVE_SCHEMA_REGISTRY_URL).",
    )
    output_format: Literal["json", "avro", "protobuf", "json-schema"] = Field(
        "json",
        description="Prediction encoding: plain JSON, or Avro, Protobuf or JSON Schema in the "
        "Confluent wire format, its schema registered under <topic>-value.",
    )
    schema_registry_auto_register: bool = Field(
        True,
        description="Register the prediction schema; false: it must be registered already.",
    )
    schema_registry_url: str | None = Field(
        None, min_length=1, description="Schema Registry URL(s), comma-separated."
    )
    schema_registry_basic_auth_user_info: SecretStr | None = Field(
        None, description="Schema Registry basic auth, as user:password."
    )
    schema_registry_ssl_ca_location: str | None = Field(
        None, min_length=1, description="CA bundle that verifies the Schema Registry."
    )
    schema_registry_ssl_certificate_location: str | None = Field(
        None, min_length=1, description="Client certificate for the Schema Registry (mTLS)."
    )
    schema_registry_ssl_key_location: str | None = Field(
        None, min_length=1, description="Client key for the Schema Registry (mTLS)."
    )
    model_dir: Path | None = Field(None, description="Model bundle directory (required).")
    model_pointer_key: str | None = Field(
        None,
        min_length=1,
        description="Redis key whose value, a bundle directory, wins over STREAMSERVE_MODEL_DIR.",
    )
    model_reload_s: float = Field(
        5.0,
        ge=0,
        le=3600,
        description="Check the bundle sources for a new model this often (0: off).",
    )
    shadow_model_dir: Path | None = Field(
        None, description="Challenger bundle: scores every batch too, to STREAMSERVE_SHADOW_TOPIC."
    )
    shadow_topic: str = Field(
        "shadow-predictions", min_length=1, description="The challenger's predictions."
    )
    feature_cache_ttl_s: float = Field(
        0.0,
        ge=0,
        le=86_400,
        description="Local feature cache TTL, capped by the model's max_age_s (0: no cache).",
    )
    feature_cache_size: int = Field(
        100_000, ge=1, le=100_000_000, description="Entities the local feature cache holds."
    )
    latency_target_ms: float = Field(
        0.0,
        ge=0,
        le=600_000,
        description="Adaptive batching: size batches to hold this end-to-end latency (0: off).",
    )
    max_batch_size: int = Field(1000, ge=1, le=100_000, description="Batch closes at this size.")
    max_wait_ms: float = Field(
        5.0,
        ge=0,
        le=60_000,
        description="The longest a batch waits for a busy scoring stage after its first "
        "record (a free stage takes it at once).",
    )
    # 64: behind a broker 10 ms away each way (acknowledgements after the linger and the round
    # trip), 16 full batches in flight held the drain to 0.875-0.929 of the bare loop's,
    # 64 to 0.939-0.94 (two runs each); at live rates batches are small, so few are in flight
    max_batches_in_flight: int = Field(
        64,
        ge=1,
        le=1000,
        description="Batches whose outputs may await the broker's acknowledgement at once.",
    )
    predict_threads: int = Field(1, ge=1, le=256, description="XGBoost nthread for predict.")
    predictor: Literal["auto", "xgboost", "onedal"] = Field(
        "auto",
        description="What scores a batch: xgboost (XGBoost's predict), onedal (oneDAL's, "
        "streamserve[onedal]) or auto (oneDAL when installed); a fast path is taken only when "
        "it gives XGBoost's scores within 1e-6 on a sample at load, else XGBoost's, logged.",
    )
    metrics_interval_s: float = Field(
        10.0, gt=0, le=3600, description="Seconds between metrics records."
    )
    commit_interval_ms: int = Field(
        1000,
        ge=10,
        le=600_000,
        description="Offset commit interval; exactly-once: how long a transaction stays open "
        "(default 100 ms there: its outputs become visible when it commits).",
    )
    commit_every_events: int = Field(
        10_000,
        ge=1,
        le=10_000_000,
        description="At least once: also commit once this many events' offsets are stored, "
        "so a worker catching up after an outage repeats at most that many when killed.",
    )
    processing_guarantee: Literal["at-least-once", "exactly-once"] = Field(
        "at-least-once",
        description="exactly-once: each transaction commits outputs and input offsets together "
        "(confluent runtime; downstream consumers read with isolation.level=read_committed).",
    )
    transactional_id: str | None = Field(
        None,
        min_length=1,
        description="exactly-once: the producer's transactional.id (default "
        "`<group id>-<worker id>`); keep it stable across restarts of one worker.",
    )
    worker_id: str | None = Field(
        None,
        min_length=1,
        description="Client id, name in metrics records; default `<hostname>-<slot>`, the "
        "lowest slot no live worker of the group holds on this host (runtime/identity.py).",
    )
    static_membership: bool = Field(
        False,
        description="Join the group as a static member (group.instance.id: the worker id), so "
        "a worker back within the session timeout keeps its partitions without a rebalance.",
    )
    exit_when_idle_s: float = Field(
        0.0, ge=0, description="Exit after this long with no records (0: run forever)."
    )
    max_events: int = Field(0, ge=0, description="Exit after this many records (0: no limit).")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level."
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="Log lines as text, or as one JSON object per line."
    )
    http_host: str = Field("0.0.0.0", min_length=1, description="Address of the HTTP endpoint.")
    http_port: int = Field(
        9400, ge=0, le=65_535, description="Port of /metrics, /healthz, /readyz (0: off)."
    )
    liveness_timeout_s: float = Field(
        30.0, gt=0, le=3600, description="/healthz fails if the loop has not turned for this long."
    )
    rdkafka_common: dict[str, str] = Field(
        default_factory=dict, description="librdkafka options for both clients."
    )
    rdkafka_consumer: dict[str, str] = Field(
        default_factory=dict, description="librdkafka options for the consumer."
    )
    rdkafka_producer: dict[str, str] = Field(
        default_factory=dict, description="librdkafka options for the producer."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, RdkafkaSource(settings_cls), env_settings)

    @property
    def exactly_once(self) -> bool:
        return self.processing_guarantee == "exactly-once"

    @property
    def commit_interval_s(self) -> float:
        """STREAMSERVE_COMMIT_INTERVAL_MS, or its default: 1 s at least once; 100 ms exactly
        once, where a transaction's outputs are visible only once it commits (Kafka Streams'
        default under exactly-once too)."""
        if self.exactly_once and "commit_interval_ms" not in self.model_fields_set:
            return 0.1
        return self.commit_interval_ms / 1000

    @property
    def effective_transactional_id(self) -> str:
        """STREAMSERVE_TRANSACTIONAL_ID, else `<group id>-<worker id>` (the worker's id is
        known once runtime/identity.py has given it one)."""
        if self.transactional_id:
            return self.transactional_id
        if self.worker_id is None:
            raise ValueError("the worker has no id yet: runtime.identity.with_worker_id")
        return f"{self.group_id}-{self.worker_id}"

    @model_validator(mode="after")
    def _exactly_once_needs_the_confluent_runtime(self) -> Settings:
        if self.exactly_once and self.runtime == "faust":
            raise ValueError(
                "STREAMSERVE_PROCESSING_GUARANTEE=exactly-once needs STREAMSERVE_RUNTIME=confluent"
            )
        if self.exactly_once and self.commit_interval_s * 1000 >= self.transaction_timeout_ms:
            raise ValueError(
                f"STREAMSERVE_COMMIT_INTERVAL_MS ({self.commit_interval_ms}) keeps a transaction "
                f"open for as long as the broker lets it live (transaction.timeout.ms "
                f"{self.transaction_timeout_ms}): set it lower, or raise "
                "STREAMSERVE_RDKAFKA_PRODUCER_TRANSACTION_TIMEOUT_MS"
            )
        return self

    @property
    def transaction_timeout_ms(self) -> int:
        """Exactly-once: the producer's transaction.timeout.ms (STREAMSERVE_RDKAFKA_[PRODUCER_]
        TRANSACTION_TIMEOUT_MS, else TRANSACTION_TIMEOUT_MS)."""
        options = {**self.rdkafka_common, **self.rdkafka_producer}
        try:
            return int(options.get("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS))
        except ValueError:
            return TRANSACTION_TIMEOUT_MS  # librdkafka names the bad value when it is built

    @field_validator("kafka_bootstrap")
    @classmethod
    def _every_bootstrap_server_named(cls, value: str) -> str:
        if not all(server.strip() for server in value.split(",")):
            raise ValueError("name at least one host:port, comma-separated, none empty")
        return value

    @field_validator("redis_url")
    @classmethod
    def _a_redis_url(cls, value: SecretStr) -> SecretStr:
        if urlsplit(value.get_secret_value()).scheme not in REDIS_SCHEMES:
            raise ValueError(
                "a Redis URL starts with redis://, rediss:// or unix:// (redis://host:6379/0)"
            )
        return value

    @model_validator(mode="after")
    def _no_output_feeds_the_input(self) -> Settings:
        outputs = ["predictions_topic", "dead_letter_topic", "metrics_topic"]
        if self.shadow_model_dir is not None:
            outputs.append("shadow_topic")
        for field in outputs:
            if getattr(self, field) == self.input_topic:
                raise ValueError(
                    f"{env_name(field)} and STREAMSERVE_INPUT_TOPIC are both "
                    f"{self.input_topic!r}: the worker would read its own outputs"
                )
        return self

    @model_validator(mode="after")
    def _registry_formats_need_a_registry(self) -> Settings:
        for var, value in (("INPUT", self.input_format), ("OUTPUT", self.output_format)):
            if value != "json" and not self.schema_registry_url:
                raise ValueError(
                    f"STREAMSERVE_{var}_FORMAT={value} needs STREAMSERVE_SCHEMA_REGISTRY_URL"
                )
        if (self.input_format, self.output_format) != ("json", "json") and self.runtime == "faust":
            raise ValueError(
                "STREAMSERVE_RUNTIME=faust reads and writes JSON only (for now): "
                "STREAMSERVE_INPUT_FORMAT and STREAMSERVE_OUTPUT_FORMAT must be json"
            )
        return self

    def schema_registry_config(self) -> dict[str, str]:
        """The Schema Registry client's configuration, in confluent-kafka's names."""
        config = {"url": self.schema_registry_url or ""}
        if self.schema_registry_basic_auth_user_info is not None:
            config["basic.auth.credentials.source"] = "USER_INFO"
            config["basic.auth.user.info"] = (
                self.schema_registry_basic_auth_user_info.get_secret_value()
            )
        for option, value in (
            ("ssl.ca.location", self.schema_registry_ssl_ca_location),
            ("ssl.certificate.location", self.schema_registry_ssl_certificate_location),
            ("ssl.key.location", self.schema_registry_ssl_key_location),
        ):
            if value:
                config[option] = value
        return config

    def topic_names(self) -> list[str]:
        """The input topic and the output topics (the shadow topic with a challenger only)."""
        shadow = [self.shadow_topic] if self.shadow_model_dir is not None else []
        return [
            self.input_topic,
            self.predictions_topic,
            self.dead_letter_topic,
            self.metrics_topic,
            *shadow,
        ]


def settings_env_names() -> list[str]:
    """Every variable the settings model reads directly (not the librdkafka pass-through)."""
    return [env_name(n) for n in Settings.model_fields if not n.startswith("rdkafka_")]


def load_settings(**overrides: Any) -> Settings:
    """Read and validate the settings; a bad or unknown variable raises ConfigError naming it.

    ``overrides`` (field names) win over the environment; the CLI uses them for its options.
    """
    known = set(settings_env_names())
    for var in os.environ:
        if var.startswith(ENV_PREFIX) and var not in known and not var.startswith(RDKAFKA_PREFIX):
            close = difflib.get_close_matches(var, sorted(known), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ConfigError(f"unknown setting {var}{hint}")
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        if not error["loc"]:  # a rule across settings: its message names the variables
            lines.append(message)
            continue
        field, given = str(error["loc"][0]), error.get("input")
        if field == "redis_url":
            given = mask_url(given) if isinstance(given, str) else "****"
        lines.append(f"{env_name(field)}={given!r}: {message}")
    return "invalid configuration: " + "; ".join(lines)
