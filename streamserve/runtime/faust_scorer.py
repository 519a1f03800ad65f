"""``FaustScorer``: the core pipeline for batches of Faust events, and their delivery.

A batch is decoded, looked up in Redis and scored on the event loop's thread when the store
answers at the first try (about a millisecond for a small batch; handing it to the scoring thread
and back costs more than that while Faust keeps the loop busy), else on the scoring thread, which
retries, waits or degrades as STREAMSERVE_STORE_OUTAGE_POLICY says. Outputs go through a
confluent-kafka producer (about 4 µs a record; aiokafka's send costs ten times that in Python)
whose delivery reports the loop polls for: each batch learns when the broker acknowledged all of
its records, without a flush that would wait for later batches too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import faust
import msgspec
from confluent_kafka import KafkaError

from streamserve.config import Settings
from streamserve.core.batch import OutputRecord, ScoredBatch
from streamserve.core.window import Trigger
from streamserve.io.kafka import make_producer
from streamserve.metrics import MetricsWindow
from streamserve.runtime.delivery import undelivered
from streamserve.runtime.models import Models, ModelWatcher, serving_telemetry
from streamserve.runtime.scoring import ScoringThread
from streamserve.runtime.startup import load_models, wall_ms
from streamserve.runtime.summary import RunSummary

DELIVERY_POLL_S = 0.001  # how often the loop asks for delivery reports while any are due
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


class Outputs:
    """Records produced together (a batch's outputs, a metrics record); ``done`` resolves once
    the broker acknowledged or refused every one of them."""

    def __init__(self, count: int) -> None:
        self.remaining = count
        self.errors: list[KafkaError] = []
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if count == 0:
            self.done.set_result(None)

    def on_delivery(self, error: KafkaError | None, _message: object) -> None:
        """The producer's per-record report (called on the loop's thread, from a poll)."""
        if error is not None:
            self.errors.append(error)
        self.remaining -= 1
        if self.remaining == 0 and not self.done.done():
            self.done.set_result(None)

    def check(self) -> None:
        """Raise DeliveryError if any record was refused."""
        if self.errors:
            raise undelivered(self.errors)


@dataclass(frozen=True)
class SentBatch:
    """A scored batch whose outputs are produced; ``outputs.done`` tells when they are
    delivered (then ``FaustScorer.record`` books it)."""

    scored: ScoredBatch
    outputs: Outputs
    size: int
    lookup_ms: float
    predict_ms: float


class FaustScorer:
    """Scores batches of Faust events and sends the predictions and dead letters.

    Mount it in your own agent::

        scorer = FaustScorer(app, load_settings())

        @app.agent(events_topic)
        async def score(stream):
            async for events in stream.take_events(1000, within=0.005):
                await scorer.score(events)  # returns once every output is acknowledged

    The topics, models and feature store come from the settings (STREAMSERVE_* variables); a
    new model bundle takes over between batches once ``watcher.start()`` runs.
    """

    def __init__(self, app: faust.App, settings: Settings, models: Models | None = None) -> None:
        self.app = app
        self.settings = settings
        self.models = models = models or load_models(settings)
        model = models.serving.model
        self.summary = RunSummary()
        self.telemetry = serving_telemetry(models)
        self.metrics = MetricsWindow(settings.worker_id, model.bundle.name, model.bundle.version)
        self.metrics.start(wall_ms())
        self.watcher = ModelWatcher(models, self.telemetry)
        self._thread = ScoringThread(settings.store_outage_policy)
        self._seq = 0
        # every record reports its delivery: a batch is done when all of its own records are
        self._producer = make_producer(settings, **{"delivery.report.only.error": False})
        self._poller: asyncio.Task[None] | None = None

    async def score(self, events: Sequence[Any]) -> ScoredBatch:
        """Score one batch and wait until the broker acknowledged all of its outputs."""
        sent = await self.send(events)
        await sent.outputs.done
        sent.outputs.check()
        self.record(sent)
        return sent.scored

    async def send(self, events: Sequence[Any]) -> SentBatch:
        """Score one batch and produce its outputs; returns before they are acknowledged."""
        if not events:
            raise ValueError("an empty batch")
        self.summary.record_arrived()
        self._seq += 1
        batch_id = f"{self.settings.worker_id}-{self._seq}"
        serving = self.models.serving  # a new model takes over from the next batch on
        prepared = serving.model.scorer.prepare([FaustRecord(e.message) for e in events])
        predicted = self._thread.score_here(prepared, serving)
        if predicted is None:  # the store did not answer at once: retry, wait or degrade
            predicted = await asyncio.wrap_future(self._thread.submit(prepared, serving))
        scored = predicted.encode(wall_ms(), batch_id)
        s = self.settings
        shadow = scored.shadow.predictions if scored.shadow is not None else []
        outputs = self._produce([
            (s.predictions_topic, scored.predictions), (s.dead_letter_topic, scored.dead_letters),
            (s.shadow_topic, shadow),
        ])  # fmt: skip
        return SentBatch(scored, outputs, len(events), predicted.lookup_ms, predicted.predict_ms)

    def record(self, sent: SentBatch) -> None:
        """Book a delivered batch in the summary, the metrics record and the telemetry."""
        scored, size, times = sent.scored, sent.size, (sent.lookup_ms, sent.predict_ms)
        trigger: Trigger = "size" if size >= self.settings.max_batch_size else "time"
        self.summary.batch_done(size, len(scored.predictions), len(scored.dead_letters), trigger)
        self.metrics.record_batch(scored, size, trigger, *times)
        self.telemetry.record_batch(scored, size, trigger, *times)

    async def publish_metrics(self) -> None:
        """Send the metrics record of the interval that ends now (lag is not known here)."""
        record = self.metrics.close(wall_ms(), [], self.models.store_available)
        output = OutputRecord(self.settings.worker_id.encode(), msgspec.json.encode(record), [])
        outputs = self._produce([(self.settings.metrics_topic, [output])])
        await outputs.done
        outputs.check()

    def poll_deliveries(self, timeout_s: float = 0.0) -> None:
        """Serve the producer's delivery reports (they resolve ``Outputs.done``)."""
        self._producer.poll(timeout_s)

    def close(self) -> None:
        self.watcher.stop()
        self._thread.shutdown()
        self._producer.flush(DELIVERY_TIMEOUT_S)

    def _produce(self, batches: list[tuple[str, list[OutputRecord]]]) -> Outputs:
        outputs = Outputs(sum(len(records) for _, records in batches))
        produce, report = self._producer.produce, outputs.on_delivery
        for topic, records in batches:
            for key, value, headers in records:
                while True:
                    try:
                        produce(topic, value, key, headers=headers, on_delivery=report)
                        break
                    except BufferError:  # the local queue is full: let deliveries drain it
                        self.poll_deliveries(0.05)
        if outputs.remaining and (self._poller is None or self._poller.done()):
            self._poller = asyncio.get_running_loop().create_task(self._poll_while_due())
        return outputs

    async def _poll_while_due(self) -> None:
        """Poll while the producer holds records or reports not yet served (its queue length
        counts both)."""
        while len(self._producer):
            self.poll_deliveries()
            await asyncio.sleep(DELIVERY_POLL_S)
