"""`streamserve model feast`: a bundle's store section from a Feast repository, read without
Feast. `feature_store.yaml` gives the project, the online store and the registry file; the
registry (a serialized ``feast.core.Registry``, which `feast apply` writes) gives the feature
views with their features' value types and TTLs, and the entities with their join keys.

Each store feature is found by name among the project's feature views (or by the
``<view>:<feature>`` its path names already); its view's TTL becomes its max age. Refused with a
message: a name in no view or in several, a type the layout cannot read as a number, views on
different entities, and compound join keys (a view on several entities).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import yaml

from streamserve.core.decoding.column_reader import varint
from streamserve.core.feast import VALUE_TYPES
from streamserve.core.model import (
    FeastDef,
    FeatureDef,
    Manifest,
    StoreDef,
    check_manifest,
    feast_path,
)
from streamserve.errors import ConfigError, ModelBundleError

# feast.types.ValueType numbers of what a registry may name (Feast's Value.proto)
VALUE_TYPE_NAMES = {
    0: "INVALID", 1: "BYTES", 2: "STRING", 3: "INT32", 4: "INT64", 5: "DOUBLE", 6: "FLOAT",
    7: "BOOL", 8: "UNIX_TIMESTAMP", 11: "BYTES_LIST", 12: "STRING_LIST", 13: "INT32_LIST",
    14: "INT64_LIST", 15: "DOUBLE_LIST", 16: "FLOAT_LIST", 17: "BOOL_LIST", 19: "NULL",
}  # fmt: skip
DUMMY_ENTITY = "__dummy"  # Feast's entity of views without one
# batch and stream feature views: (their Registry field; their spec's TTL field and its
# entity-columns field)
VIEW_KINDS = ((6, 6, 12), (14, 9, 5))


@dataclass(frozen=True)
class FeastView:
    name: str
    project: str
    entities: list[str]
    features: dict[str, str]  # feature -> value type name
    join_key_types: dict[str, str]  # the view's entity columns: join key -> value type name
    ttl_s: float  # 0: no TTL


@dataclass(frozen=True)
class FeastRepository:
    project: str
    views: dict[str, FeastView]  # of the project
    join_keys: dict[str, tuple[str, str]]  # entity -> (join key, value type name)


def read_repository(repo_dir: Path) -> FeastRepository:
    """The project's views and entities, from ``repo_dir``'s feature_store.yaml and registry."""
    config_path = repo_dir / "feature_store.yaml"
    try:
        config = yaml.safe_load(config_path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {config_path}: {exc}") from None
    if not isinstance(config, dict) or not config.get("project"):
        raise ConfigError(f"{config_path} names no project")
    online = config.get("online_store") or {}
    online_type = online.get("type") if isinstance(online, dict) else online
    if online_type != "redis":
        raise ConfigError(
            f"{config_path}: the online store is {online_type!r}; the feast layout reads Redis"
        )
    version = config.get("entity_key_serialization_version", 3)
    if version != 3:
        raise ConfigError(
            f"{config_path}: entity_key_serialization_version {version}; the feast layout "
            "reads version 3 (Feast's default)"
        )
    registry_path = _registry_path(config.get("registry"), config_path)
    registry = registry_path if registry_path.is_absolute() else repo_dir / registry_path
    try:
        data = registry.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the registry {registry} (run `feast apply`): {exc}"
        ) from None
    try:
        return _parse_registry(data, str(config["project"]))
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{registry} is not a Feast registry: {exc}") from None


def _registry_path(registry: Any, config_path: Path) -> Path:
    if isinstance(registry, dict):
        if registry.get("registry_type", "file") != "file":
            raise ConfigError(
                f"{config_path}: a {registry['registry_type']} registry; streamserve reads a "
                "file registry (copy it to a local file and point `registry` at it)"
            )
        registry = registry.get("path")
    if not isinstance(registry, str) or not registry:
        raise ConfigError(f"{config_path} names no registry")
    if "://" in registry:
        raise ConfigError(
            f"{config_path}: registry {registry}; streamserve reads a local registry file "
            "(copy it here and point `registry` at it)"
        )
    return Path(registry)


def _parse_registry(data: bytes, project: str) -> FeastRepository:
    registry = _fields(data)
    join_keys = {}
    for entity in registry[1]:
        spec = _fields(_one(_fields(entity), 1))
        if _text(spec, 9) == project:
            value_type = VALUE_TYPE_NAMES.get(_one(spec, 2, 0), "INVALID")
            join_keys[_text(spec, 1)] = (_text(spec, 4), value_type)
    views = {}
    for field, ttl_field, columns_field in VIEW_KINDS:
        for view in registry[field]:
            spec = _fields(_one(_fields(view), 1))
            ttl = _fields(_one(spec, ttl_field, b""))
            read = FeastView(
                name=_text(spec, 1),
                project=_text(spec, 2),
                entities=[e.decode() for e in spec[3]],
                features=_feature_types(spec[4]),
                join_key_types=_feature_types(spec[columns_field]),
                ttl_s=_one(ttl, 1, 0) + _one(ttl, 2, 0) / 1e9,
            )
            if read.project == project:
                views[read.name] = read
    return FeastRepository(project, views, join_keys)


def _feature_types(specs: list[Any]) -> dict[str, str]:
    features = [_fields(spec) for spec in specs]
    return {_text(f, 1): VALUE_TYPE_NAMES.get(_one(f, 2, 0), "INVALID") for f in features}


def feast_manifest(manifest: Manifest, repo: FeastRepository) -> Manifest:
    """``manifest`` with the feast layout of ``repo``'s project: each store feature's path as
    ``<view>:<feature>``, the store's feast section from the views' entity and TTLs."""
    features, types, used = [], {}, {}
    for feature in manifest.features:
        if feature.source == "store":
            view, wanted = _view_of(feature, repo), _wanted(feature)
            feature = FeatureDef(feature.name, "store", f"{view.name}:{wanted}")
            types[f"{view.name}:{wanted}"] = view.features[wanted]
            used[view.name] = view
        features.append(feature)
    if not used:
        raise ModelBundleError("the manifest lists no store features: nothing to read from Feast")
    join_key, join_key_type = _join_key(list(used.values()), repo)
    feast = FeastDef(
        project=repo.project,
        join_key=join_key,
        join_key_type=join_key_type,  # type: ignore[arg-type]  # checked by _join_key
        view_max_age_s={name: view.ttl_s for name, view in used.items() if view.ttl_s > 0},
        feature_types=types,
    )
    store = StoreDef(
        key_template=manifest.store.key_template,
        layout="feast",
        feast=feast,
        max_age_s=manifest.store.max_age_s,
    )
    result = msgspec.structs.replace(manifest, features=features, store=store)
    check_manifest(result)
    return result


def _wanted(feature: FeatureDef) -> str:
    """The Feast feature a store feature reads: its path's, else its own name."""
    if feature.path and ":" in feature.path:
        return feast_path(feature.path)[1]
    return feature.path or feature.name


