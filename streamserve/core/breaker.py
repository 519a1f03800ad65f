"""Retries with backoff and a circuit breaker, for calls to the feature store.

Pure: the caller passes the clock readings; nothing here sleeps.
"""

from __future__ import annotations


def backoff_delays(retries: int, first_s: float, cap_s: float) -> list[float]:
    """Pauses before each retry: ``first_s``, doubling, at most ``cap_s``."""
    return [min(first_s * 2**attempt, cap_s) for attempt in range(retries)]


class CircuitBreaker:
    """Closed: calls go through. A call that failed (after its retries) opens the circuit: calls
    fail fast, without touching the store, until ``reset_s`` has passed; then one probe call is
    let through (half-open). Its success closes the circuit, its failure opens it again."""

    def __init__(self, reset_s: float) -> None:
        if reset_s <= 0:
            raise ValueError("reset_s must be positive")
        self.reset_s = reset_s
        self.opened_at: float | None = None  # None: closed
        self.failures = 0  # calls failed in a row
        self.failing_since: float | None = None  # when the first of them failed

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def allows(self, now: float) -> bool:
        """Whether a call may go to the store now (closed, or time for a probe)."""
        return self.opened_at is None or now - self.opened_at >= self.reset_s

    def probe_in(self, now: float) -> float:
        """Seconds until the next call is allowed (0 when closed or due)."""
        if self.opened_at is None:
            return 0.0
        return max(self.opened_at + self.reset_s - now, 0.0)

    def succeeded(self) -> None:
        self.opened_at = None
        self.failures = 0
        self.failing_since = None

    def failed(self, now: float) -> None:
        if not self.failures:
            self.failing_since = now
        self.opened_at = now
        self.failures += 1
