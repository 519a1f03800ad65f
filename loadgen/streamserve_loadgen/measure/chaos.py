"""`make chaos`: live load through a worker group while workers are SIGKILLed and restarted, Redis
is stopped and restarted, and a worker joins mid-run; then `audit` says whether anything was lost.

Every party is its own process on the embedded stack. Workers start with the settings an
operator starts with: topics, the guarantee and the commit interval, no identity (a restarted
worker takes its predecessor's slot on the host: runtime/identity.py). A worker that exits on
its own (for example at start-up while Redis is down, exit 4) is restarted a second later, as an
orchestrator would. The audit reads the outputs as a downstream team would: read_committed.
"""

from __future__ import annotations

import random
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from rich.console import Console

from streamserve.io.kafka import Cluster
from streamserve.runtime.offsets import MIN_COMMIT_SLACK_S
from streamserve.tools.audit import AuditReport, audit
from streamserve_loadgen.load import procs
from streamserve_loadgen.load.profile import RateProfile
from streamserve_loadgen.measure.demo import set_up_demo_world
from streamserve_loadgen.world.embedded import EmbeddedStack, running_stack
from streamserve_loadgen.world.synthetic import World

SESSION_TIMEOUT_MS = 6_000  # a SIGKILLed worker's partitions move after this long
RESTART_DELAY_S = 1.0
Guarantee = Literal["at-least-once", "exactly-once"]
EXACTLY_ONCE_INTERVAL_S = 0.1  # the default commit interval (transaction length) there


@dataclass(frozen=True)
class ChaosPlan:
    """What one chaos run does. Times are fractions of the load's duration."""

    events: int = 300_000
    rate: int = 10_000
    world: World = field(default_factory=lambda: World(trees=100))
    workers: int = 2
    kills: int = 5
    redis_outages: int = 2
    redis_down_s: float = 5.0
    # stop Redis (connections refused), freeze it (SIGSTOP: connections hang), or alternate
    redis_outage: Literal["stop", "freeze", "both"] = "both"
    replace_after_s: float = 0.0  # a killed worker's replacement starts this long after
    join_at: float = 0.5
    partitions: int = 4
    max_batch_size: int = 500
    guarantee: Guarantee = "at-least-once"
    commit_interval_ms: int = 200  # at least once (exactly-once keeps its default, 100 ms)
    seed: int = 7

    @property
    def seconds(self) -> float:
        return self.events / self.rate

    @property
    def duplicate_bound_per_kill(self) -> int:
        """Most records one kill can leave to be scored twice: what the worker had in hand (a
        batch filling, one being scored, and the outputs awaiting acknowledgement: several small
        batches, but no more than a linger plus a round trip of its rate, about one batch here)
        plus what was acknowledged but not committed yet. At least once, that is at most a
        commit interval plus its slack of input (runtime/offsets.py: past it the worker holds
        until a commit lands, also while catching up and in a rebalance). Exactly once on the
        embedded broker, the killed worker's open transaction (its successor fences it, but
        Tansu does not abort it): a commit interval of its work, at catch-up speed a few
        times the offered rate; on Apache Kafka it is aborted and this is 0."""
        if self.guarantee == "exactly-once":
            return 3 * self.max_batch_size + round(4 * EXACTLY_ONCE_INTERVAL_S * self.rate)
        interval_s = self.commit_interval_ms / 1000
        held_s = interval_s + max(interval_s, MIN_COMMIT_SLACK_S)
        return 3 * self.max_batch_size + round(held_s * self.rate)

    def duplicate_bound(self, kills: int) -> int:
        return kills * self.duplicate_bound_per_kill

    def schedule(self) -> list[tuple[float, str]]:
        """(seconds from the start of the load, action), in time order."""
        rng = random.Random(self.seed)
        span = self.seconds
        actions: list[tuple[float, str]] = []
        slot = 0.8 / max(self.redis_outages, 1)  # outages in separate slots: they never overlap
        for i in range(self.redis_outages):
            start = (0.1 + slot * i + rng.uniform(0, 0.2) * slot) * span
            actions += [(start, "redis-stop"), (start + self.redis_down_s, "redis-start")]
        # the costliest kill for duplicates: a worker catching up on the outage's backlog
        after_outages = [at + rng.uniform(0.5, 1.5) for at, a in actions if a == "redis-start"]
        kills = after_outages[: self.kills]
        kills += [rng.uniform(0.05, 0.85) * span for _ in range(self.kills - len(kills))]
        actions += [(at, "kill") for at in kills]
        actions.append((self.join_at * span, "join"))
        return sorted(actions)


@dataclass
class ChaosResult:
    plan: ChaosPlan
    report: AuditReport
    malformed_sent: int
    kills: int = 0
    restarts: int = 0
    redis_outages: int = 0
    joined: int = 0
    seconds: float = 0.0

    @property
    def problems(self) -> list[str]:
        """What the run got wrong, in words; empty when it passed."""
        return problems(self)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def duplicate_percent(self) -> float:
        valid = self.plan.events - self.malformed_sent
        return 100 * self.report.extra_outputs / valid if valid else 0.0

    def as_dict(self) -> dict[str, Any]:
        found = asdict(self)
        found["report"] = self.report.as_dict()
        found["duplicate_bound"] = self.plan.duplicate_bound(self.kills)
        found["duplicate_bound_per_kill"] = self.plan.duplicate_bound_per_kill
        found["extra_outputs_per_kill"] = (
            round(self.report.extra_outputs / self.kills) if self.kills else None
        )
        found["duplicate_percent"] = round(self.duplicate_percent, 3)
        found["problems"] = self.problems
        found["ok"] = self.ok
        return found


