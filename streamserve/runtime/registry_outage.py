"""The Schema Registry away while a batch needs a new writer schema: the batch stays in hand
(nothing is dead-lettered or committed), the worker pauses and asks again every
``REGISTRY_RETRY_S`` until it answers."""

from __future__ import annotations

import logging

from streamserve.errors import RegistryUnavailable

log = logging.getLogger("streamserve.worker")

REGISTRY_RETRY_S = 1.0  # while the Schema Registry is away, ask it again this often


class RegistryOutage:
    """Whether the registry is away, and when to ask it again (monotonic seconds)."""

    def __init__(self) -> None:
        self.retry_at: float | None = None

    @property
    def away(self) -> bool:
        return self.retry_at is not None

    def wait_s(self, now: float) -> float:
        """How long until the registry is asked again (<= 0: now, or it is not away)."""
        return (self.retry_at or 0.0) - now

    def failed(self, exc: RegistryUnavailable, now: float) -> None:
        if self.retry_at is None:
            log.warning("%s: paused, retrying every %.0f s", exc, REGISTRY_RETRY_S)
        self.retry_at = now + REGISTRY_RETRY_S

    def answered(self) -> None:
        if self.retry_at is not None:
            log.warning("Schema Registry answers again: resuming")
            self.retry_at = None
