"""The confluent-kafka worker loop: consume -> batch -> score -> produce -> store offsets.

One batch at a time, on one thread: the consumer's rebalance callbacks run inside ``consume`` on
this same thread, so a revoke can finish the batch in hand before its partitions go.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from dataclasses import dataclass

import msgspec
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from threadpoolctl import threadpool_limits

from streamserve.config import Settings
from streamserve.core.batch import BatchScorer, FeatureStore, OutputRecord
from streamserve.core.model import ModelBundle, load_bundle
from streamserve.core.window import BatchWindow, Trigger
from streamserve.errors import ConfigError, DeliveryError
from streamserve.io import kafka as kafka_io
from streamserve.io import store as store_io
from streamserve.metrics import MetricsWindow
from streamserve.runtime.summary import RunSummary

log = logging.getLogger("streamserve.worker")

IDLE_POLL_S = 0.1  # how often an idle worker checks its stop conditions
FLUSH_SLICE_S = 1.0
GC_THRESHOLD = 200_000  # container allocations between young-generation collections


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class InFlight:
    """A batch whose outputs were produced but not yet acknowledged by the broker."""

    next_offsets: dict[tuple[str, int], int]  # (topic, partition) -> offset to commit
    events: int
    predictions: int
    dead_letters: int
    trigger: Trigger


def tune_garbage_collector() -> None:
    """Make cyclic GC rare: a batch allocates tens of thousands of short-lived tuples and lists
    (none of them in cycles), and the default threshold of 700 ran a collection every few dozen
    events -- about 6% of the worker's time. Start-up objects are frozen out of collections."""
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 20)


def next_offsets(records: list[Message]) -> dict[tuple[str, int], int]:
    """The offset to commit per (topic, partition): one past the batch's last record there."""
    offsets: dict[tuple[str, int], int] = {}
    for m in records:
        offsets[(m.topic(), m.partition())] = m.offset() + 1  # type: ignore[index,operator]
    return offsets


