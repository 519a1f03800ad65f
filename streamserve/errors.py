"""The exception hierarchy: one root, a few branches a caller can act on."""

from __future__ import annotations


class StreamserveError(Exception):
    """Root of every error streamserve raises on purpose."""


class ConfigError(StreamserveError):
    """A setting is invalid; the message names the environment variable."""


class ModelBundleError(StreamserveError):
    """The model bundle is missing, unreadable, or its manifest disagrees with the booster."""


class FeatureStoreError(StreamserveError):
    """The feature store could not answer a lookup."""


class StoreUnavailable(FeatureStoreError):
    """Lookups keep failing (retries used up), or the circuit is open and the next probe is not
    due yet; the outage policy decides what happens to the batch."""


class RegistryUnavailable(StreamserveError):
    """The Schema Registry cannot be reached: start-up stops (exit 7); mid-run, a batch with a
    new schema id waits for it, paused, like a batch waiting for the feature store."""


class DeliveryError(StreamserveError):
    """The broker did not acknowledge an output record; offsets behind it stay uncommitted."""


class MissingExtraError(ConfigError):
    """An optional part of streamserve is not installed."""

    def __init__(self, part: str, extra: str) -> None:
        super().__init__(f"{part} is not installed: pip install 'streamserve[{extra}]'")