class Chaos:
    """The worker group of one chaos run, and the moves made against it."""

    def __init__(self, plan: ChaosPlan, stack: EmbeddedStack, console: Console) -> None:
        self.plan = plan
        self.stack = stack
        self.console = console
        self.rng = random.Random(plan.seed + 1)
        self.run_id = f"chaos-{plan.guarantee}-{int(time.time())}"
        self.model_dir = Path(tempfile.mkdtemp(prefix="streamserve-chaos-")) / "model"
        self.workers: dict[str, procs.Child] = {}
        self.spawned: list[procs.Child] = []  # every worker started, killed or not
        self.next_id = 0
        self.kills = self.restarts = self.outages = self.joined = 0
        self.replacements_due: list[float] = []  # monotonic times to start a replacement

    def topic(self, name: str) -> str:
        return f"{self.run_id}-{name}"

    def env(self) -> dict[str, str]:
        """A worker's settings: no identity, so a restart comes back under its slot's."""
        plan = self.plan
        settings = {
            "MODEL_DIR": str(self.model_dir),
            "INPUT_TOPIC": self.topic("events"),
            "PREDICTIONS_TOPIC": self.topic("predictions"),
            "DEAD_LETTER_TOPIC": self.topic("dead-letters"),
            "METRICS_TOPIC": self.topic("metrics"),
            "GROUP_ID": self.topic("group"),
            "TOPIC_PARTITIONS": str(plan.partitions),
            "MAX_BATCH_SIZE": str(plan.max_batch_size),
            "PROCESSING_GUARANTEE": plan.guarantee,
            "RDKAFKA_CONSUMER_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
            "LOG_LEVEL": "INFO",
        }
        if plan.guarantee == "at-least-once":
            settings["COMMIT_INTERVAL_MS"] = str(plan.commit_interval_ms)
        env = {f"STREAMSERVE_{k}": v for k, v in settings.items()}
        return procs.child_env({**self.stack.env(), **env})

    def prepare(self) -> None:
        plan = self.plan
        topics = [self.topic(n) for n in ("events", "predictions", "dead-letters", "metrics")]
        set_up_demo_world(
            self.stack,
            self.model_dir,
            plan.world,
            topics,
            plan.partitions,
        )

    def start_worker(self) -> None:
        self.next_id += 1
        worker_id = f"worker-{self.next_id}"
        argv = procs.streamserve_argv("worker")
        self.workers[worker_id] = procs.spawn(worker_id, argv, self.env())
        self.spawned.append(self.workers[worker_id])

    def kill_one(self) -> None:
        alive = [w for w, child in self.workers.items() if child.proc.poll() is None]
        if not alive:
            return
        victim = self.rng.choice(alive)
        self.workers.pop(victim).kill()
        self.kills += 1
        self.console.print(
            f"  SIGKILL {victim}; a replacement starts in {self.plan.replace_after_s:g} s"
        )
        self.replacements_due.append(time.monotonic() + self.plan.replace_after_s)
        self.start_due()

    def start_due(self) -> None:
        """Start the replacements whose time has come."""
        now = time.monotonic()
        for due in [d for d in self.replacements_due if d <= now]:
            self.replacements_due.remove(due)
            self.start_worker()

    def restart_exited(self) -> None:
        """A worker that exited on its own (e.g. Redis down at its start) is started again;
        replacements of killed workers start when due."""
        self.start_due()
        for worker_id, child in list(self.workers.items()):
            if child.proc.poll() is not None:
                self.console.print(
                    f"  {worker_id} exited with {child.proc.returncode}; "
                    f"restarting\n    {child.tail().splitlines()[-1:]}"
                )
                del self.workers[worker_id]
                time.sleep(RESTART_DELAY_S)
                self.restarts += 1
                self.start_worker()

    def act(self, action: str) -> None:
        if action == "kill":
            self.kill_one()
        elif action == "redis-stop":
            if self._freezes():
                self.console.print("  Redis frozen")
                self.stack.freeze_redis(True)
            else:
                self.console.print("  Redis stopped")
                self.stack.stop_redis()
            self.outages += 1
        elif action == "redis-start":
            if self.stack.redis_frozen:
                self.stack.freeze_redis(False)
            else:
                self.stack.restart_redis()
            self.console.print("  Redis back")
        elif action == "join":
            self.console.print("  a worker joins the group (rebalance)")
            self.joined += 1
            self.start_worker()

    def _freezes(self) -> bool:
        """Whether the next outage freezes Redis (``both``: every second one)."""
        kind = self.plan.redis_outage
        return kind == "freeze" or (kind == "both" and self.outages % 2 == 1)

    def audit(self) -> AuditReport:
        return audit(
            Cluster(self.stack.kafka_bootstrap),
            self.topic("events"),
            self.topic("predictions"),
            self.topic("dead-letters"),
        )

    def stop_all(self) -> None:
        for child in self.workers.values():
            try:
                child.stop(timeout_s=60)
            except RuntimeError as exc:
                self.console.print(f"  a worker did not stop cleanly: {exc}")
            finally:
                child.kill()


