"""Model bundle: an XGBoost booster plus the manifest that says where each feature comes from."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import msgspec
import numpy as np
import xgboost as xgb

from streamserve.core.predictors import (
    Predictor,
    PredictorChoice,
    XGBoostPredictor,
    choose,
)
from streamserve.errors import ModelBundleError

MANIFEST_FILE = "manifest.json"
ENTITY_PLACEHOLDER = "{entity_id}"

Name = Annotated[str, msgspec.Meta(min_length=1)]


class FeatureDef(msgspec.Struct, forbid_unknown_fields=True):
    """One model input: from the feature store, or from the event at a dotted field path."""

    name: Name
    source: Literal["store", "event"]
    path: str | None = None  # event: dotted field path (default: the name); feast: view:feature

    @property
    def event_path(self) -> str:
        return self.path or self.name


class FeastDef(msgspec.Struct, forbid_unknown_fields=True):
    """The `feast` layout: what Feast's Redis online store keys an entity's hash by. Each store
    feature's ``path`` names its ``<feature view>:<feature>``."""

    project: Name
    join_key: Name  # the entity's join key; the event's entity id is its value
    join_key_type: Literal["string", "int32", "int64"] = "string"
    # per view: its max age (a feature view's TTL), instead of store.max_age_s for its features
    view_max_age_s: dict[str, Annotated[float, msgspec.Meta(gt=0)]] = msgspec.field(
        default_factory=dict
    )
    # per store feature path: its Feast value type (`streamserve model feast` writes them); a
    # type that is not a number is refused
    feature_types: dict[str, str] = msgspec.field(default_factory=dict)


FEAST_NUMBER_TYPES = ("DOUBLE", "FLOAT", "INT64", "INT32", "BOOL")  # what the layout reads


class StoreDef(msgspec.Struct, forbid_unknown_fields=True):
    """Where store features live in Redis and how they are laid out."""

    key_template: str = "feat:" + ENTITY_PLACEHOLDER
    layout: Literal["vector", "hash", "feast"] = "vector"
    feast: FeastDef | None = None
    # older values become missing; `hash` layout: by its `_ts` field (epoch seconds); both
    # layouts: caps the local cache's TTL (a `vector` writer sets Redis key expiry instead)
    max_age_s: Annotated[float, msgspec.Meta(gt=0)] | None = None


class EventDef(msgspec.Struct, forbid_unknown_fields=True):
    """Names of the id fields of an input event."""

    id_field: Name = "event_id"
    entity_field: Name = "entity_id"


DEFAULT_THRESHOLD = 0.5  # a decision threshold for comparing models when none is set


