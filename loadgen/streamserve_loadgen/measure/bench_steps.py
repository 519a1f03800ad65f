"""The benchmark's steps on one stack (``Bench``): drains, far drains, latency runs at a rate,
idle CPU; `make bench` (bench.py) runs them in order. Every measured party -- worker,
pass-through, load generator, latency watcher -- is its own process."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress

from streamserve.config import load_settings
from streamserve.io import kafka as kafka_io
from streamserve_loadgen.load import procs
from streamserve_loadgen.load.produce import preload
from streamserve_loadgen.load.profile import RateProfile
from streamserve_loadgen.measure.bench_report import FAR_DELAY_MS, peak_throughput
from streamserve_loadgen.measure.demo import set_up_demo_world
from streamserve_loadgen.measure.live import progress_bar
from streamserve_loadgen.world import synthetic
from streamserve_loadgen.world.embedded import (
    EMBEDDED_LINGER_MS,
    EmbeddedStack,
    free_port,
    start_broker,
)
from streamserve_loadgen.world.synthetic import World

PARTITIONS = 4
REGISTRY_FORMATS = ("avro", "protobuf")  # drained beside JSON: the same events, framed
AVRO_ARRAYS = "avro_arrays"  # Avro, half in a schema version with an unread array


@dataclass(frozen=True)
class BenchPlan:
    """What one `make bench` run measures."""

    events: int = 300_000
    baseline_events: int = 20_000
    faust_events: int = 50_000  # Faust drains a few thousand events/s: a part of the topic
    world: World = field(default_factory=lambda: World(entities=100_000))
    batch_size: int = 1000
    max_wait_ms: float = 5.0
    loads: tuple[int, ...] = (30_000,)  # offered beyond what one worker drains: a backlog
    load_seconds: float = 10.0
    live_rate: int = 1_000  # a production rate: worker and pass-through, the same settings
    live_seconds: float = 30.0
    sustained_rate: int = 10_000  # worker and pass-through, the same producer settings
    sustained_seconds: float = 60.0
    idle_seconds: float = 20.0  # an idle worker's CPU is sampled this long
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

    def __init__(
        self, plan: BenchPlan, stack: EmbeddedStack, console: Console, registry_url: str
    ) -> None:
        self.plan = plan
        self.stack = stack
        self.console = console
        self.registry_url = registry_url
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
            set_up_demo_world(
                self.stack,
                self.model_dir,
                plan.world,
                [
                    self.drain_topic,
                    *(self.topic(f"drain-{f}") for f in (*REGISTRY_FORMATS, AVRO_ARRAYS)),
                ],
                PARTITIONS,
            )
        self.load_topic(self.drain_topic, self.events(), "json")

    def events(self) -> list[tuple[bytes, bytes]]:
        plan = self.plan
        return list(
            synthetic.generate_events(
                plan.events, plan.world.entities, malformed_every=plan.world.malformed_every
            )
        )

    def load_topic(self, topic: str, pairs: Iterable[tuple[bytes, bytes]], what: str) -> None:
        with self._progress() as progress:
            task = progress.add_task(f"pre-loading {what} events", total=self.plan.events)
            preload(
                self.stack.kafka_bootstrap,
                topic,
                pairs,
                on_progress=lambda n: progress.update(task, completed=n),
            )

    def _progress(self) -> Progress:
        return progress_bar(self.console)

    def drain(
        self, step: str, argv: list[str], input_topic: str | None = None, **settings: object
    ) -> dict[str, Any]:
        """Run one consumer over a pre-loaded topic until it idles; returns its summary."""
        topic = input_topic or self.drain_topic
        env = self.env(step, input_topic=topic, exit_when_idle_s=2.0, **settings)
        with self.console.status(f"{step}: draining"):
            result = procs.spawn(step, argv, env).result()
        self.console.print(
            f"{step}: {result['events']:,} events in {result['seconds']} s, "
            f"{result['events_per_s']:,.0f}/s, "
            f"{result['cpu_us_per_event']} µs CPU/event"
        )
        return result

    def far_drains(self) -> dict[str, dict[str, Any]]:
        """The worker and the bare loop draining the same events from a broker behind a delay
        proxy (FAR_DELAY_MS each way); the broker advertises the proxy's port."""
        plan = self.plan
        workdir = Path(tempfile.mkdtemp(prefix="streamserve-far-"))
        broker_port, proxy_port = free_port(), free_port()
        argv = procs.loadgen_argv(
            "delay-proxy",
            "--listen",
            str(proxy_port),
            "--target",
            str(broker_port),
            "--delay-ms",
            str(FAR_DELAY_MS),
        )
        proxy = procs.spawn("delay-proxy", argv, procs.child_env({}), ready_text="listening")
        broker = None
        try:
            proxy.wait_ready()
            _, broker = start_broker(workdir, broker_port, advertised_port=proxy_port)
            far = f"127.0.0.1:{proxy_port}"
            topic = self.topic("far")
            settings = load_settings(kafka_bootstrap=far)
            kafka_io.ensure_topics(kafka_io.make_admin(settings), [topic], PARTITIONS)
            events = synthetic.generate_events(
                plan.events, plan.world.entities, malformed_every=plan.world.malformed_every
            )
            with self.console.status(f"pre-loading {plan.events:,} events behind the proxy"):
                preload(far, topic, events)
            return {
                "worker": self.drain(
                    "far-worker", procs.streamserve_argv("worker"), topic, kafka_bootstrap=far
                ),
                "bareloop": self.drain(
                    "far-bareloop", self.bareloop_argv("far-bareloop"), topic, kafka_bootstrap=far
                ),
            }
        finally:
            proxy.kill()
            if broker is not None:
                broker.terminate()
                broker.wait(10)

    def bareloop_argv(self, step: str) -> list[str]:
        return procs.loadgen_argv("bareloop", "--output-topic", self.topic(f"{step}-out"))

    def latency(
        self,
        target: str,
        rate: int,
        burst: bool = False,
        label: str = "",
        seconds: float | None = None,
        **settings: object,
    ) -> dict[str, Any]:
        """Offer ``rate`` events/s for ``seconds`` (with ``burst``: the plan's bursts on top) to a
        running worker or pass-through with ``settings``; time every output."""
        plan = self.plan
        step = f"{target}-{rate}{'-burst' if burst else ''}{'-' + label if label else ''}"
        profile = (
            RateProfile("burst", rate, plan.burst_seconds, plan.burst_peak)
            if burst
            else RateProfile("fixed", rate, seconds or plan.load_seconds)
        )
        timed = self._timed_party(target, step)
        self.create_topics([timed.input_topic, timed.outputs, *timed.dead_letter_topics])
        env = self.env(step, input_topic=timed.input_topic, **settings)
        consumer = procs.spawn(step, timed.argv, env)
        watcher: procs.Child | None = None
        try:
            with self.console.status(f"{step}: waiting for partitions"):
                consumer.wait_ready()
            watcher = self._watcher(timed, profile.total)
            offered = self._offer(step, timed.input_topic, profile)
            with self.console.status(f"{step}: waiting for the last outputs"):
                watched = watcher.result()
            summary = consumer.stop()
        finally:
            consumer.kill()
            if watcher is not None:
                watcher.kill()
        row = latency_row(target, label, burst, rate, offered, profile, settings, watched, summary)
        latency = row["latency_ms"]
        self.console.print(
            f"{step}: p50 {latency['p50']} ms, p99 {latency['p99']} ms, "
            f"peak {row['drain_events_per_s']:,}/s, lost {row['lost']}"
        )
        return row

    def _timed_party(self, target: str, step: str) -> TimedParty:
        """The worker (its outputs timed from each prediction's own stamp) or the pass-through
        (from the input record's timestamp), with the step's topics."""
        input_topic = self.topic(f"{step}-in")
        if target == "worker":
            return TimedParty(
                procs.streamserve_argv("worker"),
                input_topic,
                self.topic(f"{step}-predictions"),
                [self.topic(f"{step}-dead-letters")],
                "prediction",
            )
        outputs = self.topic(f"{step}-out")
        argv = procs.loadgen_argv("passthrough", "--output-topic", outputs)
        return TimedParty(argv, input_topic, outputs, [], "record-timestamp")

    def _watcher(self, timed: TimedParty, expected: int) -> procs.Child:
        """The latency watcher on the party's outputs, ready."""
        watch_args = [
            "watch",
            "--bootstrap",
            self.stack.kafka_bootstrap,
            "--outputs",
            timed.outputs,
            "--origin",
            timed.origin,
            "--expected",
            str(expected),
        ]
        for topic in timed.dead_letter_topics:
            watch_args += ["--dead-letters", topic]
        watcher = procs.spawn(
            "watcher", procs.loadgen_argv(*watch_args), procs.child_env({}), ready_text="watching"
        )
        watcher.wait_ready()
        return watcher

    def _offer(self, step: str, input_topic: str, profile: RateProfile) -> dict[str, Any]:
        """Run the rate producer to the end of ``profile``; returns what it offered."""
        plan = self.plan
        argv = procs.producer_argv(
            self.stack.kafka_bootstrap,
            input_topic,
            profile,
            plan.world.entities,
            plan.world.malformed_every,
            linger_ms=EMBEDDED_LINGER_MS if self.stack.embedded_broker else None,
        )
        producer = procs.spawn("producer", argv, procs.child_env({}), ready_text="")
        with self._progress() as progress:
            task = progress.add_task(f"{step}: {profile.rate:,.0f} events/s", total=profile.seconds)
            started = time.monotonic()
            while producer.proc.poll() is None:
                progress.update(task, completed=time.monotonic() - started)
                time.sleep(0.2)
        return dict(producer.result())

    def idle_cpu(self) -> dict[str, Any]:
        """A worker subscribed to a topic nobody writes: the share of a core it uses."""
        import psutil  # the bench extra's

        topic = self.topic("idle-in")
        self.create_topics([topic])
        argv = procs.streamserve_argv("worker")
        worker = procs.spawn("worker-idle", argv, self.env("worker-idle", input_topic=topic))
        try:
            with self.console.status(f"idle worker: {self.plan.idle_seconds:g} s of CPU"):
                worker.wait_ready()
                time.sleep(2.0)  # past the group join
                process = psutil.Process(worker.proc.pid)
                before = sum(process.cpu_times()[:2])
                time.sleep(self.plan.idle_seconds)
                used = sum(process.cpu_times()[:2]) - before
            worker.stop()
        finally:
            worker.kill()
        percent = round(used / self.plan.idle_seconds * 100, 2)
        self.console.print(f"idle worker: {percent}% of a core")
        return {"seconds": self.plan.idle_seconds, "cpu_percent": percent}

    def create_topics(self, topics: list[str]) -> None:
        settings = load_settings(kafka_bootstrap=self.stack.kafka_bootstrap)
        kafka_io.ensure_topics(kafka_io.make_admin(settings), topics, PARTITIONS)


@dataclass(frozen=True)
class TimedParty:
    """What a latency run times: a consumer's argv, its topics, where its times start."""

    argv: list[str]
    input_topic: str
    outputs: str
    dead_letter_topics: list[str]
    origin: str  # the watcher's --origin


def latency_row(
    target: str,
    label: str,
    burst: bool,
    rate: int,
    offered: dict[str, Any],
    profile: RateProfile,
    settings: dict[str, object],
    watched: dict[str, Any],
    summary: dict[str, Any],
) -> dict[str, Any]:
    """One latency run's row of bench.json."""
    return {
        "target": target,
        "label": label,
        "burst": burst,
        "offered_per_s": rate,
        "offered": offered,
        "profile": asdict(profile),
        "settings": {k: str(v) for k, v in settings.items()},
        "latency_ms": watched["latency_ms"],
        "lost": watched["lost"],
        "duplicated": watched["duplicated"],
        "peak_rss_mb": summary["peak_rss_mb"],
        "cpu_us_per_event": summary["cpu_us_per_event"],
        "batches": summary["batches"],
        "stages_ms": summary.get("stages_ms", {}),
        "series": watched["series"],
        "drain_events_per_s": peak_throughput(watched["series"]),
    }
