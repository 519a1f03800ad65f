"""The confluent-kafka worker loop: consume -> batch -> score -> produce -> checkpoint.

Kafka is only touched from the loop's thread: the consumer's rebalance callbacks run inside
``consume`` there, so a revoke can finish every batch in hand before its partitions go. A batch
closes as soon as the scoring stage (stage.py) can take it (core/window.py); its outputs are
produced, and the checkpoint stores its offsets once the broker acknowledged them. The loop
sleeps in the consumer with nothing in hand and on the scoring stage while a batch is scored.

Backpressure: when the lookup thread falls behind (Redis slow, or down under the `wait` policy)
and the next batch is ready, the loop pauses its partitions and keeps polling (so the group and
signals are served) until scoring catches up, then resumes; the same while what a crash would
make the group score again is past its limit (offsets.py) or the Schema Registry is away; when
the checkpoint is full, the loop serves delivery reports until a batch completes. Memory stays
bounded by one batch filling, one being looked up, one being predicted and the batches in flight.
"""

from __future__ import annotations

import logging
import threading
import time

from confluent_kafka import (
    Consumer,
    Producer,
    TopicPartition,
)

from streamserve.config import Settings
from streamserve.core.adaptive import AdaptiveBatching
from streamserve.core.window import BatchWindow, Trigger
from streamserve.errors import RegistryUnavailable, StoreUnavailable
from streamserve.io import kafka as kafka_io
from streamserve.io.sink import KafkaSink
from streamserve.runtime.checkpoint import BatchCheckpoint, Checkpoint
from streamserve.runtime.clock import wall_ms
from streamserve.runtime.gc_policy import FullCollections, tune_garbage_collector
from streamserve.runtime.identity import with_worker_id, worker_id
from streamserve.runtime.in_hand import InHand
from streamserve.runtime.metrics_records import MetricsRecords
from streamserve.runtime.models import ModelLoader, ModelWatcher, serving_telemetry
from streamserve.runtime.offsets import ConsumerOffsets, Unconfirmed
from streamserve.runtime.partitions import (
    Assignment,
    listed,
    names,
    seek_to_committed,
    seek_to_first,
)
from streamserve.runtime.pipeline import BatchLedger, BatchPipeline, SentBatch
from streamserve.runtime.registry_outage import RegistryOutage
from streamserve.runtime.scoring import ScoringThreads
from streamserve.runtime.stage import ScoringStage
from streamserve.runtime.summary import RunSummary
from streamserve.runtime.transactions import TransactionAborted, TransactionalCheckpoint
from streamserve.telemetry.interval import MetricsInterval

log = logging.getLogger("streamserve.worker")

IDLE_POLL_S = 0.1  # how often a worker with nothing to do checks its stop conditions
PAUSE_AFTER_S = 0.05  # the next batch is ready but scoring is still busy: pause after this long
GAUGES_EVERY_S = 1.0  # how often the lag and pause gauges are refreshed
COMMIT_WAIT_S = 0.005  # while offsets wait for a commit, look for its report this often
SHUTDOWN_FLUSH_S = 30.0  # on stop, each producer waits this long for its acknowledgements


