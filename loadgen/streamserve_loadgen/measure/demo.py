"""The demo: embedded stack, demo model and features, a worker process under a ramp of load
from a load generator process, and a live view of throughput, latency, lag and batches."""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from rich.console import Console
from rich.live import Live
from rich.table import Table

from streamserve.config import Settings, load_settings
from streamserve.core.model import Manifest
from streamserve.core.records import MetricsRecord
from streamserve.io import kafka as kafka_io
from streamserve.io import store as store_io
from streamserve.io.kafka import Cluster
from streamserve.tools.audit import from_beginning
from streamserve_loadgen.load import procs
from streamserve_loadgen.load.profile import RateProfile
from streamserve_loadgen.measure.latency import Watcher, percentiles
from streamserve_loadgen.world import synthetic
from streamserve_loadgen.world.embedded import EMBEDDED_LINGER_MS, EmbeddedStack, running_stack
from streamserve_loadgen.world.synthetic import World


def load_entity_features(
    settings: Settings, manifest: Manifest, n_entities: int, skip_every: int = 0, seed: int = 7
) -> dict[str, np.ndarray]:
    """Write synthetic features of entities u0..u{n-1}; every ``skip_every``-th stays absent.

    Returns entity id -> the row written, for whoever needs to know what the store holds.
    """
    rows = synthetic.entity_features(n_entities, seed)
    keep = np.arange(n_entities)
    if skip_every:
        keep = keep[keep % skip_every != skip_every - 1]
    written = {synthetic.entity_id(int(i)): rows[i] for i in keep}
    template = manifest.store.key_template
    keys = [template.replace("{entity_id}", entity) for entity in written]
    client = store_io.connect(
        settings.redis_url.get_secret_value(), settings.redis_timeout_s, settings.redis_cluster
    )
    store_io.write_features(client, manifest, keys, rows[keep], written_at=time.time())
    return written


def set_up_demo_world(
    stack: EmbeddedStack,
    model_dir: Path,
    world: World,
    topics: list[str],
    partitions: int,
) -> Manifest:
    """Train the world's demo model into ``model_dir``, write its entities' features (every
    50th left absent) to the stack's Redis, and create ``topics``; returns the manifest."""
    manifest = synthetic.train_demo_model(model_dir, trees=world.trees)
    settings = load_settings(
        kafka_bootstrap=stack.kafka_bootstrap, redis_url=stack.redis_url, model_dir=model_dir
    )
    load_entity_features(settings, manifest, world.entities, skip_every=50)
    kafka_io.ensure_topics(kafka_io.make_admin(settings), topics, partitions)
    return manifest


@dataclass(frozen=True)
class DemoPlan:
    """The demo's load: a ramp from ``start_rate`` to ``peak_rate`` events/s over ``seconds``."""

    seconds: float = 12.0
    start_rate: float = 2_000
    peak_rate: float = 20_000
    world: World = field(default_factory=World)

    @property
    def profile(self) -> RateProfile:
        return RateProfile("ramp", self.start_rate, self.seconds, self.peak_rate)


def run_demo(plan: DemoPlan, console: Console) -> dict[str, Any]:
    """Embedded stack, demo model and features, one worker process and one load generator
    process; this process watches outcomes and metrics in a live view. Returns the summary."""
    workdir = Path(tempfile.mkdtemp(prefix="streamserve-demo-"))
    with running_stack() as stack:
        model_dir = workdir / "model"
        settings = load_settings(
            kafka_bootstrap=stack.kafka_bootstrap,
            redis_url=stack.redis_url,
            model_dir=model_dir,
            topic_partitions=2,  # one worker per core; see bench.py on Tansu
            metrics_interval_s=1.0,
        )
        with console.status("training the demo model and writing entity features"):
            set_up_demo_world(
                stack,
                model_dir,
                plan.world,
                settings.topic_names(),
                settings.topic_partitions,
            )
        env = {
            **stack.env(),
            "STREAMSERVE_MODEL_DIR": str(model_dir),
            "STREAMSERVE_TOPIC_PARTITIONS": "2",
            "STREAMSERVE_METRICS_INTERVAL_S": "1",
        }
        worker = procs.spawn("worker", procs.streamserve_argv("worker"), procs.child_env(env))
        try:
            with console.status("worker joining its consumer group"):
                worker.wait_ready()
            linger = EMBEDDED_LINGER_MS if stack.embedded_broker else None
            result = _watch_load(plan, settings, console, linger)
            worker.stop()
        finally:
            worker.kill()
    return result