class Manifest(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """The bundle's manifest.json."""

    name: Name
    version: Name
    features: list[FeatureDef]
    model_file: Name = "model.ubj"
    store: StoreDef = msgspec.field(default_factory=StoreDef)
    event: EventDef = msgspec.field(default_factory=EventDef)
    # a score at or above it is a positive decision; set, predictions carry their decision
    decision_threshold: float | None = None

    @property
    def threshold(self) -> float:
        """The decision threshold, DEFAULT_THRESHOLD unless the manifest sets one."""
        return DEFAULT_THRESHOLD if self.decision_threshold is None else self.decision_threshold

    @property
    def inputs(self) -> tuple[object, ...]:
        """What decides the model input of an event: equal inputs give equal matrices."""
        return (self.features, self.store, self.event)

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def store_features(self) -> list[FeatureDef]:
        return [f for f in self.features if f.source == "store"]

    @property
    def event_features(self) -> list[FeatureDef]:
        return [f for f in self.features if f.source == "event"]


def check_manifest(manifest: Manifest) -> None:
    """Refuse a manifest that cannot describe a model input; the message says what to fix."""
    names = manifest.feature_names
    if not names:
        raise ModelBundleError("manifest lists no features")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ModelBundleError(f"manifest lists features more than once: {duplicates}")
    template = manifest.store.key_template
    if template.count(ENTITY_PLACEHOLDER) != 1 or template.count("{") != 1:
        raise ModelBundleError(
            f"store.key_template {template!r} must contain {ENTITY_PLACEHOLDER} exactly once "
            "and no other placeholder"
        )
    _check_feast(manifest)
    id_fields = {manifest.event.id_field, manifest.event.entity_field}
    paths = [f.event_path for f in manifest.event_features]
    clashes = sorted({p for p in paths if paths.count(p) > 1 or p.split(".")[0] in id_fields})
    if clashes:
        raise ModelBundleError(f"event feature paths clash with each other or an id: {clashes}")
    for path in paths:
        if any(not part for part in path.split(".")):
            raise ModelBundleError(f"event feature path {path!r} has an empty segment")
        nested = [p for p in paths if p.startswith(path + ".")]
        if nested:
            raise ModelBundleError(
                f"event feature path {path!r} is a number and also holds {nested[0]!r}"
            )


def feast_path(path: str | None) -> tuple[str, str]:
    """A store feature's ``path`` in the feast layout, ``"<feature view>:<feature>"``: (view,
    feature); ValueError when it is not one."""
    view, _, name = (path or "").partition(":")
    if not view or not name:
        raise ValueError(f"store feature path {path!r} is not <feature view>:<feature>")
    return view, name


def _check_feast(manifest: Manifest) -> None:
    store = manifest.store
    if (store.layout == "feast") != (store.feast is not None):
        raise ModelBundleError("store.layout `feast` and a store.feast section go together")
    if store.layout != "feast":
        return
    types = store.feast.feature_types if store.feast is not None else {}
    for feature in manifest.store_features:
        try:
            feast_path(feature.path)
        except ValueError:
            raise ModelBundleError(
                f"store feature {feature.name!r}: the feast layout needs its path as "
                f"<feature view>:<feature>, not {feature.path!r}"
            ) from None
        value_type = types.get(feature.path or "", "DOUBLE")
        if value_type not in FEAST_NUMBER_TYPES:
            raise ModelBundleError(
                f"store feature {feature.name!r} ({feature.path}) is a Feast {value_type}: "
                f"the feast layout reads numbers only ({', '.join(FEAST_NUMBER_TYPES)})"
            )


def read_manifest(bundle_dir: Path) -> Manifest:
    """Decode and check a bundle's manifest.json."""
    path = bundle_dir / MANIFEST_FILE
    try:
        manifest = msgspec.json.decode(path.read_bytes(), type=Manifest)
    except FileNotFoundError:
        raise ModelBundleError(f"no {MANIFEST_FILE} in model bundle {bundle_dir}") from None
    except msgspec.MsgspecError as exc:
        raise ModelBundleError(f"{path}: {exc}") from None
    check_manifest(manifest)
    return manifest


def manifest_text(manifest: Manifest) -> str:
    """manifest.json's text: indented JSON."""
    return json.dumps(json.loads(msgspec.json.encode(manifest)), indent=2) + "\n"


def write_manifest(bundle_dir: Path, manifest: Manifest) -> None:
    check_manifest(manifest)
    (bundle_dir / MANIFEST_FILE).write_text(manifest_text(manifest))


@dataclass(frozen=True)
class ModelBundle:
    """A loaded booster whose inputs the manifest describes, checked to agree."""

    manifest: Manifest
    booster: xgb.Booster
    predictor: Predictor = None  # type: ignore[assignment]  # default: XGBoost's own
    predictor_reason: str = "XGBoost's own"

    def __post_init__(self) -> None:
        if self.predictor is None:
            object.__setattr__(self, "predictor", XGBoostPredictor(self.booster))

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        """Scores of a float32 matrix (manifest feature order): shape (rows,) or (rows, outputs)."""
        if matrix.shape[0] == 0:
            return np.empty(0, dtype=np.float32)
        return self.predictor.predict(matrix)


def load_bundle(
    bundle_dir: Path, nthread: int = 1, predictor: PredictorChoice = "xgboost"
) -> ModelBundle:
    """Load a bundle and refuse it when manifest and booster disagree; score it with
    ``predictor`` when that gives XGBoost's scores (core/predictors.py), else with XGBoost."""
    bundle_dir = Path(bundle_dir)
    if not bundle_dir.is_dir():
        raise ModelBundleError(f"model bundle {bundle_dir} is not a directory")
    manifest = read_manifest(bundle_dir)
    model_path = bundle_dir / manifest.model_file
    if not model_path.is_file():
        raise ModelBundleError(f"model file {model_path} named by the manifest does not exist")
    booster = xgb.Booster()
    try:
        booster.load_model(str(model_path))
    except xgb.core.XGBoostError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else "unknown error"
        raise ModelBundleError(f"cannot load model {model_path}: {first_line}") from None
    booster.set_param({"nthread": nthread})
    check_agreement(manifest, booster)
    chosen = choose(booster, predictor, nthread)
    return ModelBundle(manifest, booster, chosen.predictor, chosen.reason)


def check_agreement(manifest: Manifest, booster: xgb.Booster) -> None:
    """The booster must take exactly the manifest's features, in the manifest's order."""
    expected = manifest.feature_names
    if booster.num_features() != len(expected):
        raise ModelBundleError(
            f"manifest lists {len(expected)} features but the booster takes "
            f"{booster.num_features()}"
        )
    actual = booster.feature_names
    if actual is not None and list(actual) != expected:
        diffs = [(i, m, b) for i, (m, b) in enumerate(zip(expected, actual, strict=True)) if m != b]
        first = ", ".join(f"#{i}: manifest {m!r} vs booster {b!r}" for i, m, b in diffs[:3])
        raise ModelBundleError(f"manifest and booster feature names differ ({first})")
