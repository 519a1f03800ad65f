"""The faust-streaming runtime (STREAMSERVE_RUNTIME=faust), and ``FaustScorer`` for your own agent.

The agent takes micro-batches with ``stream.take_events(max_batch_size, within=max_wait)`` (the
events flavour of ``take``: it keeps each record's topic, partition, offset and headers) and runs
the confluent runtime's core pipeline on them: decode, one feature lookup and one booster call on
the scoring thread (the event loop keeps serving meanwhile), encode. Outputs go through a
confluent-kafka producer (about 4 µs a record; aiokafka's send costs ten times that in Python) and
the agent awaits their acknowledgement (a flush on a thread) before it asks for the next batch;
Faust acks a batch's events only then, so no offset is committed past an undelivered output.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import faust
import msgspec
from confluent_kafka import KafkaError
from mode import Worker as ModeWorker

from streamserve.config import Settings
from streamserve.core.batch import BatchScorer, OutputRecord, ScoredBatch
from streamserve.core.model import ModelBundle
from streamserve.core.window import Trigger
from streamserve.errors import DeliveryError
from streamserve.io.http import serve
from streamserve.io.kafka import make_producer
from streamserve.io.store import ResilientStore
from streamserve.metrics import MetricsWindow
from streamserve.runtime.scoring import ScoringThread
from streamserve.runtime.startup import load_model_and_store, prepare_topics, wall_ms
from streamserve.runtime.summary import RunSummary
from streamserve.telemetry import Telemetry

log = logging.getLogger("streamserve.faust")
STOP_CHECK_S = 0.1
DELIVERY_TIMEOUT_S = 30.0


class FaustRecord:
    """A Faust message as the core's SourceRecord (the confluent Message's accessors)."""

    __slots__ = ("_message",)

    def __init__(self, message: Any) -> None:
        self._message = message

    def key(self) -> bytes | None:
        return self._message.key

    def value(self) -> bytes | None:
        return self._message.value

    def topic(self) -> str:
        return self._message.topic

    def partition(self) -> int:
        return self._message.partition

    def offset(self) -> int:
        return self._message.offset

    def timestamp(self) -> tuple[int, int]:
        """(type, milliseconds) like confluent-kafka; Faust keeps seconds as a float."""
        return 1, round(self._message.timestamp * 1000)

    def headers(self) -> list[tuple[str, bytes]] | None:
        headers = self._message.headers
        if isinstance(headers, dict):
            return list(headers.items())
        return list(headers) if headers else None


class FaustScorer:
    """Scores batches of Faust events and sends the predictions and dead letters.

    Mount it in your own agent::

        scorer = FaustScorer(app, load_settings())

        @app.agent(events_topic)
        async def score(stream):
            async for events in stream.take_events(1000, within=0.005):
                await scorer.score(events)  # returns once every output is acknowledged

    The topics, model and feature store come from the settings (STREAMSERVE_* variables).
    """

    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        bundle: ModelBundle | None = None,
        store: ResilientStore | None = None,
    ) -> None:
        if bundle is None or store is None:
            bundle, store = load_model_and_store(settings)
        self.app = app
        self.settings = settings
        self.scorer = BatchScorer(bundle)
        self.store = store
        self.summary = RunSummary()
        self.telemetry = Telemetry(bundle.name, bundle.version, settings.liveness_timeout_s)
        self.telemetry.health.model_loaded = True
        self.telemetry.health.store_available = lambda: store.available
        self._thread = ScoringThread(self.scorer, store, settings.store_outage_policy)
        self._metrics = MetricsWindow(
            settings.worker_id, bundle.name, bundle.version, self.scorer.layout.feature_names
        )
        self._metrics.start(wall_ms())
        self._seq = 0
        self._producer = make_producer(settings)

    async def score(self, events: Sequence[Any]) -> ScoredBatch:
        """Score one batch and wait until the broker acknowledged all of its outputs."""
        if not events:
            raise ValueError("an empty batch")
        self.summary.record_arrived()
        self._seq += 1
        batch_id = f"{self.settings.worker_id}-{self._seq}"
        prepared = self.scorer.prepare([FaustRecord(e.message) for e in events])
        predicted = await asyncio.wrap_future(self._thread.submit(prepared))
        scored = self.scorer.encode(
            prepared, predicted.store_rows, predicted.matrix, predicted.scores,
            wall_ms(), batch_id, predicted.degraded,
        )  # fmt: skip
        failures = _Failures()
        self._produce(self.settings.predictions_topic, scored.predictions, failures)
        self._produce(self.settings.dead_letter_topic, scored.dead_letters, failures)
        await self._delivered(failures)
        size = len(events)
        trigger: Trigger = "size" if size >= self.settings.max_batch_size else "time"
        self.summary.batch_done(size, len(scored.predictions), len(scored.dead_letters), trigger)
        self._metrics.record_batch(scored, size, trigger, predicted.lookup_ms, predicted.predict_ms)
        self.telemetry.record_batch(
            scored, size, trigger, predicted.lookup_ms, predicted.predict_ms
        )
        return scored

    async def publish_metrics(self) -> None:
        """Send the metrics record of the interval that ends now (lag is not known here)."""
        record = self._metrics.close(wall_ms(), [], self.store.available)
        failures = _Failures()
        self._produce(
            self.settings.metrics_topic,
            [OutputRecord(self.settings.worker_id.encode(), msgspec.json.encode(record), [])],
            failures,
        )
        await self._delivered(failures)

    def close(self) -> None:
        self._thread.shutdown()
        self._producer.flush(30)

    def _produce(self, topic: str, outputs: list[OutputRecord], failures: _Failures) -> None:
        produce, poll = self._producer.produce, self._producer.poll
        for key, value, headers in outputs:
            while True:
                try:
                    produce(topic, value, key, headers=headers, on_delivery=failures.on_delivery)
                    break
                except BufferError:  # the local queue is full: let deliveries drain it
                    poll(0.05)

    async def _delivered(self, failures: _Failures) -> None:
        """Wait until the broker acknowledged everything produced; raise if any of the records
        behind ``failures`` was not delivered (each batch checks only its own)."""
        remaining = await asyncio.to_thread(self._producer.flush, DELIVERY_TIMEOUT_S)
        if remaining or failures.errors:
            first = f": {failures.errors[0].str()}" if failures.errors else ""
            raise DeliveryError(f"{remaining} outputs unacknowledged, "
                                f"{len(failures.errors)} failed{first}")  # fmt: skip


class _Failures:
    """Delivery errors of one batch's records."""

    def __init__(self) -> None:
        self.errors: list[KafkaError] = []

    def on_delivery(self, error: KafkaError | None, _message: object) -> None:
        if error is not None:
            self.errors.append(error)


