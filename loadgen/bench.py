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
from rich.progress import Progress
from rich.table import Table

from loadgen import procs
from loadgen.chart import plot_bench
from loadgen.live import progress_bar
from loadgen.produce import preload
from loadgen.profile import RateProfile
from streamserve import synthetic
from streamserve.config import load_settings
from streamserve.demo import set_up_demo_world
from streamserve.embedded import EmbeddedStack, running_stack
from streamserve.io import kafka as kafka_io

# Tansu spends CPU per partition on every fetch and produce request: with 8 partitions it falls
# behind at 10k events/s of small live batches, with 2 (one worker per core here) it keeps up.
PARTITIONS = 2


@dataclass(frozen=True)
class BenchPlan:
    """What one `make bench` run measures."""

    events: int = 500_000
    baseline_events: int = 20_000
    faust_events: int = 100_000  # Faust drains a few thousand events/s: a part of the topic
    entities: int = 10_000
    malformed_every: int = 100
    trees: int = 200
    batch_size: int = 1000
    max_wait_ms: float = 5.0
    loads: tuple[int, ...] = (1_000, 10_000, 30_000)
    load_seconds: float = 10.0
    # adaptive batching: a steady rate, then the same with `burst_peak` events/s for 1 s in
    # every 5 s, offered to a worker with and without STREAMSERVE_LATENCY_TARGET_MS
    burst_rate: int = 5_000
    burst_peak: int = 50_000
    burst_seconds: float = 15.0
    latency_target_ms: float = 100.0
    adaptive_ceiling: int = 10_000  # STREAMSERVE_MAX_BATCH_SIZE of the adaptive runs
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
            set_up_demo_world(self.stack, self.model_dir, plan.trees, plan.entities,
                              [self.drain_topic], PARTITIONS)  # fmt: skip
        events = synthetic.generate_events(
            plan.events, plan.entities, malformed_every=plan.malformed_every
        )
        with self._progress() as progress:
            task = progress.add_task("pre-loading events", total=plan.events)
            preload(self.stack.kafka_bootstrap, self.drain_topic, events,
                    on_progress=lambda n: progress.update(task, completed=n))  # fmt: skip

    def _progress(self) -> Progress:
        return progress_bar(self.console)

    def drain(self, step: str, argv: list[str], **settings: object) -> dict[str, Any]:
        """Run one consumer over the pre-loaded topic until it idles; returns its summary."""
        env = self.env(step, input_topic=self.drain_topic, exit_when_idle_s=2.0, **settings)
        with self.console.status(f"{step}: draining"):
            result = procs.spawn(step, argv, env).result()
        self.console.print(f"{step}: {result['events']:,} events in {result['seconds']} s, "
                           f"{result['events_per_s']:,.0f}/s, "
                           f"{result['cpu_us_per_event']} µs CPU/event")  # fmt: skip
        return result

    def latency(
        self, target: str, rate: int, burst: bool = False, label: str = "", **settings: object
    ) -> dict[str, Any]:
        """Offer ``rate`` events/s (with ``burst``: the plan's bursts on top) to a running worker
        or pass-through with ``settings``; time every output."""
        plan = self.plan
        step = f"{target}-{rate}{'-burst' if burst else ''}{'-' + label if label else ''}"
        profile = (
            RateProfile("burst", rate, plan.burst_seconds, plan.burst_peak)
            if burst
            else RateProfile("fixed", rate, plan.load_seconds)
        )
        input_topic = self.topic(f"{step}-in")
        if target == "worker":
            outputs, dead_letters = (
                self.topic(f"{step}-predictions"),
                self.topic(f"{step}-dead-letters"),
            )
            argv, origin = procs.streamserve_argv("worker"), "prediction"
        else:
            outputs, dead_letters = self.topic(f"{step}-out"), None
            argv = procs.loadgen_argv("passthrough", "--output-topic", outputs)
            origin = "record-timestamp"
        self.create_topics([input_topic, outputs, *([dead_letters] if dead_letters else [])])
        bootstrap = self.stack.kafka_bootstrap
        consumer = procs.spawn(step, argv, self.env(step, input_topic=input_topic, **settings))
        watcher: procs.Child | None = None
        try:
            with self.console.status(f"{step}: waiting for partitions"):
                consumer.wait_ready()
            watch_args = [
                "watch",
                "--bootstrap",
                bootstrap,
                "--outputs",
                outputs,
                "--origin",
                origin,
                "--expected",
                str(profile.total),
            ]
            if dead_letters:
                watch_args += ["--dead-letters", dead_letters]  # fmt: skip
            watcher = procs.spawn("watcher", procs.loadgen_argv(*watch_args), procs.child_env({}),
                                  ready_text="watching")  # fmt: skip
            watcher.wait_ready()
            argv = procs.producer_argv(
                bootstrap, input_topic, profile, plan.entities, plan.malformed_every
            )
            producer = procs.spawn("producer", argv, procs.child_env({}), ready_text="")
            with self._progress() as progress:
                task = progress.add_task(f"{step}: {rate:,} events/s", total=profile.seconds)
                started = time.monotonic()
                while producer.proc.poll() is None:
                    progress.update(task, completed=time.monotonic() - started)
                    time.sleep(0.2)
            offered = producer.result()
            with self.console.status(f"{step}: waiting for the last outputs"):
                watched = watcher.result()
            summary = consumer.stop()
        finally:
            consumer.kill()
            if watcher is not None:
                watcher.kill()
        row = {"target": target, "label": label, "burst": burst, "offered_per_s": rate,
               "offered": offered,
               "profile": asdict(profile), "settings": {k: str(v) for k, v in settings.items()},
               "latency_ms": watched["latency_ms"], "lost": watched["lost"],
               "duplicated": watched["duplicated"], "peak_rss_mb": summary["peak_rss_mb"],
               "cpu_us_per_event": summary["cpu_us_per_event"],
               "series": watched["series"]}  # fmt: skip
        latency = row["latency_ms"]
        row["drain_events_per_s"] = peak_throughput(watched["series"])
        self.console.print(f"{step}: p50 {latency['p50']} ms, p99 {latency['p99']} ms, "
                           f"peak {row['drain_events_per_s']:,}/s, lost {row['lost']}")  # fmt: skip
        return row

    def create_topics(self, topics: list[str]) -> None:
        settings = load_settings(kafka_bootstrap=self.stack.kafka_bootstrap)
        kafka_io.ensure_topics(kafka_io.make_admin(settings), topics, PARTITIONS)