class Worker:
    """Drives batches from a subscribed consumer through the scorer to the producer."""

    def __init__(
        self,
        settings: Settings,
        bundle: ModelBundle,
        store: FeatureStore,
        consumer: Consumer,
        producer: Producer,
        delivery_errors: list[KafkaError],
        stop_event: threading.Event | None = None,
    ) -> None:
        self.settings = settings
        self.scorer = BatchScorer(bundle)
        self.store = store
        self.consumer = consumer
        self.producer = producer
        self.stop_event = stop_event or threading.Event()
        self.summary = RunSummary()
        self._delivery_errors = delivery_errors
        self._window = BatchWindow(settings.max_batch_size, settings.max_wait_ms / 1000.0)
        self._pending: list[Message] = []
        self._in_flight: InFlight | None = None
        self._batch_seq = 0
        self._last_activity: float | None = None  # last assignment or record (monotonic)
        self._metrics = MetricsWindow(
            settings.worker_id, bundle.name, bundle.version, self.scorer.layout.feature_names
        )

    def stop(self) -> None:
        """Ask the loop to stop fetching; it finishes the batch in hand, commits and returns."""
        self.stop_event.set()

    def run(self) -> RunSummary:
        settings = self.settings
        self.consumer.subscribe(
            [settings.input_topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        self._metrics.start(wall_ms())
        tune_garbage_collector()
        try:
            while not self._should_stop():
                remaining = self._window.remaining_s(time.monotonic())
                if remaining is None:  # no batch open: return as soon as one record is there
                    messages = self.consumer.consume(1, IDLE_POLL_S)
                else:  # fill the open batch until it is full or its time is up
                    messages = self.consumer.consume(self._window.room(), remaining)
                now = time.monotonic()
                records = [m for m in messages if self._is_record(m)]
                if records:
                    self._last_activity = now
                    self.summary.record_arrived()
                    self._pending.extend(records)
                    self._window.add(len(records), now)
                trigger = self._window.trigger(now)
                if trigger:
                    self._complete_batch(trigger)
                elif not records:
                    self._settle(wait=False)
                self._maybe_publish_metrics()
        except BaseException:
            log.error("worker failed; the batch in hand stays uncommitted and will be re-read")
            self.consumer.close()  # commits only offsets stored after acknowledged delivery
            raise
        self._shutdown()
        return self.summary

    def _should_stop(self) -> bool:
        settings = self.settings
        if self.stop_event.is_set():
            return True
        if settings.max_events:
            in_flight = self._in_flight.events if self._in_flight else 0
            if self.summary.events + in_flight + len(self._pending) >= settings.max_events:
                return True
        if not settings.exit_when_idle_s or self._last_activity is None:
            return False  # idle time counts from the first assignment on
        return time.monotonic() - self._last_activity >= settings.exit_when_idle_s

    def _is_record(self, message: Message) -> bool:
        error = message.error()
        if error is None:
            return True
        if error.code() == KafkaError._PARTITION_EOF:
            return False
        if error.fatal():
            raise KafkaException(error)
        log.warning("consumer error: %s", error.str())
        return False

    def _complete_batch(self, trigger: Trigger) -> None:
        """Score the batch in hand and hand its outputs to the producer.

        Order (ARCHITECTURE.md, Delivery semantics): score -> produce every prediction and dead
        letter -> wait until the broker acknowledged all of them -> store the offsets for commit.
        The wait is pipelined: this batch's outputs are acknowledged while the next batch is
        consumed and scored, and ``_settle`` stores its offsets just before the next batch's
        outputs are produced (or as soon as the producer is idle). At most one batch is in
        flight, so ``flush`` in ``_settle`` only ever waits for that batch's outputs.
        """
        records = self._pending
        if not records:
            return
        self._batch_seq += 1
        batch_id = f"{self.settings.worker_id}-{self._batch_seq}"
        scorer = self.scorer
        started = time.perf_counter()
        prepared = scorer.prepare(records)
        lookup_started = time.perf_counter()
        store_rows = self.store.fetch(prepared.store_keys.keys)
        predict_started = time.perf_counter()
        matrix, scores = scorer.predict(prepared, store_rows)
        predict_done = time.perf_counter()
        scored = scorer.encode(prepared, store_rows, matrix, scores, wall_ms(), batch_id)
        self._settle()  # the previous batch: acknowledged -> offsets stored
        self._produce(self.settings.predictions_topic, scored.predictions)
        self._produce(self.settings.dead_letter_topic, scored.dead_letters)
        self.producer.poll(0)
        self._in_flight = InFlight(
            next_offsets(records), len(records), len(scored.predictions),
            len(scored.dead_letters), trigger,
        )  # fmt: skip
        self._metrics.record_batch(
            scored,
            len(records),
            trigger,
            lookup_ms=(predict_started - lookup_started) * 1000,
            predict_ms=(predict_done - predict_started) * 1000,
        )
        log.debug(
            "batch %s: %d records, trigger %s, %.2f ms",
            batch_id, len(records), trigger, (time.perf_counter() - started) * 1000,
        )  # fmt: skip
        self._pending = []
        self._window.reset()

    def _produce(self, topic: str, outputs: list[OutputRecord]) -> None:
        produce = self.producer.produce
        for key, value, headers in outputs:
            while True:
                try:
                    produce(topic, value, key, headers=headers)
                    break
                except BufferError:  # local queue full: let deliveries drain, then retry
                    self.producer.poll(0.05)

    def _settle(self, wait: bool = True) -> None:
        """Once every output of the batch in flight is acknowledged, store its offsets.

        With ``wait`` false it only checks (for an idle loop); otherwise it waits. A delivery
        failure raises DeliveryError and leaves the batch's offsets unstored, so a restart
        re-reads it.
        """
        batch = self._in_flight
        if batch is None:
            return
        if wait:
            while self.producer.flush(FLUSH_SLICE_S) > 0:
                log.info("waiting for the broker to acknowledge outputs")
        else:
            self.producer.poll(0)
            if len(self.producer) > 0:
                return
        if self._delivery_errors:
            first = self._delivery_errors[0]
            count = len(self._delivery_errors)
            self._delivery_errors.clear()
            raise DeliveryError(f"{count} output records were not delivered: {first.str()}")
        self._store_offsets(batch.next_offsets)
        self.summary.batch_done(batch.events, batch.predictions, batch.dead_letters, batch.trigger)
        self._in_flight = None

    def _store_offsets(self, next_offsets: dict[tuple[str, int], int]) -> None:
        offsets = [TopicPartition(t, p, o) for (t, p), o in next_offsets.items()]
        try:
            self.consumer.store_offsets(offsets=offsets)
        except KafkaException as exc:  # partition no longer ours: its new owner re-reads
            log.warning("could not store offsets %s: %s", offsets, exc.args[0].str())

    def _maybe_publish_metrics(self, force: bool = False) -> None:
        now = wall_ms()
        due = now - self._metrics.started_ms >= self.settings.metrics_interval_s * 1000
        if not (due or (force and self._metrics.events_in)):
            return
        record = self._metrics.close(now, kafka_io.consumer_lag(self.consumer))
        if record.events_in or due:
            self.producer.produce(
                self.settings.metrics_topic,
                msgspec.json.encode(record),
                self.settings.worker_id.encode(),
            )
            self.producer.poll(0)

    def _commit(self) -> None:
        try:
            self.consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("commit failed: %s", exc.args[0].str())

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("assigned %s", _names(partitions))
        if partitions and self._last_activity is None:
            self._last_activity = time.monotonic()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Finish the batch in hand and commit before the partitions move to another worker."""
        log.info("revoked %s", _names(partitions))
        self._complete_batch("stop")
        self._settle()
        self._commit()

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.warning("lost %s (their uncommitted records will be re-read by the new owner)",
                    _names(partitions))  # fmt: skip

    def _shutdown(self) -> None:
        """Stop: finish the batch in hand, publish metrics, flush, commit, leave the group."""
        try:
            self._complete_batch("stop")
            self._settle()
            self._maybe_publish_metrics(force=True)
            self.producer.flush(30)
            self._commit()
        finally:
            self.consumer.close()


def _names(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"


def build_worker(settings: Settings, stop_event: threading.Event | None = None) -> Worker:
    """Validate everything a worker needs, in order, before it consumes a single record.

    Model bundle (manifest vs booster) -> feature store reachable -> topics -> clients.
    """
    if settings.model_dir is None:
        raise ConfigError("STREAMSERVE_MODEL_DIR is not set; point it at a model bundle directory")
    # XGBoost's nthread does not cover every OpenMP region; without this cap an extra OpenMP
    # thread per core spins between predict calls and doubles the worker's CPU per event.
    threadpool_limits(settings.predict_threads, user_api="openmp")
    bundle = load_bundle(settings.model_dir, nthread=settings.predict_threads)
    redis_client = store_io.connect(settings.redis_url.get_secret_value(), settings.redis_timeout_s)
    feature_store = store_io.RedisFeatureStore(redis_client, bundle.manifest)
    feature_store.ping()
    if settings.create_topics:
        kafka_io.ensure_topics(
            kafka_io.make_admin(settings), settings.topic_names(), settings.topic_partitions
        )
    delivery_errors: list[KafkaError] = []

    def on_delivery(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            delivery_errors.append(error)

    producer = kafka_io.make_producer(settings, on_delivery=on_delivery)
    consumer = kafka_io.make_consumer(settings)
    return Worker(settings, bundle, feature_store, consumer, producer, delivery_errors, stop_event)
