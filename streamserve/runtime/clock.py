"""The wall clock the worker stamps records with."""

from __future__ import annotations

import time


def wall_ms() -> int:
    """Wall-clock milliseconds, as stamped on predictions and metrics records."""
    return time.time_ns() // 1_000_000
