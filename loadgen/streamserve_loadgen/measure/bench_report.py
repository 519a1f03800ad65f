"""The benchmark's report: its goals against measured values, the terminal table, the machine."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

FAR_DELAY_MS = 10.0  # the far broker: every byte delayed this long each way (a cross-zone cluster)


def goals(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The issue's goals, each with the measured value and whether it is met."""
    drain, far, formats = results["drain"], results["far"], results.get("formats", {})
    worker, bare = drain["worker"], drain["bareloop"]
    sustained = {row["target"]: row for row in results["sustained"]}
    rss = max(
        [
            worker["peak_rss_mb"],
            *(r["peak_rss_mb"] for r in results["sustained"] if r["target"] == "worker"),
        ]
    )
    extra_p99 = (
        sustained["worker"]["latency_ms"]["p99"] - sustained["passthrough"]["latency_ms"]["p99"]
    )
    live = {row["target"]: row for row in results["live"]}
    live_extra = {
        q: live["worker"]["latency_ms"][q] - live["passthrough"]["latency_ms"][q]
        for q in ("p50", "p99")
    }
    found: dict[str, dict[str, Any]] = {
        "drain_vs_bareloop": _goal(worker["events_per_s"] / bare["events_per_s"], ">=", 1.0),
        "cpu_per_event_vs_bareloop": _goal(
            worker["cpu_us_per_event"] / bare["cpu_us_per_event"], "<=", 1.1
        ),
        "live_p50_over_passthrough_ms": _goal(live_extra["p50"], "<=", 3),
        "live_p99_over_passthrough_ms": _goal(live_extra["p99"], "<=", 10),
        "idle_worker_cpu_percent": _goal(results["idle"]["cpu_percent"], "<", 1),
        "far_broker_drain_vs_bareloop": _goal(
            far["worker"]["events_per_s"] / far["bareloop"]["events_per_s"], ">=", 0.9
        ),
        "sustained_p99_over_passthrough_ms": _goal(extra_p99, "<=", 20),
        "lost_under_load": _goal(sum(r["lost"] for r in timed_rows(results)), "<=", 0),
        "drain_vs_batch_size_1": _goal(
            worker["events_per_s"] / drain["baseline"]["events_per_s"], ">=", 40
        ),
        "worker_peak_rss_mb": _goal(rss, "<=", 300),
        "exactly_once_drain_vs_at_least_once": _goal(
            drain["worker_exactly_once"]["events_per_s"] / worker["events_per_s"], ">=", 0.8
        ),
        **{
            f"{f}_drain_vs_json": _goal(
                formats[f]["events_per_s"] / formats[f"json_before_{f}"]["events_per_s"], ">=", 0.8
            )
            for f in ("avro", "protobuf")
            if f in formats
        },
        **(
            {
                "avro_unread_arrays_drain_vs_json": _goal(
                    formats["avro_arrays"]["events_per_s"]
                    / formats["json_before_avro_arrays"]["events_per_s"],
                    ">=",
                    0.85,
                )
            }
            if "avro_arrays" in formats
            else {}
        ),
        **(
            {
                "feast_lookup_vs_get_online_features": _goal(
                    results["feast"]["lookup"]["feast_ms"]
                    / results["feast"]["lookup"]["streamserve_ms"],
                    ">=",
                    10,
                ),
                "feast_drain_vs_vector": _goal(
                    results["feast"]["feast"]["events_per_s"]
                    / results["feast"]["vector"]["events_per_s"],
                    ">=",
                    0.8,
                ),
            }
            if "feast" in results
            else {}
        ),
        **_predictor_goals(results),
        "faust_vs_bare_faust": _goal(
            drain["faust"]["events_per_s"] / drain["faust_bare"]["events_per_s"], ">=", 0.70
        ),
    }
    return found


def timed_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The runs at the live and sustained rates: worker and pass-through, the Faust runtime's,
    and the worker with XGBoost's predictor."""
    extra = [
        results[k] for k in ("faust_live", "xgboost_live", "xgboost_sustained") if k in results
    ]
    return [*results["live"], *results["sustained"], *extra]