def new_app(settings: Settings) -> tuple[faust.App, faust.TopicT]:
    """A Faust app in the settings' consumer group, and its raw-bytes input topic."""
    session_ms = int(settings.rdkafka_consumer.get("session.timeout.ms", 10_000))
    app = faust.App(
        settings.group_id,
        broker=[f"kafka://{server}" for server in settings.kafka_bootstrap.split(",")],
        web_enabled=False,
        topic_disable_leader=True,
        topic_partitions=settings.topic_partitions,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=session_ms / 1000,
        broker_commit_interval=settings.commit_interval_ms / 1000,
        store="memory://",
    )
    topic = app.topic(
        settings.input_topic, key_type=bytes, value_type=bytes,
        key_serializer="raw", value_serializer="raw",
    )  # fmt: skip
    return app, topic


def batch_window_s(settings: Settings) -> float:
    """``within`` for ``take``: STREAMSERVE_MAX_WAIT_MS, at least 1 ms (no timeout would hold a
    batch forever)."""
    return max(settings.max_wait_ms, 1.0) / 1000


def faust_app(settings: Settings) -> tuple[faust.App, FaustScorer]:
    """A Faust app whose one agent scores the input topic in micro-batches."""
    app, topic = new_app(settings)
    scorer = FaustScorer(app, settings)

    @app.agent(topic, name="streamserve-scorer")
    async def score(stream: Any) -> None:  # a faust Stream (take_events is not in StreamT)
        async for events in stream.take_events(settings.max_batch_size, batch_window_s(settings)):
            await scorer.score(events)

    @app.timer(settings.metrics_interval_s)
    async def metrics() -> None:
        await scorer.publish_metrics()

    return app, scorer


@dataclass
class _Activity:
    at: float  # monotonic time of the last change of assignment
    assigned: frozenset[Any] = frozenset()


def run_faust_worker(settings: Settings) -> RunSummary:
    """Run the Faust app until SIGTERM/SIGINT, or the idle/max-events limits; the summary."""
    prepare_topics(settings)
    app, scorer = faust_app(settings)
    if settings.http_port:
        serve(scorer.telemetry, settings.http_host, settings.http_port)
    try:
        run_app(app, settings, scorer.summary, scorer.telemetry)
    finally:
        scorer.close()
    return scorer.summary


def run_app(
    app: faust.App, settings: Settings, summary: RunSummary, telemetry: Telemetry | None = None
) -> None:
    """Run ``app`` until SIGTERM/SIGINT, or until ``summary`` reaches the idle or max-events
    limits; keeps ``telemetry``'s health current."""
    activity = _Activity(time.monotonic())

    @app.timer(STOP_CHECK_S)
    async def stop_when_done() -> None:
        """Idle time counts from the last batch or the last change of assignment (a rebalance
        is not idling)."""
        now = time.monotonic()
        assigned = frozenset(app.consumer.assignment())
        if telemetry is not None:
            telemetry.health.loop_turned()
            telemetry.health.assigned = len(assigned)
        if assigned != activity.assigned or app.rebalancing:
            activity.at, activity.assigned = now, assigned
        if settings.max_events and summary.events >= settings.max_events:
            signal.raise_signal(signal.SIGTERM)  # the same clean stop as an operator's SIGTERM
        if settings.exit_when_idle_s:
            last = max(summary.last_batch_done_at or 0.0, activity.at)
            if now - last >= settings.exit_when_idle_s:
                signal.raise_signal(signal.SIGTERM)

    worker = ModeWorker(app, loglevel=settings.log_level.lower(), quiet=True,
                        override_logging=False)  # fmt: skip
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