class Worker:
    """Drives batches from a subscribed consumer through the pipeline to the checkpoint."""

    def __init__(
        self,
        settings: Settings,
        models: ModelLoader,
        consumer: Consumer,
        producer: Producer,
        stop_event: threading.Event | None = None,
        metrics_producer: Producer | None = None,
        unconfirmed: Unconfirmed | None = None,
    ) -> None:
        """``producer`` is transactional with STREAMSERVE_PROCESSING_GUARANTEE=exactly-once;
        ``metrics_producer`` (default: ``producer``) writes the metrics records, outside any
        transaction; ``unconfirmed`` hears the consumer's commit reports (its ``on_commit``)."""
        self.settings = settings = with_worker_id(settings)
        self.models = models
        self.consumer = consumer
        self.stop_event = stop_event or threading.Event()
        self.summary = RunSummary()
        self.telemetry = serving_telemetry(models)
        model = models.serving.model
        self.worker_id = worker_id(settings)
        interval = MetricsInterval(self.worker_id, model.bundle.name, model.bundle.version)
        self.sink = KafkaSink(producer)
        self._metrics_sink = KafkaSink(metrics_producer) if metrics_producer else self.sink
        self._metrics = MetricsRecords(
            interval,
            self._metrics_sink,
            settings.metrics_topic,
            settings.metrics_interval_s,
            self.telemetry.guard,
            lambda: models.store_available,
        )
        self._scoring_threads = ScoringThreads(settings.store_outage_policy)
        self.pipeline = BatchPipeline.of_worker(settings, models, self._scoring_threads, self.sink)
        ledger = BatchLedger(self.summary, interval, self.telemetry)
        self._unconfirmed = unconfirmed or Unconfirmed(
            settings.commit_interval_s, settings.commit_every_events
        )
        self._unconfirmed.on_failure = ledger.commit_failed
        self.checkpoint = checkpoint = make_checkpoint(
            settings, producer, consumer, self.sink, ledger, self._unconfirmed
        )
        self.telemetry.batches_in_flight.set_function(lambda: float(len(checkpoint)))
        self._hand = InHand(BatchWindow(settings.max_batch_size, settings.max_wait_ms / 1000.0))
        self._adaptive: AdaptiveBatching | None = None
        if settings.latency_target_ms:
            target_s, wait_s = settings.latency_target_ms / 1000, settings.max_wait_ms / 1000
            self._adaptive = AdaptiveBatching(target_s, settings.max_batch_size, wait_s)
        self._stage = ScoringStage(self.pipeline, self._hand, checkpoint, self._observe_sent)
        self._last_activity: float | None = None  # last assignment or record (monotonic)
        self._watcher = ModelWatcher(models, self.telemetry)
        self._partitions = Assignment(consumer, self._count_assigned)
        self._gauges_due = 0.0
        self._collections = FullCollections(time.monotonic())
        self._failed = False  # the loop raised: nothing more is completed or committed
        self._registry = registry = RegistryOutage()
        self.telemetry.schema_registry_up.set_function(lambda: 0.0 if registry.away else 1.0)

    def stop(self) -> None:
        """Ask the loop to stop fetching; it finishes the batches in hand, commits and returns."""
        self.stop_event.set()

    def run(self) -> RunSummary:
        """Consume until a stop condition; each turn reads as the batch's story."""
        self.consumer.subscribe(
            [self.settings.input_topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        self._metrics.interval.start(wall_ms())
        tune_garbage_collector()
        self._watcher.start()
        try:
            while not self._should_stop():
                try:
                    self._turn()
                except TransactionAborted as exc:
                    self._rewind(exc)
        except BaseException:
            self._fail()
            raise
        self._shutdown()
        return self.summary

    def _turn(self) -> None:
        """One turn of the loop: take records, close a batch or send a scored one, or wait for
        the scoring stage; then complete what the broker acknowledged."""
        now = self._take()
        trigger = self._hand.window.trigger(now, stage_free=self._stage.lookup_free(0))
        if trigger:
            self._dispatch_or_wait(trigger)
        elif self._stage.busy and self._stage.predicted(0):
            self._stage.send_predicted()
        elif self._stage.busy:
            self._wait_for_scoring(now)
        self.sink.poll(0)
        self.checkpoint.advance()
        if self._partitions.paused and self._may_resume():
            self._partitions.resume()  # caught up (or the batch in hand was abandoned)
        self._maybe_publish_metrics()
        self._after_turn(now)

    def _take(self) -> float:
        """Take what the consumer holds, up to the batch's room; with nothing in hand, wait for
        a record first (the loop sleeps in the consumer). Returns the time after consuming."""
        room = self._hand.window.room()
        if not self._stage.busy and not self._hand:
            messages = self.consumer.consume(1, self._idle_wait_s())
            if messages and room > 1:
                messages += self.consumer.consume(room - 1, 0)
        else:
            # full (waiting for a commit's report, which only a consume serves, or paused): a
            # record it returns goes into the next batch
            messages = self.consumer.consume(max(room, 1), 0)
        now = time.monotonic()
        records = [m for m in messages if m.error() is None]
        if len(records) != len(messages):
            kafka_io.raise_fatal_errors(messages)
        if records:
            self._last_activity = now
            self.summary.record_arrived()
            if self._adaptive is not None and not self._hand:
                self._size_window(self._adaptive)  # the first records open a batch
            self._hand.add(records, now, time.time() * 1000)
        return now

    def _idle_wait_s(self) -> float:
        """How long the loop may sleep in the consumer with nothing in hand: until a record
        comes, the open transaction is due, or the stop conditions are checked."""
        return min(IDLE_POLL_S, self.checkpoint.due_in_s())

    def _wait_for_scoring(self, now: float) -> None:
        """Nothing to do until the scoring stage moves on, or the window is up."""
        remaining_s = self._hand.window.remaining_s(now)
        self._stage.wait(
            min(IDLE_POLL_S if remaining_s is None else remaining_s, self._idle_wait_s())
        )

    def _dispatch_or_wait(self, trigger: Trigger) -> None:
        """Dispatch the full (or timed-out) batch, or pause if scoring is still behind or the
        Schema Registry is away."""
        waiting_s = self._registry.wait_s(time.monotonic())
        if waiting_s > 0:
            if self._stage.busy and self._stage.predicted(0):
                self._stage.send_predicted()  # the batch before this one needs no registry
            self.stop_event.wait(min(waiting_s, PAUSE_AFTER_S))  # paused: no need to spin
            return
        if not self._stage.lookup_free(PAUSE_AFTER_S):
            self._partitions.pause()  # scoring is behind: take no more records for now
            return
        if self.checkpoint.behind:
            self._wait_for_commit()
            return
        try:
            self._stage.dispatch(trigger)
        except RegistryUnavailable as exc:
            self._registry.failed(exc, time.monotonic())
            self._partitions.pause()
            return
        self._registry.answered()
        self._partitions.resume()

    def _may_resume(self) -> bool:
        """Scoring caught up, the Schema Registry answers and commits land (while they do not,
        ask for one now and then: its report confirms what waits, or says nothing does)."""
        if self.checkpoint.behind:
            self.checkpoint.retry_commit()
            return False
        return self._stage.lookup_free(0) and not self._registry.away

    def _wait_for_commit(self) -> None:
        """Input not confirmed committed passed its limit (catching up, or a rebalance holds
        commits until the group has rejoined): score no more of it, which a crash now would make
        the group score again; the loop keeps turning and serves the commit's report."""
        if self._unconfirmed.stalled:  # not a moment's wait: pausing is worth its resume
            self._partitions.pause(self._unconfirmed.describe())
        self.checkpoint.retry_commit()
        self.stop_event.wait(COMMIT_WAIT_S)

    def _fail(self) -> None:
        """The loop raised: leave everything not completed uncommitted, to be read again."""
        in_hand = len(self._hand) + self._stage.events + self.checkpoint.events_in_flight
        log.exception(
            "worker failed; %d records in hand stay uncommitted and will be re-read",
            in_hand,
            extra={"records_in_hand": in_hand, "assigned": self._partitions.held},
        )
        self._failed = True
        self._watcher.stop()
        self._scoring_threads.shutdown()
        self.checkpoint.abandon()  # exactly-once: abort the open transaction
        self.consumer.close()  # commits only offsets stored after acknowledged delivery

    def _after_turn(self, now: float) -> None:
        """Tell /healthz the loop is alive; refresh the gauges and collect cycles now and then."""
        self.telemetry.health.loop_turned()
        if now >= self._gauges_due:
            self._gauges_due = now + GAUGES_EVERY_S
            with self.telemetry.guard.shielded("gauges"):
                self.telemetry.set_lag(kafka_io.consumer_lag(self.consumer))
                self.telemetry.paused.set(1 if self._partitions.paused else 0)
        self._collections.maybe_collect(now)

    def _should_stop(self) -> bool:
        settings = self.settings
        if self.stop_event.is_set():
            return True
        if settings.max_events:
            in_hand = len(self._hand) + self._stage.events + self.checkpoint.events_in_flight
            if self.summary.events + in_hand >= settings.max_events:
                return True
        if not settings.exit_when_idle_s or self._last_activity is None:
            return False  # idle time counts from the first assignment on
        return time.monotonic() - self._last_activity >= settings.exit_when_idle_s

    def _observe_sent(self, sent: SentBatch) -> None:
        if self._adaptive is not None:
            self._adaptive.observe(sent.stats.size, sent.stats.service_s)

    def _size_window(self, adaptive: AdaptiveBatching) -> None:
        """Adaptive batching: the new batch's size limit and wait, from cost and lag."""
        lag = sum(p.lag for p in kafka_io.consumer_lag(self.consumer))
        limits = adaptive.limits(lag)
        window = self._hand.window
        window.max_size, window.max_wait_s = limits.max_size, limits.max_wait_s
        self.telemetry.batch_size_limit.set(limits.max_size)

    def _complete_all(self) -> None:
        """Score and finish everything in hand and wait for its acknowledgement. If the feature
        store is down (policy `wait`), what is not scored yet is abandoned instead: its offsets
        are never stored, so it is read again."""
        with self._scoring_threads.giving_up():
            try:
                try:
                    while self._hand:  # more than a batch when some came in while full
                        self._stage.dispatch("stop")
                except RegistryUnavailable:
                    self._stage.send_predicted()  # the batch before it needs no registry
                    raise
                self._stage.send_predicted()
            except StoreUnavailable:
                self._abandon_unscored("feature store down")
            except RegistryUnavailable:
                self._abandon_unscored("Schema Registry away")
        self.checkpoint.drain()

    def _abandon_unscored(self, why: str) -> None:
        """Drop the batches not produced yet; this worker reads them again."""
        records = self._stage.drop()
        seek_to_first(self.consumer, records)
        log.warning("%s: %d records left unscored, to be read again", why, len(records))

    def _rewind(self, exc: TransactionAborted) -> None:
        """The open transaction was aborted: drop the batches in hand and read every partition
        still ours again from its committed offset."""
        self._stage.drop()
        assigned = seek_to_committed(self.consumer)
        log.warning("%s; reading %s again from the committed offsets", exc, names(assigned))

    def _maybe_publish_metrics(self, force: bool = False) -> None:
        """The metrics record, when its interval is over (``force``: on stop, if any events)."""
        now = wall_ms()
        if self._metrics.due(now) or (force and self._metrics.interval.events_in):
            self._metrics.publish(now, lambda: kafka_io.consumer_lag(self.consumer))

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("assigned %s", names(partitions), extra={"partitions": listed(partitions)})
        self.telemetry.health.joined_group = True
        self._partitions.assigned(partitions)
        self._unconfirmed.assigned(partitions)
        if partitions and self._last_activity is None:
            self._last_activity = time.monotonic()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Finish the batch in hand and commit before the partitions move to another worker."""
        log.info("revoked %s", names(partitions), extra={"partitions": listed(partitions)})
        if not self._failed:  # after a failure the batches in flight must stay uncommitted
            try:
                self._complete_all()
                self.checkpoint.commit()
            except TransactionAborted as exc:
                self._rewind(exc)  # the revoked partitions' next owner reads them again
        self._partitions.unassigned(partitions)
        self._unconfirmed.forget(partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.warning(
            "lost %s (their uncommitted records will be re-read by the new owner)",
            names(partitions),
            extra={"partitions": listed(partitions)},
        )
        self._partitions.unassigned(partitions)
        self._unconfirmed.forget(partitions)

    def _count_assigned(self, count: int) -> None:
        self.telemetry.health.assigned = count

    def _shutdown(self) -> None:
        """Stop: finish the batch in hand, publish metrics, flush, commit, leave the group."""
        try:
            try:
                self._complete_all()
            except TransactionAborted as exc:
                log.warning("%s: the next start reads its records again", exc)
            self._maybe_publish_metrics(force=True)
            self.sink.flush(SHUTDOWN_FLUSH_S)
            self._metrics_sink.flush(SHUTDOWN_FLUSH_S)
            self.checkpoint.commit()
        finally:
            self._watcher.stop()
            self._scoring_threads.shutdown()
            self.consumer.close()


def make_checkpoint(
    settings: Settings,
    producer: Producer,
    consumer: Consumer,
    sink: KafkaSink,
    ledger: BatchLedger,
    unconfirmed: Unconfirmed,
) -> BatchCheckpoint:
    """Exactly once: each batch's offsets go in the producer's transaction; at least once: they
    are stored once its outputs are acknowledged and the consumer commits them."""
    in_flight = settings.max_batches_in_flight
    if settings.exactly_once:
        return TransactionalCheckpoint(
            producer, consumer, ledger, settings.commit_interval_s, in_flight
        )
    return Checkpoint(sink, ConsumerOffsets(consumer, unconfirmed), ledger, in_flight)