def _predictor_goals(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Issue 28's: the default predictor (oneDAL where installed) against XGBoost's own."""
    drain = results["drain"]
    if "worker_xgboost" not in drain or "xgboost_live" not in results:
        return {}
    fast, xgb, bare = drain["worker"], drain["worker_xgboost"], drain["bareloop"]
    live = {row["target"]: row for row in results["live"]}["worker"]
    return {
        "predictor_cpu_per_event_vs_xgboost": _goal(
            fast["cpu_us_per_event"] / xgb["cpu_us_per_event"], "<=", 0.8
        ),
        "predictor_drain_vs_bareloop": _goal(
            fast["events_per_s"] / bare["events_per_s"], ">=", 1.15
        ),
        "predictor_live_p50_minus_xgboost_ms": _goal(
            live["latency_ms"]["p50"] - results["xgboost_live"]["latency_ms"]["p50"], "<=", 0
        ),
    }


def _goal(value: float, op: str, target: float) -> dict[str, Any]:
    met = {">=": value >= target, "<=": value <= target, "<": value < target}[op]
    return {"value": round(value, 3), "goal": f"{op} {target:g}", "met": met}


def print_table(results: dict[str, Any], console: Console) -> None:
    """The bench table: drain rates and CPU against the bare loop, the far broker, latency under
    load; then the stage table, the paired steps, the other runtimes and predictors, the goals."""
    console.print(_main_table(results))
    print_stages(results["live"] + results["sustained"], console)
    _print_live_cpu(results, console)
    _print_pairs(results, console)
    _print_bursts(results, console)
    _print_runtimes_and_predictors(results, console)
    _print_goals(results, console)


def _main_table(results: dict[str, Any]) -> Table:
    drain, far = results["drain"], results["far"]
    table = Table(title="streamserve bench", show_lines=False)
    table.add_column("measurement")
    for column in ("worker", "bare loop", "pass-through"):
        table.add_column(column, justify="right")
    parties = ("worker", "bareloop", "passthrough")
    table.add_row(
        f"drain of {results['plan']['events']:,} events (events/s)",
        *(f"{drain[k]['events_per_s']:,.0f}" for k in parties),
    )
    table.add_row(
        "CPU per event (µs, user+sys, all threads)",
        *(f"{drain[k]['cpu_us_per_event']:.1f}" for k in parties),
    )
    table.add_row("peak RSS (MB)", *(f"{drain[k]['peak_rss_mb']:.0f}" for k in parties))
    table.add_row(
        f"drain, broker {FAR_DELAY_MS:g} ms away each way (events/s)",
        f"{far['worker']['events_per_s']:,.0f}",
        f"{far['bareloop']['events_per_s']:,.0f}",
        "",
    )
    rows = {
        (r["target"], r["offered_per_s"], r["profile"]["seconds"]): r
        for r in results["live"] + results["sustained"] + results["latency"]
    }
    for rate, seconds in sorted({(rate, seconds) for _, rate, seconds in rows}):
        cells = []
        for party in ("worker", "passthrough"):
            row = rows.get((party, rate, seconds))
            cells.append(
                f"{row['latency_ms']['p50']:.0f} / {row['latency_ms']['p99']:.0f}"
                f" (lost {row['lost']})"
                if row
                else "-"
            )
        table.add_row(
            f"p50 / p99 at {rate:,} events/s for {seconds:g} s (ms)", cells[0], "", cells[1]
        )
    return table


def _print_live_cpu(results: dict[str, Any], console: Console) -> None:
    for row in results["live"] + results["sustained"]:
        share = row["cpu_us_per_event"] * row["offered_per_s"] / 1e4
        console.print(
            f"{row['target']} at {row['offered_per_s']:,} events/s: {share:.1f}% of a core "
            f"({row['cpu_us_per_event']:.1f} µs CPU/event, {row['batches']:,} batches)"
        )
    console.print(f"idle worker: {results['idle']['cpu_percent']}% of a core")


def _print_pairs(results: dict[str, Any], console: Console) -> None:
    """Each drain beside the reference it ran right after."""
    drain, formats = results["drain"], results.get("formats", {})
    labels = {
        "avro": "avro",
        "protobuf": "protobuf",
        "avro_arrays": "avro, half in a schema version with an unread array,",
    }
    for input_format, label in labels.items():
        row, json_row = formats.get(input_format), formats.get(f"json_before_{input_format}")
        if row and json_row:
            console.print(
                f"{label} input (Schema Registry framing): {row['events_per_s']:,.0f} "
                f"events/s at {row['cpu_us_per_event']:.1f} µs CPU/event, against "
                f"{json_row['events_per_s']:,.0f} at {json_row['cpu_us_per_event']:.1f} for "
                "the same events in JSON, drained just before"
            )
    if "decode_us_per_event" in results:
        costs = ", ".join(f"{f} {us} µs" for f, us in results["decode_us_per_event"].items())
        console.print(f"decoding, per event in 1,000-event batches (in process): {costs}")
    eos, plain = drain["worker_exactly_once"], drain["worker"]
    console.print(
        f"exactly-once (transactions at the default interval): {eos['events_per_s']:,.0f} "
        f"events/s at {eos['cpu_us_per_event']:.1f} µs CPU/event, against "
        f"{plain['events_per_s']:,.0f} at {plain['cpu_us_per_event']:.1f} at least once, "
        "drained just before"
    )
    cached, plain = drain["worker_cached"], drain["worker"]
    console.print(
        f"local feature cache (TTL 60 s, Zipf-skewed entities): "
        f"{cached['events_per_s']:,.0f} events/s at {cached['cpu_us_per_event']:.1f} "
        f"µs CPU/event, against {plain['events_per_s']:,.0f} at "
        f"{plain['cpu_us_per_event']:.1f} without"
    )
    console.print(
        f"batch size 1: {drain['baseline']['events_per_s']:,.0f} events/s at "
        f"{drain['baseline']['cpu_us_per_event']:.0f} µs CPU/event"
    )


def _print_bursts(results: dict[str, Any], console: Console) -> None:
    for row in results.get("bursts", []):
        latency = row["latency_ms"]
        console.print(
            f"{row['offered_per_s']:,}/s with bursts ({row['label']}: "
            f"{row['settings'] or 'defaults'}): p50 "
            f"{latency['p50']:.0f} ms, p99 {latency['p99']:.0f} ms, max "
            f"{latency['max']:.0f} ms, peak {row['drain_events_per_s']:,} events/s, "
            f"{row['cpu_us_per_event']:.1f} µs CPU/event, "
            f"lost {row['lost']}"
        )


def _print_runtimes_and_predictors(results: dict[str, Any], console: Console) -> None:
    """The Faust runtime against bare Faust; the worker with XGBoost's predictor."""
    drain = results["drain"]
    faust, bare = drain["faust"], drain["faust_bare"]
    console.print(
        f"faust runtime: {faust['events_per_s']:,.0f} events/s at "
        f"{faust['cpu_us_per_event']:.0f} µs CPU/event; bare Faust agent counting "
        f"take() batches: {bare['events_per_s']:,.0f} events/s "
        f"({faust['events']:,} events each)"
    )
    if "worker_xgboost" in drain:
        xgb = drain["worker_xgboost"]
        console.print(
            f"worker with STREAMSERVE_PREDICTOR=xgboost: {xgb['events_per_s']:,.0f} events/s at "
            f"{xgb['cpu_us_per_event']:.1f} µs CPU/event (the default, auto, above: "
            f"{drain['worker']['events_per_s']:,.0f} at {drain['worker']['cpu_us_per_event']:.1f})"
        )
    for key in ("xgboost_live", "xgboost_sustained"):
        if key in results:
            row = results[key]
            console.print(
                f"worker with STREAMSERVE_PREDICTOR=xgboost at {row['offered_per_s']:,} events/s: "
                f"p50 / p99 {_p50_p99(row)} ms, "
                f"{row['cpu_us_per_event'] * row['offered_per_s'] / 1e4:.1f}% of a core"
            )
    if "faust_live" in results:
        row = results["faust_live"]
        passthrough = {r["target"]: r for r in results["live"]}["passthrough"]
        share = row["cpu_us_per_event"] * row["offered_per_s"] / 1e4
        console.print(
            f"faust runtime at {row['offered_per_s']:,} events/s for "
            f"{row['profile']['seconds']:g} s: p50 / p99 {_p50_p99(row)} ms (pass-through "
            f"{_p50_p99(passthrough)}), {share:.1f}% of a core, lost {row['lost']}"
        )


def _print_goals(results: dict[str, Any], console: Console) -> None:
    goal_table = Table(title="goals")
    for column in ("goal", "measured", "target", "met"):
        goal_table.add_column(column)
    for name, goal in results["goals"].items():
        goal_table.add_row(name, f"{goal['value']:g}", goal["goal"], "yes" if goal["met"] else "NO")
    console.print(goal_table)
    console.print(json.dumps({"goals": results["goals"]}))


STAGE_NAMES = {
    "to_worker": "record timestamp -> taken by the worker",
    "window": "waiting for its batch to open",
    "lookup": "feature lookup",
    "predict": "predict",
    "handling": "decode, hand-offs, encode, produce",
    "ack": "produce -> acknowledged",
}


def print_stages(rows: list[dict[str, Any]], console: Console) -> None:
    """Where each prediction's time went in the worker (p50 / p99 of each stage, ms), beside
    the pass-through's end to end at the same rate."""
    workers = [r for r in rows if r["target"] == "worker" and r.get("stages_ms")]
    if not workers:
        return
    passthrough = {r["offered_per_s"]: r for r in rows if r["target"] == "passthrough"}
    table = Table(title="where the worker's time goes, per prediction: p50 / p99 (ms)")
    table.add_column("stage")
    for row in workers:
        table.add_column(f"{row['offered_per_s']:,}/s", justify="right")
    for stage, name in STAGE_NAMES.items():
        cells = []
        for row in workers:
            found = row["stages_ms"].get(stage)
            cells.append(f"{found['p50']:.2f} / {found['p99']:.2f}" if found else "-")
        table.add_row(name, *cells)
    end_to_end: dict[str, list[dict[str, Any] | None]] = {
        "worker, end to end": list(workers),
        "pass-through, end to end": [passthrough.get(row["offered_per_s"]) for row in workers],
    }
    for label, targets in end_to_end.items():
        table.add_row(label, *(_p50_p99(target) for target in targets))
    console.print(table)


def _p50_p99(row: dict[str, Any] | None) -> str:
    if row is None:
        return "-"
    return f"{row['latency_ms']['p50']:.1f} / {row['latency_ms']['p99']:.1f}"


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
