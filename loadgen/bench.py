"""`make bench`: drain rate, pass-through ceiling, per-event baseline, latency under load, RSS.

Everything runs on the embedded stack (or the Kafka/Redis the STREAMSERVE_* variables name), and
every measured party -- worker, pass-through, load generator, latency watcher -- is its own
process. Results go to a table on the terminal and to bench.json + bench.png.
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from loadgen import procs
from loadgen.produce import preload
from streamserve import synthetic
from streamserve.config import load_settings
from streamserve.demo import load_entity_features
from streamserve.embedded import EmbeddedStack, running_stack
from streamserve.io import kafka as kafka_io

PARTITIONS = 8


@dataclass(frozen=True)
class BenchPlan:
    """What one `make bench` run measures."""

    events: int = 500_000
    baseline_events: int = 20_000
    entities: int = 10_000
    malformed_every: int = 100
    trees: int = 200
    batch_size: int = 1000
    max_wait_ms: int = 20
    loads: tuple[int, ...] = (1_000, 10_000, 30_000)
    load_seconds: float = 10.0
    out_dir: Path = field(default=Path("bench-results"))


class Bench:
    """One benchmark run on one stack: every step names its own topics and consumer group."""

    def __init__(self, plan: BenchPlan, stack: EmbeddedStack, console: Console) -> None:
        self.plan = plan
        self.stack = stack
        self.console = console
        self.run_id = f"{int(time.time())}"
        self.model_dir = Path(tempfile.mkdtemp(prefix="streamserve-bench-")) / "model"
        self.drain_topic = self.topic("drain")

    def topic(self, name: str) -> str:
        return f"bench-{self.run_id}-{name}"

    def env(self, step: str, **settings: object) -> dict[str, str]:
        """The STREAMSERVE_* environment of one step's worker or pass-through."""
        base: dict[str, object] = {
            "model_dir": self.model_dir,
            "group_id": self.topic(step),
            "predictions_topic": self.topic(f"{step}-predictions"),
            "dead_letter_topic": self.topic(f"{step}-dead-letters"),
            "metrics_topic": self.topic(f"{step}-metrics"),
            "max_batch_size": self.plan.batch_size,
            "max_wait_ms": self.plan.max_wait_ms,
            "topic_partitions": PARTITIONS,
            "log_level": "INFO",
            **settings,
        }
        env = {f"STREAMSERVE_{k.upper()}": str(v) for k, v in base.items()}
        return procs.child_env({**self.stack.env(), **env})

    def prepare(self) -> None:
        plan = self.plan
        with self.console.status("training the demo model and loading features"):
            manifest = synthetic.train_demo_model(self.model_dir, trees=plan.trees)
            settings = load_settings(
                kafka_bootstrap=self.stack.kafka_bootstrap,
                redis_url=self.stack.redis_url,
                model_dir=self.model_dir,
            )
            load_entity_features(settings, manifest, plan.entities, skip_every=50)
            admin = kafka_io.make_admin(settings)
            kafka_io.ensure_topics(admin, [self.drain_topic], PARTITIONS)
        with self.console.status(f"pre-loading {plan.events:,} events"):
            events = synthetic.generate_events(
                plan.events, plan.entities, malformed_every=plan.malformed_every
            )
            preload(self.stack.kafka_bootstrap, self.drain_topic, events)

    def drain(self, step: str, argv: list[str], **settings: object) -> dict[str, Any]:
        """Run one consumer over the pre-loaded topic until it idles; returns its summary."""
        env = self.env(step, input_topic=self.drain_topic, exit_when_idle_s=2.0, **settings)
        with self.console.status(f"{step}: draining"):
            result = procs.spawn(step, argv, env).result()
        self.console.print(f"{step}: {result['events']:,} events in {result['seconds']} s, "
                           f"{result['events_per_s']:,.0f}/s, "
                           f"{result['cpu_us_per_event']} µs CPU/event")  # fmt: skip
        return result


def run_bench(plan: BenchPlan, console: Console) -> dict[str, Any]:
    started = time.time()
    with running_stack() as stack:
        bench = Bench(plan, stack, console)
        bench.prepare()
        worker = bench.drain("worker", procs.streamserve_argv("worker"))
        passthrough = bench.drain(
            "passthrough",
            procs.loadgen_argv("passthrough", "--output-topic", bench.topic("passthrough-out")),
        )
        baseline = bench.drain(
            "baseline",
            procs.streamserve_argv("worker"),
            max_batch_size=1,
            max_events=plan.baseline_events,
        )
    results = {
        "machine": machine(),
        "plan": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(plan).items()},
        "started_at": started,
        "drain": {"worker": worker, "passthrough": passthrough, "baseline": baseline},
    }
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    (plan.out_dir / "bench.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def machine() -> dict[str, Any]:
    import os

    import psutil

    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()
