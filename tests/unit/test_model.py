import json
import shutil
from pathlib import Path

import pytest

from streamserve.core.model import load_bundle
from streamserve.errors import ModelBundleError


def copy_bundle(src: Path, dst: Path, **manifest_changes: object) -> Path:
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest.update(manifest_changes)
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


def test_the_demo_bundle_loads_and_agrees(bundle_dir: Path) -> None:
    bundle = load_bundle(bundle_dir)
    assert (bundle.name, bundle.version) == ("fraud-demo", "1")
    assert len(bundle.manifest.features) == 30


def test_a_manifest_with_fewer_features_than_the_booster_is_refused(
    bundle_dir: Path, tmp_path: Path
) -> None:
    features = json.loads((bundle_dir / "manifest.json").read_text())["features"][:-1]
    bad = copy_bundle(bundle_dir, tmp_path / "b", features=features)
    with pytest.raises(ModelBundleError, match="lists 29 features but the booster takes 30"):
        load_bundle(bad)


def test_a_manifest_in_another_order_than_the_booster_is_refused(
    bundle_dir: Path, tmp_path: Path
) -> None:
    features = json.loads((bundle_dir / "manifest.json").read_text())["features"]
    features[0], features[1] = features[1], features[0]
    bad = copy_bundle(bundle_dir, tmp_path / "b", features=features)
    with pytest.raises(ModelBundleError, match="#0: manifest 'hour_of_day' vs booster 'amount'"):
        load_bundle(bad)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"store": {"key_template": "feat:{id}"}}, "must contain {entity_id} exactly once"),
        ({"store": {"layout": "columns"}}, "Invalid enum value 'columns' - at `$.store.layout`"),
        ({"features": []}, "lists no features"),
        ({"version": ""}, "at `$.version`"),
        ({"colour": "red"}, "unknown field `colour`"),
        ({"model_file": "nope.ubj"}, "nope.ubj named by the manifest does not exist"),
        (
            {
                "features": [
                    {"name": "m", "source": "event", "path": "merchant"},
                    {"name": "r", "source": "event", "path": "merchant.risk"},
                ]
            },
            "'merchant' is a number and also holds 'merchant.risk'",
        ),
    ],
)
def test_bad_manifests_are_refused_with_a_message(
    bundle_dir: Path, tmp_path: Path, change: dict[str, object], message: str
) -> None:
    bad = copy_bundle(bundle_dir, tmp_path / "b", **change)
    with pytest.raises(ModelBundleError) as info:
        load_bundle(bad)
    assert message in str(info.value)


def test_a_corrupt_model_file_is_refused(bundle_dir: Path, tmp_path: Path) -> None:
    bad = copy_bundle(bundle_dir, tmp_path / "b")
    (bad / "model.ubj").write_bytes(b"not a model")
    with pytest.raises(ModelBundleError, match="cannot load model"):
        load_bundle(bad)


def test_a_missing_bundle_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelBundleError, match="is not a directory"):
        load_bundle(tmp_path / "absent")
    with pytest.raises(ModelBundleError, match=r"no manifest\.json"):
        load_bundle(tmp_path)
