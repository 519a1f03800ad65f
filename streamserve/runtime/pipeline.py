"""The batch pipeline both runtimes drive, a batch's story in three types: ``open`` gives it an
id and its models and decodes it (an ``OpenBatch``); ``score_here`` or ``score_async`` looks up
its features and predicts (a ``ScoredBatch``, on this thread or the scoring threads); ``send``
encodes its outputs (``BatchOutputs``: predictions, dead letters) and hands them to the producer
(a ``SentBatch``, whose ``Delivery`` tells when the broker has acknowledged every output).

What a batch did is counted once, when the checkpoint completes it (``BatchLedger.record``):
Prometheus, the metrics record and the run summary all read the same ``BatchStats``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from streamserve.config import Settings
from streamserve.core import records as rec
from streamserve.core.batch import BatchOutputs, Position, PreparedBatch, SourceRecord
from streamserve.core.shadow import shadow_batch
from streamserve.core.window import Trigger
from streamserve.io.sink import Delivery, KafkaSink
from streamserve.runtime.identity import worker_id
from streamserve.runtime.models import ModelLoader, ServingModels
from streamserve.runtime.scoring import ScoredBatch, ScoringThreads, Submitted
from streamserve.runtime.summary import RunSummary
from streamserve.telemetry.batch_stats import BatchStats
from streamserve.telemetry.interval import MetricsInterval
from streamserve.telemetry.prometheus import Telemetry
from streamserve.telemetry.stages import StageTimes

log = logging.getLogger("streamserve.worker")


@dataclass(frozen=True)
class OutputTopics:
    """Where a batch's outputs go."""

    predictions: str
    dead_letters: str
    shadow: str


@dataclass(frozen=True)
class OpenBatch:
    """Records decoded by the model that scores them."""

    batch_id: str
    records: Sequence[SourceRecord]
    trigger: Trigger
    serving: ServingModels
    prepared: PreparedBatch
    opened_at: float  # perf_counter
    opened_ms: float  # wall clock
    taken_ms: np.ndarray  # wall clock, per record: when the loop took it from the consumer


@dataclass(frozen=True, eq=False)  # compared by identity
class SentBatch:
    """A batch whose outputs are with the producer; ``delivery`` tells when they are in."""

    batch_id: str
    records: Sequence[SourceRecord]
    positions: list[Position]  # (topic, partition, offset) of each record
    delivery: Delivery
    stats: BatchStats


class BatchPipeline:
    """decode -> lookup -> predict -> encode -> produce, one batch at a time.

    Each batch is scored by the models serving when it opens (``serving()``), so a hot reload
    takes over between batches, never inside one.
    """

    def __init__(
        self,
        worker_id: str,
        serving: Callable[[], ServingModels],
        scoring: ScoringThreads,
        sink: KafkaSink,
        topics: OutputTopics,
        clock_ms: Callable[[], float],
    ) -> None:
        self.worker_id = worker_id
        self.scoring = scoring
        self.sink = sink
        self._serving = serving
        self._topics = topics
        self._clock_ms = clock_ms
        # batch ids: worker id, this pipeline's start (hex ms), sequence; unique across
        # restarts of a worker whose id stays the same (a StatefulSet's pod name, say)
        self._started_ms = int(clock_ms())
        self._seq = 0

    @classmethod
    def of_worker(
        cls, settings: Settings, models: ModelLoader, scoring: ScoringThreads, sink: KafkaSink
    ) -> BatchPipeline:
        """A worker's pipeline: its id, the models serving now, its output topics, wall time
        (in ms, as the loop stamps the records it takes)."""
        topics = OutputTopics(
            settings.predictions_topic, settings.dead_letter_topic, settings.shadow_topic
        )
        name = worker_id(settings)
        return cls(name, lambda: models.serving, scoring, sink, topics, lambda: time.time() * 1000)

    def open(
        self,
        records: Sequence[SourceRecord],
        trigger: Trigger,
        taken: Sequence[tuple[int, float]] = (),
    ) -> OpenBatch:
        """Give the batch its id and model, and decode it; ``taken``: (count, wall-clock ms) of
        each run of ``records`` the loop took from the consumer at once, covering all of them
        (default: now)."""
        opened_at, opened_ms = time.perf_counter(), self._clock_ms()
        self._seq += 1
        serving = self._serving()
        prepared = serving.model.scorer.prepare(records)
        batch_id = rec.batch_id(self.worker_id, self._started_ms, self._seq)
        taken_ms = (
            np.repeat([ms for _, ms in taken], [count for count, _ in taken])
            if taken
            else np.full(len(records), opened_ms)
        )
        return OpenBatch(
            batch_id, records, trigger, serving, prepared, opened_at, opened_ms, taken_ms
        )

    def score_async(self, batch: OpenBatch) -> Submitted:
        """Lookup and predict on the scoring threads (retries, waits or degrades on outages)."""
        return self.scoring.submit(batch.prepared, batch.serving)

    def score_here(self, batch: OpenBatch) -> ScoredBatch | None:
        """Lookup and predict on this thread if the store answers at once; else None."""
        return self.scoring.score_here(batch.prepared, batch.serving)

    def send(self, batch: OpenBatch, predicted: ScoredBatch) -> SentBatch:
        """Encode the outputs and hand them to the producer; returns before they are in."""
        scored_at_ms = int(self._clock_ms())
        outputs = encode(predicted, scored_at_ms, batch.batch_id)
        delivery = Delivery()
        topics, sink = self._topics, self.sink
        sink.send(topics.predictions, outputs.predictions, delivery)
        if outputs.dead_letters:
            sink.send_with_headers(topics.dead_letters, outputs.dead_letters, delivery)
        if outputs.shadow is not None:
            sink.send(topics.shadow, outputs.shadow.predictions, delivery)
        service_s = time.perf_counter() - batch.opened_at
        stats = BatchStats(
            size=len(batch.records),
            trigger=batch.trigger,
            outputs=outputs,
            model_name=batch.serving.model.bundle.name,
            lookup_ms=predicted.lookup_ms,
            predict_ms=predicted.predict_ms,
            service_s=service_s,
            stages=stage_times(batch, predicted, scored_at_ms - outputs.latencies_ms, service_s),
        )
        if log.isEnabledFor(logging.DEBUG):
            log_sent(batch.batch_id, stats)
        return SentBatch(batch.batch_id, batch.records, batch.prepared.positions, delivery, stats)

    def run(self, records: Sequence[SourceRecord], trigger: Trigger = "size") -> SentBatch:
        """Every stage of one batch on the calling thread's terms (waits for the scoring)."""
        batch = self.open(records, trigger)
        predicted = self.score_here(batch) or self.score_async(batch).predicted.result()
        return self.send(batch, predicted)