def run_chaos(plan: ChaosPlan, console: Console) -> ChaosResult:
    """One chaos run on the embedded stack (or the broker and Redis STREAMSERVE_* name; Redis
    outages need the embedded Redis)."""
    started = time.monotonic()
    with running_stack() as stack:
        chaos = Chaos(plan, stack, console)
        with console.status("training the model and loading features"):
            chaos.prepare()
        for _ in range(plan.workers):
            chaos.start_worker()
        for child in chaos.workers.values():
            child.wait_ready()
        console.print(
            f"{plan.workers} workers up; offering {plan.events:,} events at {plan.rate:,}/s"
        )
        profile = RateProfile("fixed", plan.rate, plan.seconds)
        argv = procs.producer_argv(
            stack.kafka_bootstrap,
            chaos.topic("events"),
            profile,
            plan.world.entities,
            plan.world.malformed_every,
            plan.seed,
        )
        producer = procs.spawn("producer", argv, procs.child_env({}), ready_text="")
        load_started = time.monotonic()
        try:
            for at, action in plan.schedule():
                while time.monotonic() - load_started < at:
                    chaos.restart_exited()
                    time.sleep(0.05)
                chaos.act(action)
            offered = producer.result()
            console.print(f"offered {offered['sent']:,} events; waiting for every outcome")
            _wait_for_outcomes(chaos, plan)
        finally:
            chaos.stop_all()
            producer.kill()
        report = chaos.audit()
        if report.lost:
            for child in chaos.spawned:  # what each worker said last, to see where it stopped
                console.print(f"--- {child.name} (exit {child.proc.returncode}):\n{child.tail()}")
    malformed = plan.events // plan.world.malformed_every if plan.world.malformed_every else 0
    return ChaosResult(
        plan,
        report,
        malformed,
        chaos.kills,
        chaos.restarts,
        chaos.outages,
        chaos.joined,
        round(time.monotonic() - started, 1),
    )


def _wait_for_outcomes(chaos: Chaos, plan: ChaosPlan) -> None:
    """Wait until every event has an outcome (a killed worker's partitions resume after the
    session timeout), or two minutes pass."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        chaos.restart_exited()
        report = chaos.audit()
        if report.lost == 0 and report.events >= plan.events:
            return
        time.sleep(2)


def problems(result: ChaosResult) -> list[str]:
    """What the run got wrong, in words; empty when it passed."""
    plan, report = result.plan, result.report
    found = []
    if report.events != plan.events:
        found.append(f"{report.events:,} events on the input topic, {plan.events:,} offered")
    if report.lost:
        found.append(f"{report.lost:,} events lost, e.g. {report.lost_examples}")
    if report.dead_lettered != result.malformed_sent:
        found.append(
            f"{report.dead_lettered:,} events dead-lettered, "
            f"{result.malformed_sent:,} malformed sent"
        )
    if report.dead_letters_without_reason:
        found.append(f"{report.dead_letters_without_reason:,} dead letters without a reason")
    if report.extra_outputs > plan.duplicate_bound(result.kills):
        found.append(
            f"{_per_kill(report.extra_outputs, result.kills)} duplicate outputs per kill, more "
            f"than the bound {plan.duplicate_bound_per_kill:,}"
        )
    return found


def render(result: ChaosResult) -> str:
    report = result.report
    classes = ", ".join(f"{k} {v:,}" for k, v in report.dead_letters_by_class.items())
    lines = [
        f"chaos run, {result.plan.guarantee}: {result.plan.events:,} events at "
        f"{result.plan.rate:,}/s, {result.seconds} s in all",
        f"  moves: {result.kills} SIGKILLs (each worker replaced), {result.restarts} restarts "
        f"after an exit, {result.redis_outages} Redis outages of {result.plan.redis_down_s} s, "
        f"{result.joined} worker joined mid-run",
        f"  predictions {report.predictions:,}, dead letters {report.dead_letters:,} "
        f"({classes}) for {result.malformed_sent:,} malformed sent",
        f"  lost {report.lost:,}",
        f"  duplicated {report.duplicated:,} events ({report.extra_outputs:,} extra outputs, "
        f"{_per_kill(report.extra_outputs, result.kills)} per kill, "
        f"{result.duplicate_percent:.2f}% of the valid events; bound "
        f"{result.plan.duplicate_bound_per_kill:,} per kill)",
    ]
    lines += [f"  PROBLEM: {p}" for p in result.problems]
    lines.append("OK" if result.ok else "FAILED")
    return "\n".join(lines)


def _per_kill(extra_outputs: int, kills: int) -> str:
    return f"{extra_outputs / kills:,.0f}" if kills else "-"
