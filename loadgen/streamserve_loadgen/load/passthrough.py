"""A bare consumer -> producer: the most this box's broker path allows, for the benchmark.

It batch-consumes the input topic and re-produces the same key and value bytes, with the input
record's timestamp, to one output topic: no decoding, no features, no model, no per-batch wait
for acknowledgements. It uses the worker's client settings, so the comparison is like for like.
"""

from __future__ import annotations

import logging
import threading
import time

from confluent_kafka import KafkaError, TopicPartition

from streamserve.config import Settings
from streamserve.io import kafka as kafka_io
from streamserve.runtime.summary import RunSummary

log = logging.getLogger("streamserve.passthrough")
POLL_S = 0.002  # consume(n, timeout) waits for n records or the timeout: it adds to latency


def run_passthrough(
    settings: Settings, output_topic: str, stop: threading.Event | None = None
) -> RunSummary:
    """Copy ``settings.input_topic`` to ``output_topic`` until idle for ``exit_when_idle_s``
    (or until ``stop`` is set). A "batch" ends when the consumer finds nothing new and the
    producer has no copy left unacknowledged; it never waits for acknowledgements."""
    stop = stop or threading.Event()
    consumer = kafka_io.make_consumer(settings)
    producer = kafka_io.make_producer(settings)
    assigned = threading.Event()
    last_record = time.monotonic()

    def on_assign(_consumer: object, partitions: list[TopicPartition]) -> None:
        nonlocal last_record
        log.info("assigned %d partitions", len(partitions))
        last_record = time.monotonic()  # idle time counts from the assignment on
        assigned.set()

    summary = RunSummary()
    consumer.subscribe([settings.input_topic], on_assign=on_assign)
    unflushed = 0
    produce = producer.produce
    try:
        while not stop.is_set():
            messages = consumer.consume(settings.max_batch_size, POLL_S)
            now = time.monotonic()
            for m in messages:
                error = m.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        log.warning("consumer error: %s", error.str())
                    continue
                summary.record_arrived()
                while True:
                    try:
                        produce(output_topic, m.value(), m.key(), timestamp=m.timestamp()[1])
                        break
                    except BufferError:
                        producer.poll(0.05)
                unflushed += 1
                last_record = now
            producer.poll(0)
            if unflushed and not messages and len(producer) == 0:
                summary.batch_done(unflushed, unflushed, 0, "time")
                unflushed = 0
            idle_limit = settings.exit_when_idle_s
            if idle_limit and assigned.is_set() and now - last_record >= idle_limit:
                break
        if producer.flush(30) == 0 and unflushed:  # stopped with copies in flight: count them
            summary.batch_done(unflushed, unflushed, 0, "stop")
    finally:
        consumer.close()
    return summary