def run_bench(plan: BenchPlan, console: Console) -> dict[str, Any]:
    """Every measurement of the plan on one stack; writes bench.json and bench.png."""
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
        cached = bench.drain("worker-cached", procs.streamserve_argv("worker"),
                             feature_cache_ttl_s=60)  # fmt: skip
        faust = bench.drain("faust", procs.streamserve_argv("worker"), runtime="faust",
                            max_events=plan.faust_events)  # fmt: skip
        faust_bare = bench.drain("faust-bare", procs.loadgen_argv("faust-bare"),
                                 max_events=plan.faust_events)  # fmt: skip
        latency = [
            bench.latency(target, rate)
            for rate in plan.loads
            for target in ("worker", "passthrough")
        ]
        ceiling = {"max_batch_size": plan.adaptive_ceiling}
        burst_settings: dict[str, dict[str, object]] = {
            "fixed": {},  # the defaults
            "fixed-ceiling": ceiling,  # what a larger batch size alone does
            "adaptive": {**ceiling, "latency_target_ms": plan.latency_target_ms},
        }
        bursts = [
            bench.latency("worker", plan.burst_rate, burst=burst, label=label, **settings)
            for burst in (False, True)
            for label, settings in burst_settings.items()
        ]
    results: dict[str, Any] = {
        "machine": machine(),
        "plan": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(plan).items()},
        "started_at": started,
        "drain": {
            "worker": worker,
            "passthrough": passthrough,
            "baseline": baseline,
            "worker_cached": cached,
            "faust": faust,
            "faust_bare": faust_bare,
        },
        "latency": latency,
        "bursts": bursts,
    }
    results["goals"] = goals(results)
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    (plan.out_dir / "bench.json").write_text(json.dumps(results, indent=2) + "\n")
    plot_bench(results, plan.out_dir / "bench.png")
    return results


