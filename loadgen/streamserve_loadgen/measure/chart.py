"""PNG charts of a load run and of a benchmark (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from streamserve.errors import MissingExtraError


def _pyplot() -> Any:
    try:
        import matplotlib
    except ModuleNotFoundError:
        raise MissingExtraError("the load generator's charts (matplotlib)", "loadgen") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_series(series: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Throughput (bars) and p50/p99 latency (lines) per second of a load run."""
    plt = _pyplot()
    fig, rate_axis = plt.subplots(figsize=(9, 4.5))
    t = [point["t"] for point in series]
    rate_axis.bar(
        t, [point["events_per_s"] for point in series], color="#c6dbef", label="outputs/s"
    )
    rate_axis.set_xlabel("second of the run")
    rate_axis.set_ylabel("outputs per second")
    latency_axis = rate_axis.twinx()
    for key, colour in (("p50_ms", "#2171b5"), ("p99_ms", "#cb181d")):
        latency_axis.plot(
            t,
            [point[key] for point in series],
            color=colour,
            marker=".",
            label=key.replace("_ms", " latency"),
        )
    latency_axis.set_ylabel("end-to-end latency (ms)")
    latency_axis.set_ylim(bottom=0)
    handles = rate_axis.get_legend_handles_labels()
    more = latency_axis.get_legend_handles_labels()
    rate_axis.legend(handles[0] + more[0], handles[1] + more[1], loc="upper left")
    rate_axis.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_bench(results: dict[str, Any], path: Path) -> Path:
    """Drain rates (left) and p50/p99 latency per offered load (right) of one bench run."""
    plt = _pyplot()
    fig, (drain_axis, latency_axis) = plt.subplots(1, 2, figsize=(12, 4.5))
    drain = results["drain"]
    names = [name for name in ("passthrough", "worker", "baseline") if name in drain]
    rates = [drain[name]["events_per_s"] for name in names]
    bars = drain_axis.bar(names, rates, color=["#969696", "#2171b5", "#fd8d3c"][: len(names)])
    drain_axis.bar_label(bars, labels=[f"{r:,.0f}" for r in rates])
    drain_axis.set_ylabel("events per second (drain)")
    drain_axis.set_title(f"drain of {results['plan']['events']:,} pre-loaded events")
    loads = sorted(
        [*results.get("live", []), *results.get("sustained", []), *results.get("latency", [])],
        key=lambda row: row["offered_per_s"],
    )
    for target, colour in (("worker", "#2171b5"), ("passthrough", "#969696")):
        rows = [row for row in loads if row["target"] == target]
        offered = [row["offered_per_s"] for row in rows]
        latency_axis.plot(
            offered,
            [row["latency_ms"]["p50"] for row in rows],
            color=colour,
            marker="o",
            linestyle="--",
            label=f"{target} p50",
        )
        latency_axis.plot(
            offered,
            [row["latency_ms"]["p99"] for row in rows],
            color=colour,
            marker="o",
            label=f"{target} p99",
        )
    latency_axis.set_xscale("log")
    latency_axis.set_xlabel("offered events per second")
    latency_axis.set_ylabel("end-to-end latency (ms)")
    latency_axis.set_ylim(bottom=0)
    latency_axis.set_title("latency under load")
    latency_axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
