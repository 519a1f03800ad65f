"""The exactly-once checkpoint: outputs and the input offsets they cover, committed together in
one Kafka transaction (STREAMSERVE_PROCESSING_GUARANTEE=exactly-once, confluent runtime)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from streamserve.errors import StreamserveError
from streamserve.runtime.checkpoint import undelivered
from streamserve.runtime.offsets import next_offsets
from streamserve.runtime.pipeline import BatchLedger, SentBatch

log = logging.getLogger("streamserve.transactions")

TRANSACTION_CALL_TIMEOUT_S = 30.0  # init, send-offsets, commit and abort give up after this
COMMIT_TRIES = 3  # a commit failing with a retriable error is tried this often in all
PURGED = (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT)  # an abort's, not refusals


class TransactionAborted(StreamserveError):
    """The open transaction was aborted: none of its outputs will ever be visible to a
    read_committed consumer and its input offsets did not move; its records must be read
    again from the committed offsets."""


class TransactionalCheckpoint:
    """Batches whose outputs go into the open transaction, committed with their offsets.

    The order, for every transaction (the README, "Exactly-once", states the same):

    1. it begins before its first batch's outputs are produced (``before_produce``);
    2. the pipeline produces the outputs of one or more batches into it (``add``): predictions,
       dead letters and shadow predictions alike;
    3. it closes once it is ``interval_s`` old (``advance``), once it holds ``max_batches``
       batches (``before_produce``), and on revoke and shutdown (``drain``): the consumer
       positions after its batches are sent to it with the consumer's group metadata, so a
       zombie of an older group generation is fenced, then ``commit_transaction`` waits for
       every output's acknowledgement and commits outputs and offsets at once;
    4. if it cannot commit, it is aborted (``TransactionAborted``: the worker reads those
       records again from the committed offsets); an output the broker refused aborts it and
       stops the worker (``DeliveryError``: the same output would be refused again); a fenced
       producer (another worker took over this transactional.id) stops the worker.
    """

    def __init__(
        self,
        producer: Producer,
        consumer: Consumer,
        ledger: BatchLedger,
        interval_s: float,
        max_batches: int,
    ) -> None:
        self.producer = producer
        self._consumer = consumer
        self._ledger = ledger
        self._interval_s = interval_s
        self._max_batches = max_batches
        self._batches: list[SentBatch] = []
        self._opened_at: float | None = None  # monotonic; None: no transaction open
        # fences an earlier producer with this transactional.id and aborts its open transaction
        producer.init_transactions(TRANSACTION_CALL_TIMEOUT_S)

    def __len__(self) -> int:
        return len(self._batches)

    def __iter__(self) -> Iterator[SentBatch]:
        """The batches in the open transaction."""
        return iter(self._batches)

    @property
    def full(self) -> bool:
        return len(self._batches) >= self._max_batches

    @property
    def events_in_flight(self) -> int:
        return sum(batch.stats.size for batch in self._batches)

    @property
    def behind(self) -> bool:
        """Never: offsets are committed with the outputs, in one transaction."""
        return False

    def retry_commit(self) -> None:
        """Nothing to do (never behind)."""

    def before_produce(self) -> None:
        """Before a batch's outputs are produced: commit the open transaction if it is full,
        and begin one if none is open."""
        if self.full:
            self._commit()
        if self._opened_at is None:
            self.producer.begin_transaction()
            self._opened_at = time.monotonic()

    def add(self, batch: SentBatch) -> None:
        """A batch whose outputs were all produced into the open transaction."""
        self._batches.append(batch)

    def advance(self) -> int:
        """Commit the open transaction once it is ``interval_s`` old; returns how many batches
        that completed."""
        if self._opened_at is None or time.monotonic() - self._opened_at < self._interval_s:
            return 0
        return self._commit()

    def due_in_s(self) -> float:
        """Seconds until the open transaction is due to commit (``advance``)."""
        if self._opened_at is None:
            return math.inf
        return max(self._opened_at + self._interval_s - time.monotonic(), 0.0)

    def drain(self) -> None:
        """Commit the open transaction now (revoke, shutdown)."""
        if self._opened_at is not None:
            self._commit()

    def commit(self) -> None:
        """Nothing to do: offsets are committed inside each transaction (see ``drain``)."""

    def abandon(self) -> None:
        """The worker failed: abort the open transaction, so none of it is ever visible and
        its offsets stay where they were."""
        if self._opened_at is None:
            return
        batches, self._batches, self._opened_at = self._batches, [], None
        try:
            self.producer.abort_transaction(TRANSACTION_CALL_TIMEOUT_S)
            ids = ", ".join(batch.batch_id for batch in batches)
            log.warning("aborted the open transaction (batches %s)", ids or "none")
        except KafkaException as exc:
            log.warning("could not abort the open transaction: %s", exc.args[0].str())

    def _commit(self) -> int:
        """Commit the open transaction with the offsets after its batches; abort it on an error
        that needs it (see the class docstring)."""
        batches = self._batches
        for attempt in range(1, COMMIT_TRIES + 1):
            try:
                if batches:
                    self._send_offsets(batches)
                self.producer.commit_transaction(TRANSACTION_CALL_TIMEOUT_S)
                break
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if error.fatal():
                    raise  # fenced, or the producer can no longer be used: stop
                self._ledger.commit_failed()
                if error.retriable() and not error.txn_requires_abort() and attempt < COMMIT_TRIES:
                    log.warning("transaction commit failed (%s): trying again", error.str())
                    continue
                refused = [e for b in batches for e in b.delivery.errors if e.code() not in PURGED]
                self.abandon()
                if refused:
                    self._ledger.undelivered(len(refused))
                    raise undelivered(refused) from None
                raise TransactionAborted(f"transaction aborted: {error.str()}") from None
        self._batches, self._opened_at = [], None
        for batch in batches:
            self._ledger.record(batch)
        return len(batches)

    def _send_offsets(self, batches: list[SentBatch]) -> None:
        positions = [position for batch in batches for position in batch.positions]
        offsets = [TopicPartition(t, p, o) for (t, p), o in next_offsets(positions).items()]
        self.producer.send_offsets_to_transaction(
            offsets, self._consumer.consumer_group_metadata(), TRANSACTION_CALL_TIMEOUT_S
        )
