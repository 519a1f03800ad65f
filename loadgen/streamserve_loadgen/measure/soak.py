"""`make soak`: a steady load through one worker for minutes, sampling its RSS, to show that memory
stays flat (no growth with the number of events processed)."""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from rich.console import Console

from streamserve.io.kafka import Cluster
from streamserve.tools.audit import audit
from streamserve_loadgen.load import procs
from streamserve_loadgen.load.profile import RateProfile
from streamserve_loadgen.measure.demo import set_up_demo_world
from streamserve_loadgen.measure.live import progress_bar
from streamserve_loadgen.world.embedded import running_stack
from streamserve_loadgen.world.synthetic import World


@dataclass(frozen=True)
class SoakPlan:
    minutes: float = 10.0
    rate: int = 5_000
    world: World = field(default_factory=World)
    sample_every_s: float = 10.0
    # Both producers (the load's and the worker's) linger this long, so that no partition holds
    # more than ~16k record batches in 10 minutes: past that, the embedded broker (Tansu, memory
    # storage) takes seconds per fetch, which would stall the worker and the closing audit. A
    # 5 ms linger at 5k events/s makes that many batches in under two minutes.
    linger_ms: int = 100


def run_soak(plan: SoakPlan, console: Console) -> dict[str, Any]:
    """Offer ``plan.rate`` events/s for ``plan.minutes``; sample the worker's RSS; audit."""
    run_id = f"soak-{int(time.time())}"
    model_dir = Path(tempfile.mkdtemp(prefix="streamserve-soak-")) / "model"
    topics = {name: f"{run_id}-{name}" for name in ("events", "predictions", "dead-letters")}
    with running_stack() as stack:
        set_up_demo_world(stack, model_dir, plan.world, list(topics.values()), 2)
        env = {
            "STREAMSERVE_MODEL_DIR": str(model_dir),
            "STREAMSERVE_INPUT_TOPIC": topics["events"],
            "STREAMSERVE_PREDICTIONS_TOPIC": topics["predictions"],
            "STREAMSERVE_DEAD_LETTER_TOPIC": topics["dead-letters"],
            "STREAMSERVE_METRICS_TOPIC": f"{run_id}-metrics",
            "STREAMSERVE_GROUP_ID": run_id,
            "STREAMSERVE_TOPIC_PARTITIONS": "2",
            "STREAMSERVE_RDKAFKA_PRODUCER_LINGER_MS": str(plan.linger_ms),
        }
        worker = procs.spawn(
            "worker", procs.streamserve_argv("worker"), procs.child_env({**stack.env(), **env})
        )
        worker.wait_ready()
        seconds = plan.minutes * 60
        profile = RateProfile("fixed", plan.rate, seconds)
        producer = procs.spawn(
            "producer",
            procs.producer_argv(
                stack.kafka_bootstrap,
                topics["events"],
                profile,
                plan.world.entities,
                plan.world.malformed_every,
                linger_ms=plan.linger_ms,
            ),
            procs.child_env({}),
            ready_text="",
        )
        samples: list[tuple[float, float]] = []
        cpu_percent: list[float] = []  # the worker's, over each sample interval
        process = psutil.Process(worker.proc.pid)
        started = time.monotonic()
        with progress_bar(console) as progress:
            task = progress.add_task(f"soak at {plan.rate:,} events/s", total=seconds)
            next_sample = started
            while producer.proc.poll() is None:
                now = time.monotonic()
                if now >= next_sample:
                    samples.append((round(now - started, 1), process.memory_info().rss / 2**20))
                    cpu_percent.append(process.cpu_percent())
                    next_sample += plan.sample_every_s
                progress.update(task, completed=now - started)
                time.sleep(0.5)
        offered = producer.result()
        time.sleep(3)  # let the last batches through
        summary = worker.stop()
        trend = rss_trend(samples)
        console.print(
            f"RSS (MB) every {plan.sample_every_s:g} s: {[round(r) for _, r in samples]} {trend}"
        )
        console.print(f"worker CPU % per interval: {[round(c) for c in cpu_percent[1:]]}")
        console.print(
            f"worker: {summary['events']:,} of {offered['sent']:,} offered events "
            f"scored or dead-lettered"
        )
        with console.status("auditing"):
            report = audit(
                Cluster(stack.kafka_bootstrap),
                topics["events"],
                topics["predictions"],
                topics["dead-letters"],
            )
    return {
        "plan": asdict(plan),
        "offered": offered,
        "worker": summary,
        "audit": report.as_dict(),
        "rss_mb": samples,
        "worker_cpu_percent": cpu_percent[1:],  # the first is measured from the worker's start
        **trend,
    }


def rss_trend(samples: list[tuple[float, float]]) -> dict[str, float]:
    """First, last and peak RSS, and the growth after the first minute (warm-up) in MB/min."""
    if len(samples) < 2:
        return {}
    times = np.array([t for t, _ in samples])
    rss = np.array([r for _, r in samples])
    warm = times >= 60 if (times >= 60).sum() >= 2 else np.ones_like(times, dtype=bool)
    slope_per_s = float(np.polyfit(times[warm], rss[warm], 1)[0])
    return {
        "rss_first_mb": round(float(rss[0]), 1),
        "rss_last_mb": round(float(rss[-1]), 1),
        "rss_peak_mb": round(float(rss.max()), 1),
        "rss_growth_mb_per_min_after_warmup": round(slope_per_s * 60, 3),
    }
