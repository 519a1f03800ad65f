"""When a batch closes: at ``max_size`` records, or ``max_wait`` after its FIRST record.

These are Triton's dynamic-batcher semantics. Pure: the caller passes the time in, so the policy
is tested without a clock or a broker.
"""

from __future__ import annotations

from typing import Literal

Trigger = Literal["size", "time", "stop"]  # stop: closed early by shutdown or a revoke


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

    def trigger(self, now: float) -> Literal["size", "time"] | None:
        """Why the batch must close now, or None if it stays open."""
        if self.size >= self.max_size:
            return "size"
        if self.opened_at is not None and now - self.opened_at >= self.max_wait_s:
            return "time"
        return None

    def reset(self) -> None:
        self.size = 0
        self.opened_at = None
