"""`make bench`: drain rate, pass-through ceiling, per-event baseline, latency under load, RSS.

Everything runs on the embedded stack (or the Kafka/Redis the STREAMSERVE_* variables name), and
every measured party -- worker, pass-through, load generator, latency watcher -- is its own
process. Results go to a table on the terminal and to bench.json + bench.png.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console

from streamserve.core.model import read_manifest
from streamserve_loadgen.load import procs
from streamserve_loadgen.measure.bench_pairs import feast_steps, format_drains
from streamserve_loadgen.measure.bench_report import goals, machine
from streamserve_loadgen.measure.bench_steps import Bench, BenchPlan
from streamserve_loadgen.measure.chart import plot_bench, plot_series
from streamserve_loadgen.measure.decode_cost import decode_costs
from streamserve_loadgen.world.embedded import running_stack
from streamserve_loadgen.world.registry import running_registry


def run_bench(plan: BenchPlan, console: Console) -> dict[str, Any]:
    """Every measurement of the plan on one stack; writes bench.json and bench.png."""
    started = time.time()
    with running_stack() as stack, running_registry() as registry_url:
        bench = Bench(plan, stack, console, registry_url)
        bench.prepare()
        argv = procs.streamserve_argv("worker")
        results: dict[str, Any] = {
            "machine": machine(),
            "plan": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(plan).items()},
            "started_at": started,
            "drain": drains(bench, argv),
            "far": bench.far_drains(),
            **timed_runs(bench),
            "formats": format_drains(bench, argv),
            "feast": feast_steps(bench, argv),
            "decode_us_per_event": decode_costs(read_manifest(bench.model_dir)),
        }
    results["goals"] = goals(results)
    write_results(results, plan)
    return results


def drains(bench: Bench, argv: list[str]) -> dict[str, dict[str, Any]]:
    """Each party draining the same pre-loaded events, one after another."""
    plan = bench.plan
    return {
        "worker": bench.drain("worker", argv),  # STREAMSERVE_PREDICTOR=auto: oneDAL here
        "worker_xgboost": bench.drain("worker-xgboost", argv, predictor="xgboost"),
        # right after the at-least-once drain of the same events, for a side-by-side ratio
        "worker_exactly_once": bench.drain(
            "worker-exactly-once", argv, processing_guarantee="exactly-once"
        ),
        "bareloop": bench.drain("bareloop", bench.bareloop_argv("bareloop")),
        "passthrough": bench.drain(
            "passthrough",
            procs.loadgen_argv("passthrough", "--output-topic", bench.topic("passthrough-out")),
        ),
        # batch size 1: each batch waits out the producer's linger, so it lingers 5 ms here
        "baseline": bench.drain(
            "baseline",
            argv,
            max_batch_size=1,
            max_events=plan.baseline_events,
            rdkafka_producer_linger_ms=5,
        ),
        "worker_cached": bench.drain("worker-cached", argv, feature_cache_ttl_s=60),
        # Faust's batches are small (tens of events): lingering 50 ms, 16 of them in flight
        # held it to 59% of bare Faust in one run; the worker's default linger is 5 ms
        "faust": bench.drain(
            "faust",
            argv,
            runtime="faust",
            max_events=plan.faust_events,
            rdkafka_producer_linger_ms=5,
        ),
        "faust_bare": bench.drain(
            "faust-bare", procs.loadgen_argv("faust-bare"), max_events=plan.faust_events
        ),
    }


def timed_runs(bench: Bench) -> dict[str, Any]:
    """Latency at the live and sustained rates (worker, pass-through, the Faust runtime, the
    worker with XGBoost's predictor), the idle worker, further loads, bursts."""
    plan = bench.plan
    live = (plan.live_rate, plan.live_seconds)
    sustained = (plan.sustained_rate, plan.sustained_seconds)
    ceiling = {"max_batch_size": plan.adaptive_ceiling}
    burst_settings: dict[str, dict[str, Any]] = {
        "fixed": {},  # the defaults
        "fixed-ceiling": ceiling,  # what a larger batch size alone does
        "adaptive": {**ceiling, "latency_target_ms": plan.latency_target_ms},
    }
    return {
        "live": [bench.latency(t, live[0], seconds=live[1]) for t in ("worker", "passthrough")],
        "faust_live": bench.latency(
            "worker", live[0], seconds=live[1], label="faust", runtime="faust"
        ),
        "xgboost_live": bench.latency(
            "worker", live[0], seconds=live[1], label="xgboost", predictor="xgboost"
        ),
        "sustained": [
            bench.latency(t, sustained[0], seconds=sustained[1]) for t in ("worker", "passthrough")
        ],
        "xgboost_sustained": bench.latency(
            "worker", sustained[0], seconds=sustained[1], label="xgboost", predictor="xgboost"
        ),
        "idle": bench.idle_cpu(),
        "latency": [
            bench.latency(target, rate)
            for rate in plan.loads
            for target in ("worker", "passthrough")
        ],
        "bursts": [
            bench.latency("worker", plan.burst_rate, burst=True, label=label, **settings)
            for label, settings in burst_settings.items()
        ],
    }


def write_results(results: dict[str, Any], plan: BenchPlan) -> None:
    """bench.json, bench.png and the sustained runs' per-second charts."""
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    (plan.out_dir / "bench.json").write_text(json.dumps(results, indent=2) + "\n")
    plot_bench(results, plan.out_dir / "bench.png")
    for row in results["sustained"]:
        title = (
            f"{row['target']}: {row['offered_per_s']:,} events/s for {plan.sustained_seconds:g} s"
        )
        plot_series(row["series"], plan.out_dir / f"sustained-{row['target']}.png", title)