def encode(predicted: ScoredBatch, scored_at_ms: int, batch_id: str) -> BatchOutputs:
    """The served model's outputs, with the challenger's predictions attached."""
    model, challenger = predicted.serving.model, predicted.serving.shadow
    outputs = model.scorer.encode(predicted.served, scored_at_ms, batch_id)
    if challenger is not None and predicted.shadow is not None:
        outputs.shadow = shadow_batch(
            model.scorer,
            predicted.served,
            challenger.scorer,
            predicted.shadow,
            scored_at_ms,
            batch_id,
        )
    return outputs


def stage_times(
    batch: OpenBatch, predicted: ScoredBatch, record_ms: np.ndarray, service_s: float
) -> StageTimes:
    """Each prediction's time before its batch opened, and the batch's stages after;
    ``record_ms``: each prediction's input record timestamp (NaN: none)."""
    prepared = batch.prepared
    taken_ms = batch.taken_ms[prepared.events.indices] if prepared.rejections else batch.taken_ms
    handling_ms = service_s * 1000 - predicted.lookup_ms - predicted.predict_ms
    return StageTimes(
        to_worker_ms=taken_ms - record_ms,
        window_ms=batch.opened_ms - taken_ms,
        lookup_ms=predicted.lookup_ms,
        predict_ms=predicted.predict_ms,
        handling_ms=max(handling_ms, 0.0),
    )


def log_sent(batch_id: str, stats: BatchStats) -> None:
    """A DEBUG line per batch handed to the producer."""
    fields = {
        "batch_id": batch_id,
        "records": stats.size,
        "trigger": stats.trigger,
        "predictions": len(stats.outputs.predictions),
        "dead_letters": len(stats.outputs.dead_letters),
        "lookup_ms": round(stats.lookup_ms, 3),
        "predict_ms": round(stats.predict_ms, 3),
    }
    log.debug(
        "batch %(batch_id)s sent: %(records)d records, trigger %(trigger)s, %(predictions)d "
        "predictions, %(dead_letters)d dead letters, lookup %(lookup_ms).2f ms, predict "
        "%(predict_ms).2f ms",
        fields,
        extra=fields,
    )


class BatchLedger:
    """Books a completed batch in the run summary, the metrics record and Prometheus."""

    def __init__(self, summary: RunSummary, metrics: MetricsInterval, telemetry: Telemetry) -> None:
        self.summary = summary
        self.metrics = metrics
        self.telemetry = telemetry

    def record(self, batch: SentBatch) -> None:
        """Each book on its own: a failure in one is logged and counted, never raised (the
        batch's outputs are delivered; its offsets are stored whatever the counting does)."""
        stats = batch.stats
        outputs, shielded = stats.outputs, self.telemetry.guard.shielded
        with shielded("stage times"):
            ack_ms, predictions = batch.delivery.ack_ms, len(outputs.predictions)
            self.summary.stages.add(stats.stages, ack_ms, predictions)
            self.telemetry.record_stages(stats.stages, ack_ms, predictions)
        with shielded("run summary"):
            self.summary.batch_done(
                stats.size, len(outputs.predictions), len(outputs.dead_letters), stats.trigger
            )
        with shielded("metrics record"):
            self.metrics.record_batch(stats)
        with shielded("prometheus"):
            self.telemetry.record_batch(stats)

    def undelivered(self, records: int) -> None:
        """Output records the broker refused (the checkpoint stops there)."""
        with self.telemetry.guard.shielded("prometheus"):
            self.telemetry.delivery_failures.inc(records)

    def commit_failed(self) -> None:
        """A commit of offsets or of a transaction failed (it is retried)."""
        with self.telemetry.guard.shielded("prometheus"):
            self.telemetry.commit_failures.inc()
