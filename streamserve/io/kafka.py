"""Every Kafka client streamserve builds, topic provisioning and consumer lag.

The worker's clients favour latency and at-least-once delivery; the operator tools' readers
(audit, lag) are built by ``Cluster``. Every client takes the STREAMSERVE_RDKAFKA_* pass-through
(see config.py), so security settings reach all of them.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from streamserve.config import TRANSACTION_TIMEOUT_MS, Settings
from streamserve.config_env import RDKAFKA_PREFIX, is_secret_option
from streamserve.core.records import PartitionLag
from streamserve.errors import ConfigError, StreamserveError

log = logging.getLogger("streamserve.kafka")
RDKAFKA_LOG = logging.getLogger("streamserve.librdkafka")
CLIENT_ID = "streamserve"  # a client's id before the worker has one (runtime/identity.py)
CONSUMER_DEFAULTS: dict[str, Any] = {
    "auto.offset.reset": "earliest",
    "enable.auto.commit": True,  # commits only what we stored, on a timer
    "enable.auto.offset.store": False,  # we store an offset once its outputs are acknowledged
    "partition.assignment.strategy": "cooperative-sticky",
    "session.timeout.ms": 10_000,
    "fetch.wait.max.ms": 10,  # some brokers hold a fetch for this long even with data ready
}
PRODUCER_DEFAULTS: dict[str, Any] = {
    "enable.idempotence": True,  # acks=all, no reordering or duplicates on retry
    "linger.ms": 5,
    "delivery.report.only.error": False,  # each batch learns of its own acknowledgements
}


def _merged(base: dict[str, Any], *layers: dict[str, Any]) -> dict[str, Any]:
    config = dict(base)
    for layer in layers:
        config.update(layer)
    return config


EXACTLY_ONCE_CONSUMER: dict[str, Any] = {
    "enable.auto.commit": False,  # offsets are committed inside each transaction
    "isolation.level": "read_committed",  # an input written transactionally: committed only
}


TRANSACTIONAL_PRODUCER: dict[str, Any] = {
    # a worker that dies with a transaction open and does not come back under its
    # transactional.id (another host, a renamed pod) holds every partition's last stable offset,
    # so read_committed readers stall, until the broker aborts it after this long (librdkafka's
    # default: 60 s; Kafka Streams sets 10 s under exactly-once, as here). A transaction stays
    # open STREAMSERVE_COMMIT_INTERVAL_MS (100 ms), far inside it.
    "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
}


def consumer_config(settings: Settings) -> dict[str, Any]:
    return _merged(
        CONSUMER_DEFAULTS,
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": settings.group_id,
            "client.id": settings.worker_id or CLIENT_ID,
            "auto.commit.interval.ms": round(settings.commit_interval_s * 1000),
        },
        EXACTLY_ONCE_CONSUMER if settings.exactly_once else {},
        {"group.instance.id": static_member_id(settings)} if settings.static_membership else {},
        settings.rdkafka_common,
        settings.rdkafka_consumer,
    )


def static_member_id(settings: Settings) -> str:
    """group.instance.id under STREAMSERVE_STATIC_MEMBERSHIP: the worker id (a pod's name, or
    ``<hostname>-<slot>``), so each process of ``--processes N`` has its own."""
    if settings.worker_id is None:
        raise ValueError("the worker has no id yet: runtime.identity.with_worker_id")
    return settings.worker_id


def producer_config(settings: Settings, transactional: bool = False) -> dict[str, Any]:
    """The worker's producer; ``transactional``: the exactly-once one, with the worker's
    transactional.id (a restart with the same id fences its predecessor and aborts its open
    transaction)."""
    return _merged(
        PRODUCER_DEFAULTS,
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "client.id": settings.worker_id or CLIENT_ID,
        },
        TRANSACTIONAL_PRODUCER if transactional else {},
        {"transactional.id": settings.effective_transactional_id} if transactional else {},
        settings.rdkafka_common,
        settings.rdkafka_producer,
    )


def admin_config(settings: Settings) -> dict[str, Any]:
    return {"bootstrap.servers": settings.kafka_bootstrap, **settings.rdkafka_common}


def check_client_options(settings: Settings) -> None:
    """Raise a ConfigError naming the first STREAMSERVE_RDKAFKA_* variable librdkafka rejects,
    before any client connects (the clients are built without bootstrap servers)."""
    if settings.worker_id is None:  # taken at start; any id checks the options
        settings = settings.model_copy(update={"worker_id": CLIENT_ID})
    scopes: list[tuple[str, Callable[[dict[str, Any]], Any], dict[str, Any], dict[str, str]]] = [
        ("CONSUMER_", Consumer, consumer_config(settings), settings.rdkafka_consumer),
        ("PRODUCER_", Producer, producer_config(settings), settings.rdkafka_producer),
    ]
    for scope, factory, config, own in scopes:
        bare = {"group.id": settings.group_id} if factory is Consumer else {}
        config = {k: v for k, v in config.items() if k != "bootstrap.servers"}
        if _rejection(factory, config) is None:
            continue
        for prefix, options in (("", settings.rdkafka_common), (scope, own)):
            for option, value in options.items():
                reason = _rejection(factory, {**bare, option: value})
                if reason is not None:
                    var = RDKAFKA_PREFIX + prefix + option.replace(".", "_").upper()
                    shown = "****" if is_secret_option(option) else repr(value)
                    raise ConfigError(f"{var}={shown}: librdkafka rejects it ({reason})")
        _construct(factory, config, scope[:-1].lower())  # refused only together: say so


def _rejection(factory: Callable[[dict[str, Any]], Any], config: dict[str, Any]) -> str | None:
    """librdkafka's reason for refusing ``config``, or None (its log lines, never polled, are
    not shown)."""
    try:
        client = factory({**config, "logger": RDKAFKA_LOG})
    except KafkaException as exc:
        return str(exc.args[0].str()).strip()
    if isinstance(client, Consumer):
        client.close()
    return None


def _construct(factory: Callable[[dict[str, Any]], Any], config: dict[str, Any], scope: str) -> Any:
    """Build a client whose librdkafka log lines go to the ``streamserve.librdkafka`` logger
    (JSON with STREAMSERVE_LOG_FORMAT=json; served when the client is polled); an option
    librdkafka rejects becomes a ConfigError."""
    try:
        return factory({**config, "logger": RDKAFKA_LOG})
    except KafkaException as exc:
        raise ConfigError(
            f"librdkafka rejected the {scope} configuration ({exc.args[0].str()}); "
            f"check the {RDKAFKA_PREFIX}* variables"
        ) from None


def make_consumer(settings: Settings, **callbacks: Any) -> Consumer:
    return _construct(Consumer, {**consumer_config(settings), **callbacks}, "consumer")


def make_producer(settings: Settings, transactional: bool = False, **callbacks: Any) -> Producer:
    config = {**producer_config(settings, transactional), **callbacks}
    return _construct(Producer, config, "producer")


def make_admin(settings: Settings) -> AdminClient:
    return _construct(AdminClient, admin_config(settings), "admin")


@dataclass(frozen=True)
class Cluster:
    """How to reach a Kafka cluster: bootstrap servers plus the librdkafka options (security,
    SASL, TLS, ...) every client of the operator tools needs."""

    bootstrap: str
    options: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, settings: Settings) -> Cluster:
        """The cluster the worker is configured for, with its common and consumer options."""
        return cls(
            settings.kafka_bootstrap, {**settings.rdkafka_common, **settings.rdkafka_consumer}
        )

    def reader(self, config: Mapping[str, Any] | None = None, group: str | None = None) -> Consumer:
        """A consumer that never commits, with ``config`` on top: in ``group`` (to read its
        commits without joining: assign partitions yourself), or in a fresh group of its own."""
        defaults = {
            "bootstrap.servers": self.bootstrap,
            "group.id": group or f"streamserve-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,  # some brokers hold a fetch for this long with data ready
        }
        return _construct(Consumer, {**self.options, **defaults, **(config or {})}, "reader")


def ensure_topics(
    admin: AdminClient, topics: Iterable[str], partitions: int, timeout_s: float = 10.0
) -> list[str]:
    """Create the topics that do not exist yet; returns the ones created."""
    wanted = list(dict.fromkeys(topics))
    try:
        existing = set(admin.list_topics(timeout=timeout_s).topics)
    except KafkaException as exc:
        raise StreamserveError(f"cannot reach the Kafka cluster: {exc.args[0].str()}") from None
    missing = [t for t in wanted if t not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=partitions, replication_factor=-1) for t in missing],
        operation_timeout=timeout_s,
    )
    for topic, future in futures.items():
        try:
            future.result(timeout=timeout_s)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise StreamserveError(
                    f"cannot create topic {topic}: {exc.args[0].str()}"
                ) from None
    _wait_for_topics(admin, missing, timeout_s)
    return missing


def require_topics(admin: AdminClient, topics: Iterable[str], timeout_s: float = 10.0) -> None:
    """Raise unless every topic exists (for STREAMSERVE_CREATE_TOPICS=false)."""
    try:
        existing = set(admin.list_topics(timeout=timeout_s).topics)
    except KafkaException as exc:
        raise StreamserveError(f"cannot reach the Kafka cluster: {exc.args[0].str()}") from None
    missing = [t for t in topics if t not in existing]
    if missing:
        raise StreamserveError(
            f"topics {', '.join(missing)} do not exist and STREAMSERVE_CREATE_TOPICS is false"
        )


def _wait_for_topics(admin: AdminClient, topics: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        metadata = admin.list_topics(timeout=timeout_s).topics
        if all(t in metadata and metadata[t].partitions for t in topics):
            return
        time.sleep(0.1)
    raise StreamserveError(f"topics {topics} did not appear within {timeout_s:.0f} s")


def consumer_lag(consumer: Consumer) -> list[PartitionLag]:
    """Lag of each assigned partition from cached high watermarks (no broker round trip)."""
    assignment = consumer.assignment()
    if not assignment:
        return []
    lags = []
    for tp in consumer.position(assignment):
        _, high = consumer.get_watermark_offsets(tp, cached=True)
        if high < 0 or tp.offset < 0:  # nothing fetched from it yet: lag unknown
            continue
        lags.append(PartitionLag(tp.topic, tp.partition, max(high - tp.offset, 0)))
    return lags


def raise_fatal_errors(messages: Iterable[Any]) -> None:
    """Raise a fatal consumer error among ``messages``; log the others (end-of-partition
    events are normal)."""
    for message in messages:
        error = message.error()
        if error is None or error.code() == KafkaError._PARTITION_EOF:
            continue
        if error.fatal():
            raise KafkaException(error)
        log.warning("consumer error: %s", error.str())
