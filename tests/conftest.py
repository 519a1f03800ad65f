"""Fixtures shared by every tier: a small demo bundle, helpers to score rows offline, and the
published schemas (``schemas/``) to validate records against."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
import xgboost as xgb

from streamserve.core.model import ModelBundle, load_bundle
from streamserve_loadgen.world import synthetic

TREES = 60  # enough trees to make scores depend on every feature kind, quick to train
SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"


@functools.cache
def validator(name: str) -> jsonschema.Draft202012Validator:
    """A validator of the published schema ``schemas/<name>``."""
    return jsonschema.Draft202012Validator(json.loads((SCHEMAS / name).read_text()))


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bundle")
    synthetic.train_demo_model(path, trees=TREES, rows=5_000)
    return path


@pytest.fixture(scope="session")
def bundle(bundle_dir: Path) -> ModelBundle:
    return load_bundle(bundle_dir)


def is_scorable(value: bytes | None) -> bool:
    """Independent of the decoder under test: every synthetic malformed kind fails this."""
    try:
        event = json.loads(value or b"")
    except ValueError:
        return False
    return "entity_id" in event and isinstance(event.get("amount"), float | int)


def event_row(event: dict[str, Any], store_row: np.ndarray) -> np.ndarray:
    """The model input a correct worker must build, computed without any streamserve code."""
    values = []
    for _, path in synthetic.EVENT_FEATURES:
        node: Any = event
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        values.append(np.nan if node is None else float(node))
    return np.concatenate([np.array(values, dtype=np.float32), store_row]).astype(np.float32)


def offline_scores(
    bundle_dir: Path, values: list[bytes], store_rows: dict[str, np.ndarray]
) -> dict[str, float]:
    """event_id -> Booster.predict score; ``store_rows`` maps entity id to its stored row."""
    absent = np.full(len(synthetic.STORE_FEATURES), np.nan, dtype=np.float32)
    events = [json.loads(v) for v in values]
    rows = np.stack([event_row(e, store_rows.get(e["entity_id"], absent)) for e in events])
    booster = xgb.Booster()
    booster.load_model(str(bundle_dir / "model.ubj"))
    scores = booster.predict(xgb.DMatrix(rows, feature_names=synthetic.FEATURE_NAMES))
    return {e["event_id"]: float(s) for e, s in zip(events, scores, strict=True)}
