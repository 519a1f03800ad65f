"""What /healthz and /readyz report (served by io/http.py)."""

from __future__ import annotations

import time
from collections.abc import Callable


class Health:
    """What /healthz and /readyz report: the loop's last turn, its partitions, the store."""

    def __init__(self, liveness_timeout_s: float, clock: Callable[[], float] = time.monotonic):
        self.liveness_timeout_s = liveness_timeout_s
        self._clock = clock
        self._last_turn = clock()
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
        """Partitions assigned, model loaded and the feature store reachable."""
        checks = {
            "partitions_assigned": self.assigned > 0,
            "model_loaded": self.model_loaded,
            "feature_store_reachable": self.store_available(),
        }
        return {"ok": all(checks.values()), "assigned_partitions": self.assigned, **checks}
