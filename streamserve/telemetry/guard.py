"""Counting, metrics and logs never fail a batch: a bug in them is logged and counted
(``streamserve_telemetry_errors_total{what}``), and the batch goes on."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

log = logging.getLogger("streamserve.telemetry")

RELOG_AFTER_S = 60.0  # a failure that repeats is logged again (with its count) this often


class TelemetryGuard:
    """Runs telemetry code shielded: an exception inside ``shielded(what)`` is swallowed, logged
    (with its traceback the first time, then at most once a minute per ``what``) and counted."""

    def __init__(
        self,
        on_failure: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures: Counter[str] = Counter()
        self._on_failure = on_failure
        self._clock = clock
        self._logged_at: dict[str, float] = {}

    @contextmanager
    def shielded(self, what: str) -> Iterator[None]:
        try:
            yield
        except Exception:
            self._failed(what)

    def _failed(self, what: str) -> None:
        self.failures[what] += 1
        now = self._clock()
        last = self._logged_at.get(what)
        if last is None or now - last >= RELOG_AFTER_S:
            self._logged_at[what] = now
            log.exception(
                "telemetry failed (%s, %d times so far); the batch goes on",
                what,
                self.failures[what],
                extra={"telemetry": what},
            )
        if self._on_failure is not None:
            with suppress(Exception):  # the counter itself must not fail the batch either
                self._on_failure(what)
