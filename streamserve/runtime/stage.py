"""The confluent worker's scoring stage: the batch being scored on the scoring threads, between
the records in hand and the checkpoint.

A batch is scored here, on the loop's thread, when the stage is free and the consumer held
nothing more (trigger ``idle``: no hand-offs, the loop has nothing else to do); otherwise on the
scoring threads, where its lookup overlaps the predict of the batch before it, which is sent
once this one is submitted. Batches overlap: one filling or being decoded, one being looked up
while the one before it is predicted (Redis I/O and XGBoost release the GIL), and up to
STREAMSERVE_MAX_BATCHES_IN_FLIGHT whose outputs await acknowledgement. They are sent in order,
and the checkpoint completes them in order.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import Message

from streamserve.core.window import Trigger
from streamserve.runtime.checkpoint import BatchCheckpoint
from streamserve.runtime.in_hand import InHand
from streamserve.runtime.pipeline import BatchPipeline, OpenBatch, SentBatch
from streamserve.runtime.scoring import ScoredBatch, Submitted


@dataclass(frozen=True)
class ThreadedBatch:
    """A decoded batch whose feature lookup and predict run on the scoring threads."""

    batch: OpenBatch
    submitted: Submitted


class ScoringStage:
    """Opens batches from the records in hand, scores them and hands them, sent, to the
    checkpoint; holds at most one batch on the scoring threads."""

    def __init__(
        self,
        pipeline: BatchPipeline,
        hand: InHand,
        checkpoint: BatchCheckpoint,
        on_sent: Callable[[SentBatch], None],
    ) -> None:
        self.pipeline = pipeline
        self.hand = hand
        self.checkpoint = checkpoint
        self._on_sent = on_sent
        self.current: ThreadedBatch | None = None

    @property
    def busy(self) -> bool:
        """Whether a batch is on the scoring threads."""
        return self.current is not None

    @property
    def events(self) -> int:
        """Records of the batch on the scoring threads."""
        return len(self.current.batch.records) if self.current else 0

    def lookup_free(self, timeout_s: float) -> bool:
        """Whether the lookup thread is free for the next batch (the batch being scored has
        its features); waits up to ``timeout_s``."""
        return self.current is None or self.current.submitted.looked_up_within(timeout_s)

    def predicted(self, timeout_s: float) -> bool:
        """Whether the batch being scored is predicted; waits up to ``timeout_s``."""
        return self.current is None or self.current.submitted.predicted_within(timeout_s)

    def wait(self, timeout_s: float) -> None:
        """Sleep until the batch being scored has its features (while the next one waits in
        hand) or is predicted (when nothing does), at most ``timeout_s``."""
        if self.current is None:
            return
        if self.hand:
            self.current.submitted.looked_up_within(timeout_s)  # then the next batch goes
        else:
            self.current.submitted.predicted_within(timeout_s)  # then this one is sent

    def dispatch(self, trigger: Trigger) -> None:
        """Decode the next batch in hand and score it, here or on the threads (the module's
        docstring); the batch before it is sent once this one is submitted."""
        if not self.hand:
            return
        records, taken = self.hand.next_batch()
        batch = self.pipeline.open(records, trigger, taken)  # may raise: the records stay
        previous = self.current
        if previous is None and trigger == "idle":
            predicted = self.pipeline.score_here(batch)  # None: the store did not answer
            if predicted is not None:
                self.hand.opened(len(records), time.monotonic())
                self._send(batch, predicted)
                return
        if previous is not None:
            # the lookup thread takes one batch at a time; a store error of the batch before
            # is raised here, while both batches' records are still in hand
            previous.submitted.looked_up.result()
        self.current = ThreadedBatch(batch, self.pipeline.score_async(batch))
        self.hand.opened(len(records), time.monotonic())
        if previous is not None:
            self._send_threaded(previous)

    def send_predicted(self) -> None:
        """Send the batch on the threads; raises before producing anything if it failed."""
        if self.current is not None:
            self._send_threaded(self.current)
            self.current = None

    def drop(self) -> list[Message]:
        """Forget the batch being scored and the records in hand; returns their records."""
        scored = list(self.current.batch.records) if self.current else []
        self.current = None
        return [*scored, *self.hand.clear()]  # type: ignore[list-item]

    def _send_threaded(self, threaded: ThreadedBatch) -> None:
        predicted = threaded.submitted.predicted.result()  # re-raises a store error here
        self._send(threaded.batch, predicted)

    def _send(self, batch: OpenBatch, predicted: ScoredBatch) -> None:
        """Produce a scored batch's outputs and hand it to the checkpoint (once there is room)."""
        self.checkpoint.before_produce()
        sent = self.pipeline.send(batch, predicted)
        self.checkpoint.add(sent)
        self._on_sent(sent)
