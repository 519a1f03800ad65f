"""The checkpoint: the one object that keeps the at-least-once promise, for both runtimes."""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Protocol

from confluent_kafka import KafkaError

from streamserve.errors import DeliveryError
from streamserve.io.sink import KafkaSink
from streamserve.runtime.pipeline import BatchLedger, SentBatch

log = logging.getLogger("streamserve.checkpoint")

WAIT_SLICE_S = 0.001  # while waiting for acknowledgements, serve delivery reports this often
SLOW_ACK_LOG_S = 5.0  # say so in the log when a wait for the broker lasts this long


class OffsetStore(Protocol):
    """Where a completed batch's input positions go: the confluent runtime stores offsets for
    the consumer to commit; the Faust runtime acks the batch's events."""

    def sent(self, batch: SentBatch) -> None:
        """A batch's outputs went to the producer (it completes later, in order)."""

    def store(self, batch: SentBatch) -> None: ...

    def commit(self) -> None: ...

    @property
    def behind(self) -> bool:
        """What a crash would make the group score again passed its limit: take no more
        records until a commit lands."""
        ...

    def retry_commit(self) -> None:
        """While behind: ask for a commit again."""


def undelivered(errors: list[KafkaError]) -> DeliveryError:
    """The error for output records the broker refused (or that timed out)."""
    return DeliveryError(f"{len(errors)} output records were not delivered: {errors[0].str()}")


class BatchCheckpoint(Protocol):
    """What the loop asks of a checkpoint, at least once (``Checkpoint``) or exactly once
    (``transactions.TransactionalCheckpoint``): sent batches, in order, completed once the
    broker acknowledged them, and their offsets committed."""

    def __len__(self) -> int:
        """Batches in flight: sent, not completed."""
        ...

    def __iter__(self) -> Iterator[SentBatch]: ...

    @property
    def full(self) -> bool:
        """STREAMSERVE_MAX_BATCHES_IN_FLIGHT are in flight."""
        ...

    @property
    def events_in_flight(self) -> int: ...

    @property
    def behind(self) -> bool:
        """Input not confirmed committed is past its limit: score no more for now."""
        ...

    def retry_commit(self) -> None: ...

    def before_produce(self) -> None:
        """Wait for room (and, exactly once, for an open transaction) before producing."""
        ...

    def add(self, batch: SentBatch) -> None: ...

    def advance(self) -> int:
        """Complete the acknowledged batches at the head; returns how many."""
        ...

    def due_in_s(self) -> float:
        """How long the loop may sleep before the checkpoint needs a turn."""
        ...

    def drain(self) -> None:
        """Wait until every batch in flight is completed."""
        ...

    def commit(self) -> None: ...

    def abandon(self) -> None:
        """The loop failed: complete nothing more (exactly once: abort the transaction)."""
        ...


class Checkpoint:
    """Batches whose outputs await the broker's acknowledgement, completed strictly in order.

    The order, for every batch (the README, "Batching and delivery", states the same):

    1. the pipeline produces all of the batch's outputs (``add``);
    2. the broker acknowledges every one of them (the batch's ``Delivery``);
    3. the batch's input positions are stored, strictly in input order: a batch completes only
       once it is the oldest in flight, so a stored offset never passes an unacknowledged output
       (``advance``);
    4. stored offsets are committed: on the consumer's timer, on revoke and on shutdown
       (``commit``), and by input time as well while catching up; while the batches in
       flight and the offsets no commit confirmed span more than about a commit interval of
       input (catching up, or a rebalance that holds commits), the checkpoint is ``behind``
       and the worker takes no more records, so a crash repeats little.

    Up to ``max_in_flight`` batches await acknowledgement at once, each tracked on its own, so
    the loop never waits for a whole producer flush. A refused output raises ``DeliveryError``
    from ``advance`` and nothing is stored from that batch on, now or later: the worker stops
    and a restart reads them again.
    """

    def __init__(
        self, sink: KafkaSink, offsets: OffsetStore, ledger: BatchLedger, max_in_flight: int
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.max_in_flight = max_in_flight
        self._sink = sink
        self._offsets = offsets
        self._ledger = ledger
        self._in_flight: deque[SentBatch] = deque()
        self._failed: DeliveryError | None = None

    def add(self, batch: SentBatch) -> None:
        """A batch whose outputs were all handed to the producer."""
        self._in_flight.append(batch)
        self._offsets.sent(batch)

    def __len__(self) -> int:
        return len(self._in_flight)

    def __iter__(self) -> Iterator[SentBatch]:
        return iter(self._in_flight)

    @property
    def full(self) -> bool:
        return len(self._in_flight) >= self.max_in_flight

    @property
    def events_in_flight(self) -> int:
        return sum(batch.stats.size for batch in self._in_flight)

    @property
    def behind(self) -> bool:
        """What a crash would repeat (batches in flight, offsets not committed) passed its
        limit: take no more records until a commit lands (see runtime/offsets.py)."""
        return self._offsets.behind

    def retry_commit(self) -> None:
        self._offsets.retry_commit()

    def advance(self) -> int:
        """Complete the acknowledged batches at the head, in order; returns how many.

        Raises DeliveryError if the oldest batch had an output refused (and again on every
        later call: a failed checkpoint never moves on)."""
        if self._failed is not None:
            raise self._failed
        completed = 0
        in_flight = self._in_flight
        while in_flight and in_flight[0].delivery.done:
            batch = in_flight[0]
            if batch.delivery.errors:
                self._ledger.undelivered(len(batch.delivery.errors))
                self._failed = undelivered(batch.delivery.errors)
                raise self._failed
            in_flight.popleft()
            self._offsets.store(batch)
            self._ledger.record(batch)
            completed += 1
        return completed

    def due_in_s(self) -> float:
        """Nothing here is due at a time (the consumer commits on its own timer)."""
        return math.inf

    def before_produce(self) -> None:
        """Before a batch's outputs are produced: serve delivery reports until fewer than
        ``max_in_flight`` batches are in flight."""
        self._wait(lambda: not self.full)

    def drain(self) -> None:
        """Serve delivery reports until every batch in flight is completed."""
        self._wait(lambda: not self._in_flight)

    def commit(self) -> None:
        """Commit what was stored (on revoke and shutdown; a timer commits in between)."""
        self._offsets.commit()

    def abandon(self) -> None:
        """The worker failed: nothing to undo (what was not stored stays uncommitted)."""

    def _wait(self, enough: Callable[[], bool]) -> None:
        self._sink.poll(0)
        self.advance()
        started = logged = time.monotonic()
        while not enough():
            self._sink.poll(WAIT_SLICE_S)
            self.advance()
            if time.monotonic() - logged >= SLOW_ACK_LOG_S:
                logged = time.monotonic()
                log.info(
                    "waiting %.0f s for the broker to acknowledge %d batches",
                    logged - started,
                    len(self._in_flight),
                )
