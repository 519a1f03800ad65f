"""The records the loop took from the consumer that no batch holds yet: when each run of them
was taken (each prediction's stage times start there), and the window of the batch they form.

A batch takes at most the window's size limit; records taken while the window was full (the
loop still calls the consumer then: only a call serves a commit's report) start the next one.
"""

from __future__ import annotations

from confluent_kafka import Message

from streamserve.core.window import BatchWindow

Runs = list[tuple[int, float]]  # (count, wall-clock ms) of each take from the consumer


class InHand:
    """Records taken, in order, and the window of the batch they will form."""

    def __init__(self, window: BatchWindow) -> None:
        self.window = window
        self.records: list[Message] = []
        self._runs: Runs = []

    def __len__(self) -> int:
        return len(self.records)

    def add(self, records: list[Message], now: float, wall_ms: float) -> None:
        """``records`` taken at once, at monotonic ``now`` (the window's clock) and ``wall_ms``."""
        self.records.extend(records)
        self._runs.append((len(records), wall_ms))
        self.window.add(len(records), now)

    def next_batch(self) -> tuple[list[Message], Runs]:
        """The next batch's records (at most the window's size limit) and their runs."""
        count = min(len(self.records), self.window.max_size)
        return self.records[:count], _split_runs(self._runs, count)[0]

    def opened(self, count: int, now: float) -> None:
        """The first ``count`` records went into a batch; the rest start the next window."""
        self.records = self.records[count:]
        self._runs = _split_runs(self._runs, count)[1]
        self.window.reset()
        if self.records:
            self.window.add(len(self.records), now)

    def clear(self) -> list[Message]:
        """Drop every record in hand; returns them."""
        records = self.records
        self.records, self._runs = [], []
        self.window.reset()
        return records


def _split_runs(runs: Runs, count: int) -> tuple[Runs, Runs]:
    """The runs of the first ``count`` records, and those of the rest."""
    head: Runs = []
    tail: Runs = []
    for size, wall_ms in runs:
        taken = min(size, count)
        count -= taken
        if taken:
            head.append((taken, wall_ms))
        if size > taken:
            tail.append((size - taken, wall_ms))
    return head, tail
