"""Offered-load profiles: how many events should have been sent by time t (pure, no clock)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

ProfileKind = Literal["fixed", "ramp", "burst"]


@dataclass(frozen=True)
class RateProfile:
    """``fixed``: ``rate`` events/s. ``ramp``: ``rate`` rising linearly to ``peak``.
    ``burst``: ``rate``, with ``peak`` events/s for ``burst_s`` in the middle of every
    ``burst_every_s`` window. All last ``seconds``."""

    kind: ProfileKind
    rate: float
    seconds: float
    peak: float = 0.0
    burst_every_s: float = 5.0
    burst_s: float = 1.0

    def __post_init__(self) -> None:
        if self.rate < 0 or self.seconds <= 0:
            raise ValueError("rate must be >= 0 and seconds > 0")
        if self.kind != "fixed" and self.peak <= 0:
            raise ValueError(f"a {self.kind} profile needs a peak rate > 0")
        if self.kind == "burst" and not 0 < self.burst_s <= self.burst_every_s:
            raise ValueError("burst_s must be > 0 and <= burst_every_s")

    def rate_at(self, t: float) -> float:
        """Offered events/s at ``t`` seconds."""
        if t < 0 or t >= self.seconds:
            return 0.0
        if self.kind == "fixed":
            return self.rate
        if self.kind == "ramp":
            return self.rate + (self.peak - self.rate) * t / self.seconds
        start, end = self._burst_window(math.floor(t / self.burst_every_s))
        return self.peak if start <= t < end else self.rate

    def due(self, t: float) -> int:
        """Events that should have been sent by ``t`` seconds (the integral of the rate)."""
        t = min(max(t, 0.0), self.seconds)
        if self.kind == "fixed":
            sent = self.rate * t
        elif self.kind == "ramp":
            sent = self.rate * t + (self.peak - self.rate) * t * t / (2 * self.seconds)
        else:
            sent = self.rate * t + (self.peak - self.rate) * self._burst_seconds_until(t)
        return int(sent + 1e-9)

    @property
    def total(self) -> int:
        return self.due(self.seconds)

    def _burst_window(self, index: int) -> tuple[float, float]:
        start = index * self.burst_every_s + (self.burst_every_s - self.burst_s) / 2
        return start, min(start + self.burst_s, self.seconds)

    def _burst_seconds_until(self, t: float) -> float:
        covered = 0.0
        for index in range(math.floor(t / self.burst_every_s) + 1):
            start, end = self._burst_window(index)
            covered += max(0.0, min(end, t) - start)
        return covered
