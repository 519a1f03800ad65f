"""What a run did, with the wall time and process CPU between its first record and last batch."""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass, field
from typing import Any

from streamserve.core.window import TRIGGERS
from streamserve.telemetry.stages import StageHistograms


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MB.

    Linux: VmHWM of /proc/self/status. Not ru_maxrss: a child started by fork+exec inherits its
    parent's maximum there (a worker spawned by a 240 MB benchmark process reported 240 MB).
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


@dataclass
class RunSummary:
    """Counts and timings of one run; the CLI prints ``as_dict()`` when the run ends.

    ``seconds`` and ``cpu_seconds`` span first record -> last batch acknowledged, so start-up and
    the idle tail are left out. CPU is the whole process (every thread, librdkafka's included).
    """

    events: int = 0
    predictions: int = 0
    dead_letters: int = 0
    batches: int = 0
    triggers: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TRIGGERS, 0))
    first_record_at: float | None = None  # monotonic seconds
    first_record_cpu: float = 0.0  # process CPU seconds
    last_batch_done_at: float | None = None
    last_batch_done_cpu: float = 0.0
    stages: StageHistograms = field(default_factory=StageHistograms)  # per prediction

    def record_arrived(self) -> None:
        if self.first_record_at is None:
            self.first_record_at = time.monotonic()
            self.first_record_cpu = time.process_time()

    def batch_done(self, events: int, predictions: int, dead_letters: int, trigger: str) -> None:
        self.events += events
        self.predictions += predictions
        self.dead_letters += dead_letters
        self.batches += 1
        self.triggers[trigger] = self.triggers.get(trigger, 0) + 1
        self.last_batch_done_at = time.monotonic()
        self.last_batch_done_cpu = time.process_time()

    @property
    def seconds(self) -> float:
        if self.first_record_at is None or self.last_batch_done_at is None:
            return 0.0
        return self.last_batch_done_at - self.first_record_at

    @property
    def cpu_seconds(self) -> float:
        if self.last_batch_done_at is None:
            return 0.0
        return self.last_batch_done_cpu - self.first_record_cpu

    def as_dict(self) -> dict[str, Any]:
        seconds, events = self.seconds, self.events
        return {
            "events": events,
            "predictions": self.predictions,
            "dead_letters": self.dead_letters,
            "batches": self.batches,
            "batches_by_trigger": self.triggers,
            "seconds": round(seconds, 3),
            "events_per_s": round(events / seconds, 1) if seconds > 0 else 0.0,
            "cpu_seconds": round(self.cpu_seconds, 3),
            "cpu_us_per_event": round(self.cpu_seconds / events * 1e6, 2) if events else 0.0,
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "stages_ms": self.stages.quantiles(),
        }
