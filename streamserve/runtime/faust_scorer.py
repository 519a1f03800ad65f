"""``FaustScorer``: the batch pipeline and the checkpoint for batches of Faust events.

A batch is decoded, looked up in Redis and scored on the event loop's thread when the store
answers at the first try (about a millisecond for a small batch; handing it to the scoring threads
and back costs more than that while Faust keeps the loop busy), else on the scoring threads, which
retry, wait or degrade as STREAMSERVE_STORE_OUTAGE_POLICY says. Outputs go through a
confluent-kafka producer (aiokafka's send costs ten times as much in Python); the loop polls it
for delivery reports, and the checkpoint acks a batch's events once all of its outputs are
acknowledged, oldest batch first.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import faust

from streamserve.config import Settings
from streamserve.core.batch import BatchOutputs
from streamserve.core.window import Trigger
from streamserve.errors import DeliveryError
from streamserve.io.kafka import make_producer
from streamserve.io.sink import KafkaSink
from streamserve.runtime.checkpoint import Checkpoint
from streamserve.runtime.clock import wall_ms
from streamserve.runtime.identity import with_worker_id, worker_id
from streamserve.runtime.metrics_records import MetricsRecords
from streamserve.runtime.models import ModelLoader, ModelWatcher, serving_telemetry
from streamserve.runtime.pipeline import BatchLedger, BatchPipeline, SentBatch
from streamserve.runtime.scoring import ScoringThreads
from streamserve.runtime.startup import load_models
from streamserve.runtime.summary import RunSummary
from streamserve.telemetry.interval import MetricsInterval

DELIVERY_POLL_S = 0.001  # how often the loop serves delivery reports while any are due
DELIVERY_TIMEOUT_S = 30.0


class FaustRecord:
    """A Faust event's message as the core's SourceRecord (the confluent Message's accessors)."""

    __slots__ = ("_message", "event")

    def __init__(self, event: Any) -> None:
        self.event = event
        self._message = event.message

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


class EventAcks:
    """``OffsetStore`` for Faust: a completed batch's events are acked, and Faust commits acked
    offsets on its own timer (STREAMSERVE_COMMIT_INTERVAL_MS).

    Faust's ``take_events`` acks a batch's events when the agent asks for the next batch; the
    scorer holds each event by one more reference (``incref``) until its batch is completed, so
    Faust commits no offset past an unacknowledged output.
    """

    def store(self, batch: SentBatch) -> None:
        for record in batch.records:
            event = record.event  # type: ignore[attr-defined]
            if event.ack():  # the last reference: Faust may commit past it now
                message = event.message
                event.app.sensors.on_message_out(message.tp, message.offset, message)

    def commit(self) -> None:
        """Nothing to do: Faust commits acked offsets itself."""

    def sent(self, batch: SentBatch) -> None:
        """Nothing to do: events are held (incref) from the start."""

    @property
    def behind(self) -> bool:
        """Never: Faust's own commits are not seen here."""
        return False

    def retry_commit(self) -> None:
        """Nothing to do: Faust commits acked offsets itself."""


class FaustScorer:
    """Scores batches of Faust events and sends the predictions and dead letters.

    Mount it in your own agent::

        scorer = FaustScorer(app, load_settings())

        @app.agent(events_topic)
        async def score(stream):
            async for events in stream.take_events(1000, within=0.005):
                await scorer.score(events)  # returns once every output is acknowledged

    ``send`` instead returns once the outputs are produced, so the agent takes the next batch
    while up to STREAMSERVE_MAX_BATCHES_IN_FLIGHT batches await acknowledgement. The topics,
    models and feature store come from the settings (STREAMSERVE_* variables); a new model
    bundle takes over between batches once ``watcher.start()`` runs. A refused output (or
    ``fail``) calls ``on_failure`` once, and nothing from that batch on is ever acked.
    """

    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        models: ModelLoader | None = None,
        on_failure: Callable[[Exception], None] | None = None,
    ) -> None:
        self.app = app
        self.settings = settings = with_worker_id(settings)
        self.worker_id = worker_id(settings)
        self.models = models = models or load_models(settings)
        model = models.serving.model
        self.summary = RunSummary()
        self.telemetry = serving_telemetry(models)
        interval = MetricsInterval(self.worker_id, model.bundle.name, model.bundle.version)
        interval.start(wall_ms())
        self.watcher = ModelWatcher(models, self.telemetry)
        self.failure: Exception | None = None
        self._on_failure = on_failure
        self._scoring_threads = ScoringThreads(settings.store_outage_policy)
        self.sink = KafkaSink(make_producer(settings))
        self.metrics = MetricsRecords(
            interval,
            self.sink,
            settings.metrics_topic,
            settings.metrics_interval_s,
            self.telemetry.guard,
            lambda: models.store_available,
        )
        self.pipeline = BatchPipeline.of_worker(settings, models, self._scoring_threads, self.sink)
        ledger = BatchLedger(self.summary, interval, self.telemetry)
        self.checkpoint = checkpoint = Checkpoint(
            self.sink, EventAcks(), ledger, settings.max_batches_in_flight
        )
        self.telemetry.batches_in_flight.set_function(lambda: float(len(checkpoint)))
        self._poller: asyncio.Task[None] | None = None

    async def score(self, events: Sequence[Any]) -> BatchOutputs:
        """Score one batch and wait until the broker acknowledged all of its outputs."""
        sent = await self.send(events)
        while sent is not None and self.failure is None and sent in self.checkpoint:
            await self._serve_deliveries()
        if self.failure is not None:
            raise self.failure
        assert sent is not None
        return sent.stats.outputs

    async def send(self, events: Sequence[Any]) -> SentBatch | None:
        """Score one batch and produce its outputs; returns before they are acknowledged (None
        after a failure: the events are then held, never acked)."""
        if not events:
            raise ValueError("an empty batch")
        for event in events:
            event.message.incref()  # released by EventAcks once the batch is completed
        self.summary.record_arrived()
        while self.checkpoint.full and self.failure is None:
            await self._serve_deliveries()
        if self.failure is not None:
            return None
        batch = self.pipeline.open([FaustRecord(e) for e in events], self._trigger(len(events)))
        predicted = self.pipeline.score_here(batch)
        if predicted is None:  # the store did not answer at once: retry, wait or degrade
            predicted = await asyncio.wrap_future(self.pipeline.score_async(batch).predicted)
        sent = self.pipeline.send(batch, predicted)
        self.checkpoint.add(sent)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll_while_in_flight())
        return sent

    def _trigger(self, size: int) -> Trigger:
        if size >= self.settings.max_batch_size:
            return "size"
        return "stop" if self.app.should_stop else "time"

    def publish_metrics(self) -> None:
        """Send the metrics record of the interval that ends now (lag is not known here)."""
        self.metrics.publish(wall_ms(), list)

    def drain(self, timeout_s: float = DELIVERY_TIMEOUT_S) -> None:
        """On stop: wait (blocking, the loop is stopping) for the batches in flight."""
        deadline = time.monotonic() + timeout_s
        while len(self.checkpoint) and self.failure is None and time.monotonic() < deadline:
            self.sink.poll(0.01)
            self._advance()

    def close(self) -> None:
        self.watcher.stop()
        self._scoring_threads.shutdown()
        self.sink.flush(DELIVERY_TIMEOUT_S)

    async def _poll_while_in_flight(self) -> None:
        while len(self.checkpoint) and self.failure is None:
            await self._serve_deliveries()

    async def _serve_deliveries(self) -> None:
        self.sink.poll(0)
        self._advance()
        await asyncio.sleep(DELIVERY_POLL_S)

    def fail(self, exc: Exception) -> None:
        """Stop acking (once): the batches in flight and every later one stay unacked, so Faust
        commits none of them; ``on_failure`` is told."""
        if self.failure is None:
            self.failure = exc
            if self._on_failure is not None:
                self._on_failure(exc)

    def _advance(self) -> None:
        try:
            self.checkpoint.advance()
        except DeliveryError as exc:
            self.fail(exc)
