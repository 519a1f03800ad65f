"""`streamserve model feast` refusing what the feast layout cannot read, with a message that
says why (the integration test `test_feast.py` reads a registry Feast itself applied)."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamserve.core.model import FeatureDef, Manifest
from streamserve.errors import ConfigError, ModelBundleError
from streamserve.tools.feast_repo import (
    FeastRepository,
    FeastView,
    feast_manifest,
    read_repository,
)


def view(name: str, features: dict[str, str], entities: tuple[str, ...] = ("user",)) -> FeastView:
    return FeastView(name, "proj", list(entities), features, {}, ttl_s=0.0)


def repository(*views: FeastView) -> FeastRepository:
    join_keys = {"user": ("user_id", "INT64"), "merchant": ("merchant_id", "STRING")}
    return FeastRepository("proj", {v.name: v for v in views}, join_keys)


def bundle(*store: str) -> Manifest:
    """A manifest whose store features are ``store``: names, or <view>:<feature> paths."""
    features = [FeatureDef("amount", "event")]
    features += [FeatureDef(n.split(":")[-1], "store", n if ":" in n else None) for n in store]
    return Manifest(name="m", version="1", features=features)


def test_features_are_found_by_name_and_typed_from_the_registry() -> None:
    repo = repository(view("activity", {"spend": "DOUBLE"}), view("profile", {"age": "INT32"}))
    manifest = feast_manifest(bundle("spend", "age"), repo)
    assert [f.path for f in manifest.store_features] == ["activity:spend", "profile:age"]
    assert manifest.store.feast is not None
    assert (manifest.store.feast.join_key, manifest.store.feast.join_key_type) == (
        "user_id",
        "int64",
    )
    assert manifest.store.feast.feature_types == {
        "activity:spend": "DOUBLE",
        "profile:age": "INT32",
    }


@pytest.mark.parametrize(
    ("views", "features", "message"),
    [
        ([view("a", {"x": "DOUBLE"})], ("y",), "no feature view of project proj has a feature 'y'"),
        (
            [view("a", {"x": "DOUBLE"}), view("b", {"x": "FLOAT"})],
            ("x",),
            r"'x' is in several feature views \(a, b\); give its path as <feature view>:<feature>",
        ),
        ([view("a", {"x": "DOUBLE"})], ("b:x",), "project proj has no b:x"),
        (
            [view("a", {"x": "STRING"})],
            ("x",),
            r"\(a:x\) is a Feast STRING: the feast layout reads",
        ),
        ([view("a", {"x": "DOUBLE_LIST"})], ("x",), "is a Feast DOUBLE_LIST"),
        (
            [view("a", {"x": "DOUBLE"}), view("b", {"y": "DOUBLE"}, ("merchant",))],
            ("x", "y"),
            r"views on different entities \(merchant, user\)",
        ),
        (
            [view("a", {"x": "DOUBLE"}, ("user", "merchant"))],
            ("x",),
            "no compound keys yet",
        ),
        ([view("a", {"x": "DOUBLE"}, ("__dummy",))], ("x",), r"on entities \['__dummy'\]"),
    ],
)
def test_what_the_layout_cannot_read_is_refused(
    views: list[FeastView], features: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ModelBundleError, match=message):
        feast_manifest(bundle(*features), repository(*views))


def test_a_picked_view_wins_over_the_search() -> None:
    repo = repository(view("a", {"x": "DOUBLE"}), view("b", {"x": "FLOAT"}))
    assert feast_manifest(bundle("b:x"), repo).store_features[0].path == "b:x"


def test_a_join_key_that_is_not_text_or_an_integer_is_refused() -> None:
    repo = repository(view("a", {"x": "DOUBLE"}))
    repo.join_keys["user"] = ("user_id", "BYTES")
    with pytest.raises(ModelBundleError, match="join key user_id is a Feast BYTES"):
        feast_manifest(bundle("x"), repo)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("registry: r.db\n", "names no project"),
        ("project: p\nregistry: r.db\nonline_store: {type: sqlite}\n", "online store is 'sqlite'"),
        ("project: p\nregistry: r.db\nonline_store: dynamodb\n", "online store is 'dynamodb'"),
        (
            "project: p\nregistry: s3://bucket/r.db\nonline_store: {type: redis}\n",
            "reads a local registry file",
        ),
        (
            "project: p\nregistry: {registry_type: sql, path: 'postgresql://x'}\n"
            "online_store: {type: redis}\n",
            "a sql registry",
        ),
        (
            "project: p\nregistry: r.db\nonline_store: {type: redis}\n"
            "entity_key_serialization_version: 2\n",
            "reads version 3",
        ),
        ("project: p\nregistry: r.db\nonline_store: {type: redis}\n", "run `feast apply`"),
        ("project: p\n  : [\n", "cannot read"),
    ],
)
def test_a_repository_it_cannot_read_is_named(tmp_path: Path, config: str, message: str) -> None:
    (tmp_path / "feature_store.yaml").write_text(config)
    with pytest.raises(ConfigError, match=message):
        read_repository(tmp_path)


def test_a_file_that_is_not_a_registry_is_named(tmp_path: Path) -> None:
    (tmp_path / "feature_store.yaml").write_text(
        "project: p\nregistry: r.db\nonline_store: {type: redis}\n"
    )
    (tmp_path / "r.db").write_bytes(b"\x0a\x05ab")  # a field longer than the file
    with pytest.raises(ConfigError, match=r"r\.db is not a Feast registry"):
        read_repository(tmp_path)


def test_a_stream_feature_view_is_read_from_a_registry_feast_wrote() -> None:
    """`data/feast_stream_repo/registry.db` is what feast 0.67's `FeatureStore.apply` wrote for
    an int64 entity `user` (join key `user_id`), a push source and a stream feature view
    `clicks` (TTL 600 s; `clicks_5m` Int64, `ctr` Float64). Stream feature views keep their TTL
    and entity columns under other field numbers than batch ones."""
    repo = read_repository(Path(__file__).parent / "data" / "feast_stream_repo")
    assert repo.project == "sfvtest"
    clicks = repo.views["clicks"]
    assert (clicks.entities, clicks.ttl_s) == (["user"], 600.0)
    assert (clicks.features["clicks_5m"], clicks.features["ctr"]) == ("INT64", "DOUBLE")
    manifest = feast_manifest(bundle("ctr", "clicks_5m"), repo)
    assert manifest.store.feast is not None
    assert manifest.store.feast.join_key == "user_id"
    assert manifest.store.feast.join_key_type == "int64"
    assert manifest.store.feast.view_max_age_s == {"clicks": 600.0}
