"""The records in hand: a batch takes at most the window's size limit, and each keeps when it
was taken."""

from typing import Any

from streamserve.core.window import BatchWindow
from streamserve.runtime.in_hand import InHand


def test_records_taken_while_full_start_the_next_batch_with_their_own_times() -> None:
    hand = InHand(BatchWindow(max_size=5, max_wait_s=1.0))
    records: list[Any] = list(range(8))
    hand.add(records[:3], now=10.0, wall_ms=1_000.0)
    hand.add(records[3:7], now=10.1, wall_ms=1_100.0)  # past the limit: 7 in hand
    hand.add(records[7:], now=10.2, wall_ms=1_200.0)
    batch, runs = hand.next_batch()
    assert batch == [0, 1, 2, 3, 4] and runs == [(3, 1_000.0), (2, 1_100.0)]
    hand.opened(len(batch), now=10.3)
    assert len(hand) == 3 and hand.window.size == 3
    assert hand.next_batch() == ([5, 6, 7], [(2, 1_100.0), (1, 1_200.0)])
    assert hand.clear() == [5, 6, 7]
    assert len(hand) == 0 and hand.window.remaining_s(11.0) is None
