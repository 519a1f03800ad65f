"""Adaptive batching (STREAMSERVE_LATENCY_TARGET_MS): each batch's size and wait come from the
measured cost of recent batches and the consumer lag, to hold a latency target.

- Size: the largest batch whose service time (fixed cost plus per-row cost, fitted from recent
  batches) fits half the target; the other half is for the wait in the queue and for delivery.
  Large batches cost less CPU per event, so a worker that is behind drains faster with them.
- Wait: none when the worker is caught up (lag 0): waiting would only add latency, the batch is
  as big as what arrived while the last one was served. While behind, the configured wait, at
  most a quarter of the target, so batches fill from the backlog.

Pure: the caller passes the measurements in.
"""

from __future__ import annotations

from dataclasses import dataclass

DECAY = 0.9  # weight of the past per observed batch: about the last 10 batches count


@dataclass(frozen=True)
class Limits:
    max_size: int
    max_wait_s: float


class CostModel:
    """Service time of a batch as ``fixed_s + per_row_s * rows``, an exponentially weighted
    least-squares fit over recent batches."""

    def __init__(self) -> None:
        self._w = self._n = self._t = self._nn = self._nt = 0.0

    def observe(self, rows: int, seconds: float) -> None:
        d = DECAY
        self._w = d * self._w + 1
        self._n = d * self._n + rows
        self._t = d * self._t + seconds
        self._nn = d * self._nn + rows * rows
        self._nt = d * self._nt + rows * seconds

    @property
    def known(self) -> bool:
        return self._n > 0

    def fit(self) -> tuple[float, float]:
        """(fixed seconds per batch, seconds per row); both at least 0."""
        mean_n, mean_t = self._n / self._w, self._t / self._w
        variance = self._nn / self._w - mean_n**2
        if variance <= 1e-9 * max(mean_n**2, 1):  # batches all of one size: cost per row only
            return 0.0, mean_t / mean_n
        per_row = (self._nt / self._w - mean_n * mean_t) / variance
        if per_row <= 0:
            return max(mean_t, 0.0), 0.0
        return max(mean_t - per_row * mean_n, 0.0), per_row


class AdaptiveBatching:
    """Limits for the next batch, from a latency target, the cost model and the lag."""

    def __init__(self, target_s: float, max_size: int, max_wait_s: float) -> None:
        if target_s <= 0:
            raise ValueError("target_s must be positive")
        self.target_s = target_s
        self.max_size = max_size
        self.max_wait_s = min(max_wait_s, target_s / 4)
        self.cost = CostModel()

    def observe(self, rows: int, seconds: float) -> None:
        """A batch of ``rows`` took ``seconds`` from dispatch to its outputs being produced."""
        if rows > 0 and seconds >= 0:
            self.cost.observe(rows, seconds)

    def size_limit(self) -> int:
        """The largest batch whose expected service time fits half the target."""
        if not self.cost.known:
            return self.max_size
        fixed_s, per_row_s = self.cost.fit()
        budget_s = self.target_s / 2 - fixed_s
        if per_row_s <= 0:
            return self.max_size if budget_s > 0 else 1
        return max(1, min(self.max_size, int(budget_s / per_row_s)))

    def limits(self, lag: int) -> Limits:
        """What the next batch may be: its size limit, and its wait (none when caught up)."""
        return Limits(self.size_limit(), self.max_wait_s if lag > 0 else 0.0)
