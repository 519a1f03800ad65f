"""The confluent-kafka worker loop: consume -> batch -> score -> produce -> store offsets.

Kafka is only touched from the loop's thread: the consumer's rebalance callbacks run inside
``consume`` there, so a revoke can finish every batch in hand before its partitions go. The scoring
thread (scoring.py) does the feature lookup and predict of one batch at a time, overlapped with
the loop decoding the next batch and producing the previous one; delivery.py produces outputs and
stores offsets only after acknowledgement.

Backpressure: when the scoring thread falls behind (Redis slow, or down under the `wait` policy)
and the next batch is ready, the loop pauses its partitions and keeps polling (so the group and
signals are served) until scoring catches up, then resumes. Memory stays bounded by one batch
filling, one being scored and one awaiting acknowledgement.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, wait
from dataclasses import dataclass

import msgspec
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from streamserve.config import Settings
from streamserve.core.adaptive import AdaptiveBatching
from streamserve.core.batch import ScoredBatch
from streamserve.core.window import BatchWindow, Trigger
from streamserve.errors import StoreUnavailable
from streamserve.io import kafka as kafka_io
from streamserve.metrics import MetricsWindow
from streamserve.runtime.delivery import Delivery, InFlight, next_offsets
from streamserve.runtime.gc_policy import FullCollections, tune_garbage_collector
from streamserve.runtime.models import Models, ModelWatcher, serving_telemetry
from streamserve.runtime.scoring import Predicted, ScoringThread
from streamserve.runtime.startup import load_models, prepare_topics, wall_ms
from streamserve.runtime.summary import RunSummary

log = logging.getLogger("streamserve.worker")

IDLE_POLL_S = 0.1  # how often an idle worker checks its stop conditions
SCORING_POLL_S = 0.001  # while a batch is being scored, check on it this often
PAUSE_AFTER_S = 0.05  # the next batch is ready but scoring is still busy: pause after this long
GAUGES_EVERY_S = 1.0  # how often the lag and pause gauges are refreshed


@dataclass(frozen=True)
class Scoring:
    """A decoded batch whose feature lookup and predict run on the scoring thread."""

    records: list[Message]
    trigger: Trigger
    batch_id: str
    future: Future[Predicted]
    dispatched_at: float  # perf_counter


class Worker:
    """Drives batches from a subscribed consumer through the scorer to the producer."""

    def __init__(
        self,
        settings: Settings,
        models: Models,
        consumer: Consumer,
        producer: Producer,
        delivery_errors: list[KafkaError],
        stop_event: threading.Event | None = None,
    ) -> None:
        self.settings = settings
        self.models = models
        self.consumer = consumer
        self.producer = producer
        self.stop_event = stop_event or threading.Event()
        self.summary = RunSummary()
        self._delivery = Delivery(producer, consumer, delivery_errors)
        self._window = BatchWindow(settings.max_batch_size, settings.max_wait_ms / 1000.0)
        self._adaptive: AdaptiveBatching | None = None
        if settings.latency_target_ms:
            target_s, wait_s = settings.latency_target_ms / 1000, settings.max_wait_ms / 1000
            self._adaptive = AdaptiveBatching(target_s, settings.max_batch_size, wait_s)
        self._pending: list[Message] = []
        self._scoring: Scoring | None = None
        self._scoring_thread = ScoringThread(settings.store_outage_policy)
        self._paused: list[TopicPartition] = []
        self._batch_seq = 0
        self._last_activity: float | None = None  # last assignment or record (monotonic)
        model = models.serving.model
        self._metrics = MetricsWindow(settings.worker_id, model.bundle.name, model.bundle.version)
        self.telemetry = serving_telemetry(models)
        self._watcher = ModelWatcher(models, self.telemetry)
        self._assigned: set[tuple[str, int]] = set()
        self._gauges_due = 0.0
        self._collections = FullCollections(time.monotonic())
        self._failed = False  # the loop raised: nothing more is completed or committed

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
        self._watcher.start()
        try:
            while not self._should_stop():
                scoring = self._scoring is not None
                remaining = self._window.remaining_s(time.monotonic())
                if remaining is None:  # no batch open: return as soon as one record is there
                    messages = self.consumer.consume(1, 0 if scoring else IDLE_POLL_S)
                else:  # fill the open batch until it is full or its time is up
                    timeout = min(remaining, SCORING_POLL_S) if scoring else remaining
                    messages = self.consumer.consume(max(self._window.room(), 1), timeout)
                now = time.monotonic()
                records = [m for m in messages if m.error() is None]
                if len(records) != len(messages):
                    self._check_errors(messages)
                if records:
                    self._last_activity = now
                    self.summary.record_arrived()
                    if self._adaptive is not None and not self._window.size:
                        self._size_window(self._adaptive)  # the first records open a batch
                    self._pending.extend(records)
                    self._window.add(len(records), now)
                trigger = self._window.trigger(now)
                if trigger:
                    if self._scoring_done(PAUSE_AFTER_S):
                        self._resume()
                        self._dispatch(trigger)
                    else:
                        self._pause()  # scoring is behind: take no more records for now
                elif self._scoring and self._scoring_done(0 if self._pending else SCORING_POLL_S):
                    self._finish_scoring()  # idle, or scored while the next batch fills
                elif not records:
                    self._settle(wait=False)
                if self._paused and self._scoring_done(0):
                    self._resume()  # caught up (or the batch in hand was abandoned)
                self._maybe_publish_metrics()
                self._turned(now)
        except BaseException:
            in_hand = len(self._pending) + (len(self._scoring.records) if self._scoring else 0)
            log.exception("worker failed; %d records in hand stay uncommitted and will be re-read",
                          in_hand, extra={"records_in_hand": in_hand,
                                          "assigned": sorted(self._assigned)})  # fmt: skip
            self._failed = True
            self._watcher.stop()
            self._scoring_thread.shutdown()
            self.consumer.close()  # commits only offsets stored after acknowledged delivery
            raise
        self._shutdown()
        return self.summary

    def _turned(self, now: float) -> None:
        """Tell /healthz the loop is alive; refresh the gauges and collect cycles now and then."""
        self.telemetry.health.loop_turned()
        if now >= self._gauges_due:
            self._gauges_due = now + GAUGES_EVERY_S
            self.telemetry.set_lag(kafka_io.consumer_lag(self.consumer))
            self.telemetry.paused.set(1 if self._paused else 0)
        self._collections.maybe_collect(now)

    def _should_stop(self) -> bool:
        settings = self.settings
        if self.stop_event.is_set():
            return True
        if settings.max_events:
            in_hand = len(self._pending)
            in_flight = self._delivery.in_flight
            in_hand += in_flight.events if in_flight else 0
            in_hand += len(self._scoring.records) if self._scoring else 0
            if self.summary.events + in_hand >= settings.max_events:
                return True
        if not settings.exit_when_idle_s or self._last_activity is None:
            return False  # idle time counts from the first assignment on
        return time.monotonic() - self._last_activity >= settings.exit_when_idle_s

    def _check_errors(self, messages: list[Message]) -> None:
        """Raise a fatal consumer error; log the others (end-of-partition events are normal)."""
        for message in messages:
            error = message.error()
            if error is None or error.code() == KafkaError._PARTITION_EOF:
                continue
            if error.fatal():
                raise KafkaException(error)
            log.warning("consumer error: %s", error.str())

    def _scoring_done(self, timeout_s: float) -> bool:
        """Whether the scoring thread is free for the next batch; waits up to ``timeout_s``."""
        if self._scoring is None:
            return True
        future = self._scoring.future
        if timeout_s <= 0 or future.done():  # the hot path: no waiter to set up
            return future.done()
        done, _ = wait([future], timeout=timeout_s)
        return bool(done)

    def _pause(self) -> None:
        if self._paused:
            return
        self._paused = self.consumer.assignment()
        self.consumer.pause(self._paused)
        log.info("scoring is behind (feature store slow or down): paused %s", _names(self._paused))

    def _resume(self) -> None:
        if not self._paused:
            return
        self.consumer.resume(self.consumer.assignment())
        log.info("resumed %s", _names(self._paused))
        self._paused = []

    def _dispatch(self, trigger: Trigger) -> None:
        """Decode the batch in hand and start its feature lookup and predict on the scoring
        thread; then finish the batch scored before it, while this one is being scored.

        Order (ARCHITECTURE.md, Delivery semantics): score -> produce every prediction and dead
        letter -> wait until the broker acknowledged all of them -> store the offsets for commit.
        Three batches overlap at most: one filling or being decoded here, one being scored
        (Redis I/O and XGBoost release the GIL), one whose outputs await acknowledgement.
        Batches finish in order, so offsets are stored in order.
        """
        records = self._pending
        if not records:
            return
        self._batch_seq += 1
        batch_id = f"{self.settings.worker_id}-{self._batch_seq}"
        serving = self.models.serving  # a new model takes over from the next batch on
        prepared = serving.model.scorer.prepare(records)
        previous = self._scoring
        if previous is not None:
            previous.future.result()  # the scoring thread takes one batch at a time
        future = self._scoring_thread.submit(prepared, serving)
        self._scoring = Scoring(records, trigger, batch_id, future, time.perf_counter())
        self._pending = []
        self._window.reset()
        if previous is not None:
            self._finish(previous)

    def _finish_scoring(self) -> None:
        batch = self._scoring
        if batch is not None:
            self._finish(batch)  # raises before producing anything if the batch was not scored
            self._scoring = None

    def _finish(self, batch: Scoring) -> None:
        """Encode a scored batch and hand its outputs to the producer; the batch before it
        must be acknowledged first (``_settle``), so at most one batch awaits the broker."""
        predicted = batch.future.result()  # re-raises a feature store error here
        scored = predicted.encode(wall_ms(), batch.batch_id)
        self._settle()
        self._delivery.produce(self.settings.predictions_topic, scored.predictions)
        self._delivery.produce(self.settings.dead_letter_topic, scored.dead_letters)
        if scored.shadow is not None:
            self._delivery.produce(self.settings.shadow_topic, scored.shadow.predictions)
        self.producer.poll(0)
        size = len(batch.records)
        self._delivery.in_flight = InFlight(next_offsets(batch.records), size,
                                            len(scored.predictions), len(scored.dead_letters),
                                            batch.trigger)  # fmt: skip
        if self._adaptive is not None:
            self._adaptive.observe(size, time.perf_counter() - batch.dispatched_at)
        self._metrics.record_batch(
            scored, size, batch.trigger, predicted.lookup_ms, predicted.predict_ms
        )
        self.telemetry.record_batch(
            scored, size, batch.trigger, predicted.lookup_ms, predicted.predict_ms
        )
        if log.isEnabledFor(logging.DEBUG):
            self._log_batch(batch, scored, predicted)

    def _size_window(self, adaptive: AdaptiveBatching) -> None:
        """Adaptive batching: the new batch's size limit and wait, from cost and lag."""
        lag = sum(p.lag for p in kafka_io.consumer_lag(self.consumer))
        limits = adaptive.limits(lag)
        self._window.max_size, self._window.max_wait_s = limits.max_size, limits.max_wait_s
        self.telemetry.batch_size_limit.set(limits.max_size)

    def _log_batch(self, batch: Scoring, scored: ScoredBatch, predicted: Predicted) -> None:
        stats = {"batch_id": batch.batch_id, "records": len(batch.records),
                 "trigger": batch.trigger, "predictions": len(scored.predictions),
                 "dead_letters": len(scored.dead_letters),
                 "lookup_ms": round(predicted.lookup_ms, 3),
                 "predict_ms": round(predicted.predict_ms, 3)}  # fmt: skip
        log.debug("batch %(batch_id)s: %(records)d records, trigger %(trigger)s, %(predictions)d "
                  "predictions, %(dead_letters)d dead letters, lookup %(lookup_ms).2f ms, "
                  "predict %(predict_ms).2f ms", stats, extra=stats)  # fmt: skip

    def _complete_all(self) -> None:
        """Score and finish everything in hand and wait for its acknowledgement. If the feature
        store is down (policy `wait`), what is not scored yet is abandoned instead: its offsets
        are never stored, so it is read again."""
        with self._scoring_thread.giving_up():
            try:
                self._dispatch("stop")
                self._finish_scoring()
            except StoreUnavailable:
                self._abandon_unscored()
        self._settle()

    def _abandon_unscored(self) -> None:
        """Drop the batches not produced yet; rewind the partitions still ours to their first
        record, so this worker reads them again (a revoked partition's next owner starts from
        the committed offset, which is behind them)."""
        records = [*(self._scoring.records if self._scoring else []), *self._pending]
        first: dict[tuple[str, int], int] = {}
        for m in records:
            first.setdefault((m.topic(), m.partition()), m.offset())  # type: ignore[arg-type]
        self._scoring, self._pending = None, []
        self._window.reset()
        ours = {(tp.topic, tp.partition) for tp in self.consumer.assignment()}
        for (topic, partition), offset in first.items():
            if (topic, partition) in ours:
                self.consumer.seek(TopicPartition(topic, partition, offset))
        log.warning("feature store down: %d records left unscored, to be read again", len(records))

    def _settle(self, wait: bool = True) -> None:
        """Store the offsets of the batch in flight once it is acknowledged (see Delivery)."""
        done = self._delivery.settle(wait)
        if done is not None:
            self.summary.batch_done(done.events, done.predictions, done.dead_letters, done.trigger)

    def _maybe_publish_metrics(self, force: bool = False) -> None:
        now = wall_ms()
        due = now - self._metrics.started_ms >= self.settings.metrics_interval_s * 1000
        if not (due or (force and self._metrics.events_in)):
            return
        record = self._metrics.close(
            now, kafka_io.consumer_lag(self.consumer), self.models.store_available
        )
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
        log.info("assigned %s", _names(partitions), extra={"partitions": _list(partitions)})
        self._assigned.update((tp.topic, tp.partition) for tp in partitions)
        self.telemetry.health.assigned = len(self._assigned)
        if self._paused and partitions:  # still waiting for scoring: the new ones wait too
            consumer.pause(partitions)
            self._paused += partitions
        if partitions and self._last_activity is None:
            self._last_activity = time.monotonic()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Finish the batch in hand and commit before the partitions move to another worker."""
        log.info("revoked %s", _names(partitions), extra={"partitions": _list(partitions)})
        if not self._failed:  # after a failure the batch in flight must stay uncommitted
            self._complete_all()
            self._commit()
        self._unassigned(partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.warning("lost %s (their uncommitted records will be re-read by the new owner)",
                    _names(partitions), extra={"partitions": _list(partitions)})  # fmt: skip
        self._unassigned(partitions)

    def _unassigned(self, partitions: list[TopicPartition]) -> None:
        self._assigned.difference_update((tp.topic, tp.partition) for tp in partitions)
        self.telemetry.health.assigned = len(self._assigned)

    def _shutdown(self) -> None:
        """Stop: finish the batch in hand, publish metrics, flush, commit, leave the group."""
        try:
            self._complete_all()
            self._maybe_publish_metrics(force=True)
            self.producer.flush(30)
            self._commit()
        finally:
            self._watcher.stop()
            self._scoring_thread.shutdown()
            self.consumer.close()


def _names(partitions: list[TopicPartition]) -> str:
    return ", ".join(_list(partitions)) or "nothing"


def _list(partitions: list[TopicPartition]) -> list[str]:
    return [f"{tp.topic}[{tp.partition}]" for tp in partitions]


def build_worker(settings: Settings, stop_event: threading.Event | None = None) -> Worker:
    """Validate everything a worker needs, in order, before it consumes a single record.

    Feature store reachable -> model bundles (manifest vs booster) -> topics -> clients.
    """
    models = load_models(settings)
    prepare_topics(settings)
    delivery_errors: list[KafkaError] = []

    def on_delivery(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            delivery_errors.append(error)

    producer = kafka_io.make_producer(settings, on_delivery=on_delivery)
    consumer = kafka_io.make_consumer(settings)
    return Worker(settings, models, consumer, producer, delivery_errors, stop_event)
