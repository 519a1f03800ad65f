"""The models a worker serves, and their hot reload.

``ModelLoader.serving`` holds the served model and the optional challenger as one object; a
runtime reads it once per batch, so every stage of a batch uses the same models.
``ModelWatcher`` checks the bundle sources every STREAMSERVE_MODEL_RELOAD_S on a thread of its
own, loads and checks a changed bundle there, and swaps it in: the loop never waits for a load.
A bundle that fails to load or to score is rejected (logged, counted) and the old model keeps
serving; the same files are not tried again until they change.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import redis

from streamserve.config import Settings
from streamserve.core.batch import BatchScorer, FeatureStore
from streamserve.core.decoding.formats import WriterSchemas
from streamserve.core.model import ModelBundle, load_bundle
from streamserve.core.outputs import EncodePrediction
from streamserve.errors import ConfigError, FeatureStoreError, MissingExtraError, ModelBundleError
from streamserve.io import store as store_io
from streamserve.telemetry.prometheus import Telemetry

log = logging.getLogger("streamserve.models")

Fingerprint = tuple[str, tuple[tuple[str, int, int], ...]]


@dataclass(frozen=True)
class LoadedModel:
    """A bundle ready to serve: its scorer and the guarded store reader of its features."""

    bundle: ModelBundle
    scorer: BatchScorer
    store: store_io.ResilientStore
    fingerprint: Fingerprint

    @property
    def label(self) -> str:
        return f"{self.bundle.name} {self.bundle.version}"


@dataclass(frozen=True)
class ServingModels:
    """What scores the next batch: the served model and the challenger, if any."""

    model: LoadedModel
    shadow: LoadedModel | None = None


class ModelLoader:
    """Loads bundles into LoadedModels over one Redis client and one circuit breaker, and holds
    what serves now (``serving``)."""

    def __init__(
        self,
        settings: Settings,
        client: store_io.RedisClient,
        schemas: WriterSchemas | None = None,
        encode_prediction: EncodePrediction | None = None,
    ) -> None:
        """``schemas``: the Schema Registry, for the registry input formats;
        ``encode_prediction``: how predictions are written (default JSON)."""
        self.settings = settings
        self.client = client
        self.schemas = schemas
        self.encode_prediction = encode_prediction
        self._guard: store_io.ResilientStore | None = None  # the first reader's; shared
        self.serving: ServingModels  # set by ``start``

    def start(self) -> ServingModels:
        """Load the served model and the challenger; a bad one stops start-up."""
        shadow_dir = self.settings.shadow_model_dir
        shadow = self.load(shadow_dir) if shadow_dir is not None else None
        try:
            served_dir = self.served_dir()
        except redis.RedisError as exc:
            raise FeatureStoreError(f"cannot read STREAMSERVE_MODEL_POINTER_KEY: {exc}") from exc
        self.serving = ServingModels(self.load(served_dir), shadow)
        return self.serving

    @property
    def store_available(self) -> bool:
        """False while the feature store's circuit is open (one circuit serves every model)."""
        return self.serving.model.store.available

    def served_dir(self) -> Path:
        """The pointer key's value when it is set, else STREAMSERVE_MODEL_DIR."""
        settings = self.settings
        if settings.model_pointer_key:
            value = self.client.get(settings.model_pointer_key)
            if value:
                return Path(value.decode() if isinstance(value, bytes) else str(value))
        if settings.model_dir is None:
            raise ConfigError(
                "STREAMSERVE_MODEL_DIR is not set and the key STREAMSERVE_MODEL_POINTER_KEY "
                "names holds no bundle directory; point either at a model bundle"
            )
        return settings.model_dir

    def load(self, bundle_dir: Path) -> LoadedModel:
        """Load, check against its manifest, and try one prediction; ModelBundleError if bad."""
        fingerprint = bundle_fingerprint(bundle_dir)
        try:
            bundle = load_bundle(bundle_dir, self.settings.predict_threads, self.settings.predictor)
        except ImportError:  # STREAMSERVE_PREDICTOR=onedal without its extra
            raise MissingExtraError("STREAMSERVE_PREDICTOR=onedal", "onedal") from None
        log.info(
            "model %s %s scores with %s: %s",
            bundle.name,
            bundle.version,
            bundle.predictor.name,
            bundle.predictor_reason,
            extra={"predictor": bundle.predictor.name},
        )
        width = len(bundle.manifest.features)
        try:
            scores = bundle.predict(np.full((1, width), np.nan, dtype=np.float32))
        except Exception as exc:
            raise ModelBundleError(f"model in {bundle_dir} fails to predict: {exc}") from None
        if not np.isfinite(scores).all():
            raise ModelBundleError(f"model in {bundle_dir} predicts non-finite scores")
        scorer = BatchScorer(
            bundle, self.settings.input_format, self.schemas, self.encode_prediction
        )
        return LoadedModel(bundle, scorer, self._reader(bundle), fingerprint)

    def _reader(self, bundle: ModelBundle) -> store_io.ResilientStore:
        manifest = bundle.manifest
        reader: FeatureStore = store_io.RedisFeatureStore(self.client, manifest)
        store = manifest.store
        max_ages = [store.max_age_s or math.inf]
        if store.feast is not None:
            max_ages += store.feast.view_max_age_s.values()
        ttl_s = min(self.settings.feature_cache_ttl_s, *max_ages)
        if ttl_s > 0:
            timed = store.layout in ("hash", "feast")  # rows carry write times: they age
            reader = store_io.CachedFeatureStore(
                reader, ttl_s, self.settings.feature_cache_size, timed
            )
        if self._guard is not None:
            return self._guard.using(reader)
        settings = self.settings
        self._guard = store_io.ResilientStore(
            reader,
            retries=settings.store_retries,
            backoff_s=settings.store_retry_backoff_ms / 1000,
            reset_s=settings.store_breaker_reset_s,
        )
        return self._guard


