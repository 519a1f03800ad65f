"""Where each prediction's time went, stage by stage, from its own timestamps.

- ``to_worker``: the input record's timestamp -> the loop took it from the consumer (the
  producer's linger, the broker, the fetch, the consumer's queue);
- ``window``: taken -> its batch opened (waiting for the scoring stage or for more records);
- ``lookup`` and ``predict``: its batch's feature lookup and model call;
- ``handling``: the rest of the batch's time in the worker (decode, hand-offs between threads,
  encode, handing the outputs to the producer);
- ``ack``: produced -> the broker acknowledged its batch's outputs (the producer's linger and the
  broker's round trip; a reader sees the output about then).

``StageHistograms`` keeps each stage's distribution over a whole run in fixed memory (log-spaced
buckets 2% wide), so a run of any length reports p50/p99 to within 2%.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

STAGES = ("to_worker", "window", "lookup", "predict", "handling", "ack")
SMALLEST_MS = 0.001  # the first bucket's lower edge; anything below counts there
GROWTH = 1.02  # each bucket is 2% wider than the one before
BUCKETS = math.ceil(math.log(1e9) / math.log(GROWTH))  # up to ~11 days in ms: every real value


@dataclass(frozen=True)
class StageTimes:
    """One batch's stage times in ms: arrays hold one value per prediction; a float is the same
    for each of the batch's predictions (``ack`` is known later, when the broker answers)."""

    to_worker_ms: np.ndarray
    window_ms: np.ndarray
    lookup_ms: float
    predict_ms: float
    handling_ms: float

    def by_stage(self, ack_ms: float | None) -> Iterator[tuple[str, np.ndarray | float]]:
        """Each stage (in ``STAGES`` order) with its per-prediction array or batch value;
        ``ack`` only when it was timed."""
        yield "to_worker", self.to_worker_ms
        yield "window", self.window_ms
        yield "lookup", self.lookup_ms
        yield "predict", self.predict_ms
        yield "handling", self.handling_ms
        if ack_ms is not None:
            yield "ack", ack_ms


class StageHistograms:
    """Per-stage histograms of per-prediction times."""

    def __init__(self) -> None:
        self._counts = np.zeros((len(STAGES), BUCKETS), dtype=np.int64)

    def add(self, times: StageTimes, ack_ms: float | None, predictions: int) -> None:
        """Count one completed batch of ``predictions`` predictions."""
        if not predictions:
            return
        for stage, value in times.by_stage(ack_ms):
            row = STAGES.index(stage)
            if isinstance(value, np.ndarray):
                self._add_each(row, value)
            else:
                self._add_same(row, value, predictions)

    def quantiles(self) -> dict[str, dict[str, float]]:
        """p50 and p99 of each stage that saw a value, in ms (each a bucket's geometric middle)."""
        found = {}
        for row, stage in enumerate(STAGES):
            counts = self._counts[row]
            total = int(counts.sum())
            if total:
                cumulative = np.cumsum(counts)
                found[stage] = {
                    name: round(_middle_ms(int(np.searchsorted(cumulative, q * total))), 3)
                    for name, q in (("p50", 0.5), ("p99", 0.99))
                }
        return found

    def _add_each(self, row: int, values_ms: np.ndarray) -> None:
        values_ms = values_ms[np.isfinite(values_ms)]
        if len(values_ms):
            counts = np.bincount(_buckets(values_ms), minlength=BUCKETS)
            self._counts[row] += counts

    def _add_same(self, row: int, value_ms: float, count: int) -> None:
        if math.isfinite(value_ms):
            self._counts[row, int(_buckets(np.array([value_ms]))[0])] += count


def _buckets(values_ms: np.ndarray) -> np.ndarray:
    scaled = np.maximum(values_ms, SMALLEST_MS) / SMALLEST_MS
    return np.minimum(np.log(scaled) / math.log(GROWTH), BUCKETS - 1).astype(np.int64)


def _middle_ms(bucket: int) -> float:
    return float(SMALLEST_MS * GROWTH ** (bucket + 0.5))