def _watch_load(
    plan: DemoPlan, settings: Settings, console: Console, linger_ms: float | None
) -> dict[str, Any]:
    bootstrap = settings.kafka_bootstrap
    watcher = Watcher(bootstrap, settings.predictions_topic, settings.dead_letter_topic)
    metrics = MetricsReader(bootstrap, settings.metrics_topic)
    profile = plan.profile
    argv = procs.producer_argv(
        bootstrap,
        settings.input_topic,
        profile,
        plan.world.entities,
        plan.world.malformed_every,
        linger_ms=linger_ms,
    )
    producer = procs.spawn("producer", argv, procs.child_env({}), ready_text="")
    started = time.monotonic()
    try:
        with Live(console=console, refresh_per_second=4, transient=False) as live:
            while producer.proc.poll() is None or watcher.outputs_read < profile.total:
                watcher.poll(0.05)
                metrics.poll()
                elapsed = time.monotonic() - started
                live.update(_view(plan, watcher, metrics, elapsed))
                if elapsed > plan.seconds + 60:
                    break
        console.print()
        producer.result()
    finally:
        producer.kill()
        watcher.close()
        metrics.close()
    watched = watcher.result(profile.total)
    received = watcher.received_ms
    span_s = (max(received) - min(received)) / 1000 if len(received) > 1 else 0.0
    outcomes = watched["predictions"] + watched["dead_letters"]
    return {
        "events": profile.total,
        "scored": watched["predictions"],
        "dead_letters": watched["dead_letters"],
        "lost": watched["lost"],
        "events_per_s": round(outcomes / span_s, 1) if span_s else 0.0,
        "p50_ms": watched["latency_ms"]["p50"],
        "p99_ms": watched["latency_ms"]["p99"],
    }


class MetricsReader:
    """The worker's metrics records, read from the metrics topic as they come."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.latest: MetricsRecord | None = None
        self.dead_letters: Counter[str] = Counter()
        self._decode = msgspec.json.Decoder(MetricsRecord).decode
        self._consumer, _missing = from_beginning(Cluster(bootstrap), [topic])

    def poll(self) -> None:
        for message in self._consumer.consume(100, 0):
            value = message.value()
            if message.error() is None and value:
                self.latest = self._decode(value)
                self.dead_letters.update(self.latest.dead_letters_by_class)

    def close(self) -> None:
        self._consumer.close()


def _view(plan: DemoPlan, watcher: Watcher, metrics: MetricsReader, elapsed: float) -> Table:
    table = Table(title="streamserve demo", show_header=False, min_width=64)
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    last = (
        [
            v
            for t, v in zip(watcher.received_ms, watcher.latencies_ms, strict=True)
            if t >= watcher.received_ms[-1] - 1000
        ]
        if watcher.received_ms
        else []
    )
    recent = percentiles(last)
    table.add_row("elapsed", f"{elapsed:5.1f} s")
    table.add_row("offered", f"{plan.profile.rate_at(elapsed):,.0f} events/s")
    table.add_row("scored, last second", f"{len(last):,} events/s")
    table.add_row("latency p50 / p99, last second", f"{recent['p50']:.0f} / {recent['p99']:.0f} ms")
    table.add_row(
        "predictions / dead letters",
        f"{len(watcher.received_ms):,} / {watcher.dead_letter_count:,}",
    )
    record = metrics.latest
    if record is not None:
        table.add_row("consumer lag", f"{record.total_lag:,} records")
        table.add_row(
            "batch size mean / max",
            f"{record.batch_size_mean:,.0f} / "
            f"{record.batch_size_max:,} ({dict(record.batches_by_trigger)})",
        )
        by_class = ", ".join(f"{k} {v}" for k, v in sorted(metrics.dead_letters.items()))
        table.add_row("dead letters by class", by_class)
    return table
