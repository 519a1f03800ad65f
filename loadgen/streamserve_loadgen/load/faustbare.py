"""A bare Faust agent that only counts ``stream.take()`` batches: Faust's own ceiling on this
machine, against which the Faust runtime is measured (`make bench`)."""

from __future__ import annotations

from typing import Any

from streamserve.config import Settings
from streamserve.runtime.faust import batch_window_s, new_app, run_app
from streamserve.runtime.summary import RunSummary


def run_bare_faust(settings: Settings) -> RunSummary:
    """Consume the input topic in the settings' group, counting batches; no decode, no output."""
    app, topic = new_app(settings)
    summary = RunSummary()

    @app.agent(topic, name="bare-counter")
    async def count(stream: Any) -> None:
        async for values in stream.take(settings.max_batch_size, batch_window_s(settings)):
            summary.record_arrived()
            summary.batch_done(len(values), 0, 0, "time")

    run_app(app, settings, summary)
    return summary
