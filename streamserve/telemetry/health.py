"""What /healthz and /readyz report (served by io/http.py)."""

from __future__ import annotations

import time
from collections.abc import Callable


class Health:
    """What /healthz and /readyz report: the loop's last turn, the group, the model, the store."""

    def __init__(self, liveness_timeout_s: float, clock: Callable[[], float] = time.monotonic):
        self.liveness_timeout_s = liveness_timeout_s
        self._clock = clock
        self._last_turn = clock()
        self.joined_group = False  # an assignment was heard (an empty one included)
        self.assigned = 0
        self.model_loaded = False
        self.store_available: Callable[[], bool] = lambda: False

    def loop_turned(self) -> None:
        self._last_turn = self._clock()

    def live(self) -> dict[str, object]:
        """The loop turned within the liveness timeout (a stuck loop stops turning)."""
        since = self._clock() - self._last_turn
        return {"ok": since <= self.liveness_timeout_s, "last_loop_turn_s_ago": round(since, 3)}

    def ready(self) -> dict[str, object]:
        """Can work: joined its consumer group with its model loaded.

        Partitions and the feature store are reported, not required: a replica without
        partitions is a standby that takes over the moment one is freed (requiring them
        stalls a rolling update with as many replicas as partitions), and a Redis outage that
        took every replica out of its Service would only hide their metrics.
        """
        checks = {"joined_group": self.joined_group, "model_loaded": self.model_loaded}
        return {
            "ok": all(checks.values()),
            **checks,
            "assigned_partitions": self.assigned,
            "feature_store_reachable": self.store_available(),
        }
