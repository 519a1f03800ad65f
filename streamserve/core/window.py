"""When a batch closes: at once when the scoring stage is free, else at ``max_size`` records or
``max_wait`` after its FIRST record, whichever comes first.

Waiting only pays while the scoring stage is busy: the records that arrive meanwhile join the
next batch at no cost in latency (the backlog is the batch). When the stage is free and the
consumer holds nothing more, a window would only add its own length to every event's latency
(at 1,000 events/s, a 5 ms window was most of what the worker added to the broker's path).
``max_wait`` bounds how long a batch waits for a busy stage before the worker pauses its
partitions; ``max_size`` bounds a batch. Pure: the caller passes the time and the stage's state
in, so the policy is tested without a clock or a broker.
"""

from __future__ import annotations

from typing import Literal

# size: full; time: waited max_wait (for a busy stage); idle: the scoring stage was free;
# stop: closed early by shutdown or a revoke
Trigger = Literal["size", "time", "idle", "stop"]
TRIGGERS: tuple[Trigger, ...] = ("size", "time", "idle", "stop")


class BatchWindow:
    """Tracks the open batch's size and deadline."""

    def __init__(self, max_size: int, max_wait_s: float) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        if max_wait_s < 0:
            raise ValueError("max_wait_s must not be negative")
        self.max_size = max_size
        self.max_wait_s = max_wait_s
        self.size = 0
        self.opened_at: float | None = None

    def add(self, count: int, now: float) -> None:
        """Count ``count`` records received at ``now``; the first one opens the window."""
        if count and self.opened_at is None:
            self.opened_at = now
        self.size += count

    def room(self) -> int:
        """How many more records the open batch takes."""
        return max(self.max_size - self.size, 0)

    def remaining_s(self, now: float) -> float | None:
        """Seconds until the time trigger fires; None while the batch is empty."""
        if self.opened_at is None:
            return None
        return max(self.opened_at + self.max_wait_s - now, 0.0)

    def trigger(self, now: float, stage_free: bool = False) -> Trigger | None:
        """Why the batch must close now, or None if it stays open; ``stage_free``: the scoring
        stage could take it at once."""
        if self.size >= self.max_size:
            return "size"
        if self.opened_at is not None and now - self.opened_at >= self.max_wait_s:
            return "time"
        if self.size and stage_free:
            return "idle"
        return None

    def reset(self) -> None:
        self.size = 0
        self.opened_at = None