def serving_telemetry(models: ModelLoader) -> Telemetry:
    """A worker's telemetry, showing the models it starts with."""
    serving = models.serving
    model, shadow = serving.model, serving.shadow
    telemetry = Telemetry(
        model.bundle.name, model.bundle.version, models.settings.liveness_timeout_s
    )
    if shadow is not None:
        telemetry.shadow_info.labels(shadow.bundle.name, shadow.bundle.version).set(1)
    telemetry.health.model_loaded = True
    telemetry.health.store_available = lambda: models.store_available
    return telemetry


class ModelWatcher:
    """Polls the served and challenger bundle sources and swaps in what changed."""

    def __init__(self, models: ModelLoader, telemetry: Telemetry | None = None) -> None:
        self._models = models
        self._telemetry = telemetry
        self._rejected: set[Fingerprint] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        interval = self._models.settings.model_reload_s
        if interval <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._run, args=(interval,), name="model-watcher", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                self.check()
            except Exception:  # the watcher must outlive any surprise; the old model serves
                log.exception("model check failed; still serving the current models")

    def check(self) -> None:
        """Look once at both sources; load, check and swap in a changed bundle."""
        models = self._models
        try:
            served_dir = models.served_dir()
        except redis.RedisError as exc:
            log.warning("cannot read the model pointer key: %s", exc)
            return
        serving = models.serving
        model = self._reloaded(serving.model, served_dir, shadow=False)
        shadow = serving.shadow
        shadow_dir = models.settings.shadow_model_dir
        if shadow is not None and shadow_dir is not None:
            shadow = self._reloaded(shadow, shadow_dir, shadow=True)
        if model is not serving.model or shadow is not serving.shadow:
            models.serving = ServingModels(model, shadow)

    def _reloaded(self, current: LoadedModel, bundle_dir: Path, shadow: bool) -> LoadedModel:
        """``current``, or the model now in ``bundle_dir`` if it changed and is good."""
        fingerprint = bundle_fingerprint(bundle_dir)
        if fingerprint == current.fingerprint or fingerprint in self._rejected:
            return current
        try:
            new = self._models.load(bundle_dir)
        except ModelBundleError as exc:
            self._rejected.add(fingerprint)
            log.error(
                "model bundle %s rejected: %s; still serving %s",
                bundle_dir,
                exc,
                current.label,
                extra={"bundle": str(bundle_dir)},
            )
            if self._telemetry is not None:
                self._telemetry.model_rejected()
            return current
        role = "challenger" if shadow else "model"
        extra = {"bundle": str(bundle_dir), "model_version": new.bundle.version}
        log.info(
            "%s now %s from %s (was %s)", role, new.label, bundle_dir, current.label, extra=extra
        )
        if self._telemetry is not None:
            self._telemetry.model_swapped(current.bundle, new.bundle, shadow)
        return new


def bundle_fingerprint(bundle_dir: Path) -> Fingerprint:
    """Where ``bundle_dir`` resolves to, and each file's name, size and modification time: a
    new bundle behind a switched symlink or files rewritten in place both change it."""
    resolved = os.path.realpath(bundle_dir)
    try:
        with os.scandir(resolved) as entries:
            files = [(e.name, e.stat()) for e in entries if e.is_file()]
    except OSError:
        return resolved, ()
    return resolved, tuple(sorted((name, st.st_size, st.st_mtime_ns) for name, st in files))
