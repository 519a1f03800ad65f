"""The faust-streaming runtime (STREAMSERVE_RUNTIME=faust).

The agent takes micro-batches with ``stream.take_events(max_batch_size, within=max_wait)`` (the
events flavour of ``take``: it keeps each record's topic, partition, offset and headers) and runs
the confluent runtime's core pipeline on them through ``FaustScorer``. It does not wait for a
batch's outputs to be acknowledged before it takes the next batch: while it waited, Faust stopped
filling the next one, and the runtime drained at half of Faust's own rate. Instead each event is
acked only once the outputs of its batch are delivered (``DeliveryAcks``), so Faust still commits
no offset past an undelivered output.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import faust
from mode import Worker as ModeWorker

from streamserve.config import Settings
from streamserve.errors import StreamserveError
from streamserve.io.http import serve
from streamserve.runtime.faust_scorer import FaustScorer, SentBatch
from streamserve.runtime.startup import prepare_topics
from streamserve.runtime.summary import RunSummary
from streamserve.telemetry import Telemetry

__all__ = ["FaustScorer", "faust_app", "new_app", "run_app", "run_faust_worker"]

log = logging.getLogger("streamserve.faust")
STOP_CHECK_S = 0.1
MAX_IN_FLIGHT = 8  # batches whose outputs may be unacknowledged at once
DRAIN_TIMEOUT_S = 10.0  # on stop: how long to wait for the outputs in flight


class DeliveryAcks:
    """Acks each event once the outputs of its batch are delivered, so the agent can take the
    next batch while the last ones' outputs are in flight.

    Faust's ``take_events`` acks a batch's events when the agent asks for the next batch; each
    event is held until then by one more reference on its message. At most ``MAX_IN_FLIGHT``
    batches wait for delivery. A failed batch stops the worker through ``on_failure``: its events
    (and the later ones) are never acked, so Faust does not commit them and a restart reads them
    again.
    """

    def __init__(self, scorer: FaustScorer, on_failure: Callable[[], None]) -> None:
        self._scorer = scorer
        self._app = scorer.app
        self._on_failure = on_failure
        self._in_flight: deque[tuple[SentBatch, Sequence[Any]]] = deque()
        self.failure: Exception | None = None

    async def score(self, events: Sequence[Any]) -> None:
        """Score and send a batch; returns before its outputs are acknowledged, unless
        ``MAX_IN_FLIGHT`` batches are already waiting. After a failure, batches are only held
        (never acked) until the worker has stopped."""
        for event in events:
            event.message.incref()
        if self.failure is not None:
            return
        try:
            sent = await self._scorer.send(events)
        except Exception as exc:
            self.fail(exc)
            return
        self._in_flight.append((sent, events))
        sent.outputs.done.add_done_callback(lambda _: self.settle())
        while len(self._in_flight) > MAX_IN_FLIGHT and self.failure is None:
            await asyncio.wait([self._in_flight[0][0].outputs.done])  # wait() never cancels it

    def settle(self) -> None:
        """Ack the events of the delivered batches, oldest first."""
        while self._in_flight and self._in_flight[0][0].outputs.done.done():
            sent, events = self._in_flight[0]
            try:
                sent.outputs.check()
            except StreamserveError as exc:
                self.fail(exc)
                return
            self._in_flight.popleft()
            self._scorer.record(sent)
            for event in events:
                if event.ack():  # the last reference: Faust may commit past it now
                    message = event.message
                    event.app.sensors.on_message_out(message.tp, message.offset, message)

    def drain(self, timeout_s: float = DRAIN_TIMEOUT_S) -> None:
        """On stop: wait (blocking, the loop is stopping) for the outputs in flight; ack them."""
        deadline = time.monotonic() + timeout_s
        while self._in_flight and self.failure is None and time.monotonic() < deadline:
            self._scorer.poll_deliveries(0.01)
            self.settle()

    def fail(self, exc: Exception) -> None:
        """Stop the worker (once); ``run_faust_worker`` raises ``exc`` when it has stopped.

        The events of the batches in flight are never acked, so Faust does not commit them;
        and it must not wait for them to be acked when it stops (``stream_wait_empty``)."""
        if self.failure is None:
            self.failure = exc
            self._app.conf.stream_wait_empty = False
            log.error("stopping: %s", exc, exc_info=not isinstance(exc, StreamserveError))
            self._on_failure()


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


def faust_app(settings: Settings) -> tuple[faust.App, FaustScorer, DeliveryAcks]:
    """A Faust app whose one agent scores the input topic in micro-batches."""
    app, topic = new_app(settings)
    scorer = FaustScorer(app, settings)
    acks = DeliveryAcks(scorer, on_failure=lambda: signal.raise_signal(signal.SIGTERM))

    @app.agent(topic, name="streamserve-scorer")
    async def score(stream: Any) -> None:  # a faust Stream (take_events is not in StreamT)
        try:
            async for events in stream.take_events(
                settings.max_batch_size, batch_window_s(settings)
            ):
                await acks.score(events)
        finally:
            acks.drain()

    @app.timer(settings.metrics_interval_s)
    async def metrics() -> None:
        try:
            await scorer.publish_metrics()
        except StreamserveError as exc:
            acks.fail(exc)

    return app, scorer, acks


@dataclass
class _Activity:
    at: float  # monotonic time of the last change of assignment
    assigned: frozenset[Any] = frozenset()


def run_faust_worker(settings: Settings) -> RunSummary:
    """Run the Faust app until SIGTERM/SIGINT, or the idle/max-events limits; the summary."""
    prepare_topics(settings)
    app, scorer, acks = faust_app(settings)
    scorer.watcher.start()
    if settings.http_port:
        serve(scorer.telemetry, settings.http_host, settings.http_port)
    try:
        run_app(app, settings, scorer.summary, scorer.telemetry)
    finally:
        scorer.close()
    if acks.failure is not None:
        raise acks.failure
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
