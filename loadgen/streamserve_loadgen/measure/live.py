"""`streamserve-loadgen run`: offer a load from a child process and watch the outcome here."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from streamserve_loadgen.load import procs
from streamserve_loadgen.load.profile import RateProfile
from streamserve_loadgen.measure.chart import plot_series
from streamserve_loadgen.measure.latency import Watcher


def progress_bar(console: Console | None = None) -> Progress:
    """The progress bar of every step that takes more than a few seconds."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    return Progress(*columns, console=console, transient=True)


def run_live(
    bootstrap: str,
    input_topic: str,
    predictions: str,
    dead_letters: str,
    profile: RateProfile,
    entities: int,
    malformed_every: int,
    seed: int,
    out_dir: Path,
) -> dict[str, Any]:
    """Produce ``profile`` to ``input_topic`` (child process), time every outcome; writes
    run.json and run.png to ``out_dir`` and returns the result."""
    watcher = Watcher(bootstrap, predictions, dead_letters)
    argv = procs.producer_argv(bootstrap, input_topic, profile, entities, malformed_every, seed)
    producer = procs.spawn("producer", argv, dict(os.environ), ready_text="")
    expected = profile.total
    try:
        with progress_bar() as progress:
            task = progress.add_task("outcomes read", total=expected)
            while producer.proc.poll() is None:
                watcher.poll()
                progress.update(task, completed=watcher.outputs_read)
            offered = producer.result()
            watcher.count_from({int(p): o for p, o in offered["first_offsets"].items()})
            watcher.run(expected)
    finally:
        producer.kill()
        watcher.close()
    result = {"offered": offered, **watcher.result(offered["sent"])}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "run.json").write_text(json.dumps(result, indent=2) + "\n")
    title = f"{profile.kind} load, {offered['events_per_s']:,.0f} events/s offered"
    plot_series(result["series"], out_dir / "run.png", title)
    return result