def goals(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The issue's goals, each with the measured value and whether it is met."""
    drain = results["drain"]
    worker, passthrough, baseline = drain["worker"], drain["passthrough"], drain["baseline"]
    p99 = {(row["target"], row["offered_per_s"]): row["latency_ms"]["p99"]
           for row in results["latency"]}  # fmt: skip
    rss = max([worker["peak_rss_mb"], *(r["peak_rss_mb"] for r in results["latency"]
                                          if r["target"] == "worker")])  # fmt: skip
    found: dict[str, dict[str, Any]] = {
        "drain_vs_passthrough": _goal(
            worker["events_per_s"] / passthrough["events_per_s"], ">=", 0.95
        ),
        "drain_vs_baseline": _goal(worker["events_per_s"] / baseline["events_per_s"], ">=", 40),
        "cpu_us_per_event": _goal(worker["cpu_us_per_event"], "<=", 6.0),
        "worker_peak_rss_mb": _goal(rss, "<=", 300),
    }
    if "faust" in drain and "faust_bare" in drain:
        found["faust_vs_bare_faust"] = _goal(
            drain["faust"]["events_per_s"] / drain["faust_bare"]["events_per_s"], ">=", 0.70
        )
    if ("worker", 10_000) in p99 and ("passthrough", 10_000) in p99:
        extra = p99[("worker", 10_000)] - p99[("passthrough", 10_000)]
        found["p99_over_passthrough_at_10k_ms"] = _goal(extra, "<=", 20)
    return found


def _goal(value: float, op: str, target: float) -> dict[str, Any]:
    met = value >= target if op == ">=" else value <= target
    return {"value": round(value, 3), "goal": f"{op} {target:g}", "met": met}


def print_table(results: dict[str, Any], console: Console) -> None:
    """The bench table: drain rates with ratios, CPU, latency under load, RSS and the goals."""
    drain = results["drain"]
    table = Table(title="streamserve bench", show_lines=False)
    for column in ("measurement", "worker", "pass-through", "baseline (batch 1)"):
        table.add_column(column, justify="right" if column != "measurement" else "left")
    rates = [drain[k]["events_per_s"] for k in ("worker", "passthrough", "baseline")]
    table.add_row(f"drain of {results['plan']['events']:,} events (events/s)",
                  *(f"{r:,.0f}" for r in rates))  # fmt: skip
    table.add_row("worker CPU per event (µs, user+sys, all threads)",
                  *(f"{drain[k]['cpu_us_per_event']:.1f}"
                    for k in ("worker", "passthrough", "baseline")))  # fmt: skip
    table.add_row("peak RSS (MB)", *(f"{drain[k]['peak_rss_mb']:.0f}"
                                     for k in ("worker", "passthrough", "baseline")))  # fmt: skip
    rows = {(r["target"], r["offered_per_s"]): r for r in results["latency"]}
    for rate in sorted({r["offered_per_s"] for r in results["latency"]}):
        cells = []
        for target in ("worker", "passthrough"):
            row = rows.get((target, rate))
            cells.append(f"{row['latency_ms']['p50']:.0f} / {row['latency_ms']['p99']:.0f}"
                         if row else "-")  # fmt: skip
        table.add_row(f"p50 / p99 latency at {rate:,} events/s (ms)", *cells, "")
    console.print(table)
    if "worker_cached" in drain:
        cached, plain = drain["worker_cached"], drain["worker"]
        console.print(f"local feature cache (TTL 60 s, Zipf-skewed entities): "
                      f"{cached['events_per_s']:,.0f} events/s at {cached['cpu_us_per_event']:.1f} "
                      f"µs CPU/event, against {plain['events_per_s']:,.0f} at "
                      f"{plain['cpu_us_per_event']:.1f} without")  # fmt: skip
    for row in results.get("bursts", []):
        latency = row["latency_ms"]
        load = "bursts" if row["burst"] else "steady"
        console.print(f"{row['offered_per_s']:,}/s {load} ({row['label']}: "
                      f"{row['settings'] or 'defaults'}): p50 "
                      f"{latency['p50']:.0f} ms, p99 {latency['p99']:.0f} ms, max "
                      f"{latency['max']:.0f} ms, peak {row['drain_events_per_s']:,} events/s, "
                      f"{row['cpu_us_per_event']:.1f} µs CPU/event, "
                      f"lost {row['lost']}")  # fmt: skip
    if "faust" in drain and "faust_bare" in drain:
        faust, bare = drain["faust"], drain["faust_bare"]
        console.print(f"faust runtime: {faust['events_per_s']:,.0f} events/s at "
                      f"{faust['cpu_us_per_event']:.0f} µs CPU/event; bare Faust agent counting "
                      f"take() batches: {bare['events_per_s']:,.0f} events/s "
                      f"({faust['events']:,} events each)")  # fmt: skip
    goal_table = Table(title="goals")
    for column in ("goal", "measured", "target", "met"):
        goal_table.add_column(column)
    for name, goal in results["goals"].items():
        goal_table.add_row(name, f"{goal['value']:g}", goal["goal"], "yes" if goal["met"] else "NO")
    console.print(goal_table)
    console.print(json.dumps({"goals": results["goals"]}))


def peak_throughput(series: list[dict[str, Any]]) -> int:
    """The most outputs read in one second of a load run: how fast a backlog drained."""
    return max((int(second["events_per_s"]) for second in series), default=0)


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
