"""The Faust runtime's consumer fetches the way the confluent runtime's does."""

from __future__ import annotations

import asyncio

import pytest

from streamserve.config import load_settings
from streamserve.runtime.faust import new_app


def fetch_wait_ms(**settings: object) -> int:
    """The fetch wait of the aiokafka consumer the runtime's Faust app builds (not started)."""

    async def build() -> int:
        app, _ = new_app(load_settings(input_topic="events", **settings))
        thread = app.consumer._thread  # type: ignore[attr-defined]
        consumer = thread._create_worker_consumer(app.transport)
        try:
            return int(consumer._fetch_max_wait_ms)
        finally:
            await consumer.stop()

    return asyncio.run(build())


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, 10),  # Faust's own 1,500 ms held the p50 at 474 ms at 1,000 events/s on Tansu
        ({"rdkafka_consumer": {"fetch.wait.max.ms": "250"}}, 250),
    ],
)
def test_faust_consumer_waits_for_a_fetch_as_long_as_the_confluent_one(
    settings: dict[str, object], expected: int
) -> None:
    assert fetch_wait_ms(**settings) == expected