def _view_of(feature: FeatureDef, repo: FeastRepository) -> FeastView:
    wanted = _wanted(feature)
    if feature.path and ":" in feature.path:
        view_name = feast_path(feature.path)[0]
        view = repo.views.get(view_name)
        if view is None or wanted not in view.features:
            raise ModelBundleError(
                f"store feature {feature.name!r}: project {repo.project} has no {feature.path}"
            )
        return view
    holders = [view for view in repo.views.values() if wanted in view.features]
    if not holders:
        raise ModelBundleError(
            f"store feature {feature.name!r}: no feature view of project {repo.project} has a "
            f"feature {wanted!r}"
        )
    if len(holders) > 1:
        names = ", ".join(sorted(v.name for v in holders))
        raise ModelBundleError(
            f"store feature {feature.name!r}: {wanted!r} is in several feature views ({names}); "
            "give its path as <feature view>:<feature>"
        )
    return holders[0]


def _join_key(views: list[FeastView], repo: FeastRepository) -> tuple[str, str]:
    """The one join key of the views' one entity, and its type as the manifest names it."""
    entities = {tuple(view.entities) for view in views}
    if len(entities) > 1:
        raise ModelBundleError(
            "the store features come from views on different entities "
            f"({', '.join(sorted('+'.join(e) for e in entities))}): a model reads one entity's "
            "features"
        )
    (entity_names,) = entities
    if len(entity_names) != 1 or entity_names[0] == DUMMY_ENTITY:
        raise ModelBundleError(
            f"feature view {views[0].name} is on entities {list(entity_names)}: the feast "
            "layout reads "
            "views on exactly one entity with one join key (no compound keys yet)"
        )
    join_key, value_type = repo.join_keys.get(entity_names[0], ("", "INVALID"))
    if not join_key:
        raise ModelBundleError(f"entity {entity_names[0]} is not in project {repo.project}")
    value_type = views[0].join_key_types.get(join_key, value_type)
    if value_type.lower() not in VALUE_TYPES:
        raise ModelBundleError(
            f"join key {join_key} is a Feast {value_type}: the feast layout reads STRING, "
            "INT32 and INT64 keys"
        )
    return join_key, value_type.lower()


def _fields(data: bytes) -> defaultdict[int, list[Any]]:
    """A protobuf message's fields by number: varints as ints, the rest as bytes."""
    fields: defaultdict[int, list[Any]] = defaultdict(list)
    at = 0
    while at < len(data):
        key, at = varint(data, at)
        wire_type = key & 7
        value: int | bytes
        if wire_type == 0:
            value, at = varint(data, at)
        elif wire_type == 2:
            size, at = varint(data, at)
            value, at = data[at : at + size], at + size
        elif wire_type in (1, 5):
            size = 8 if wire_type == 1 else 4
            value, at = data[at : at + size], at + size
        else:
            raise ValueError(f"wire type {wire_type} at byte {at}")
        fields[key >> 3].append(value)
    if at != len(data):
        raise ValueError("cut short")
    return fields


def _one(fields: defaultdict[int, list[Any]], number: int, default: Any = None) -> Any:
    values = fields[number]
    if not values:
        if default is None:
            raise ValueError(f"field {number} missing")
        return default
    return values[-1]


def _text(fields: defaultdict[int, list[Any]], number: int) -> str:
    return str(_one(fields, number, b"").decode())
