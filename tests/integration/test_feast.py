"""The `feast` store layout against features Feast itself wrote: feast 0.67 (in `.venv-feast`,
`make install`; never a dependency of the product) applies a project with two feature views on
one entity and writes them to the test's Redis with `write_to_online_store`; the worker reads
them without Feast, and every score equals the booster's offline predict on the rows Feast's own
`get_online_features` returns for the same entities."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamserve.core.features import FeatureLayout
from streamserve.core.model import read_manifest
from streamserve.io.store import RedisFeatureStore, connect
from streamserve.runtime.confluent import build_worker
from streamserve_loadgen import synthetic
from tests.integration.conftest import Scenario, assert_scores_equal_offline_predict

FEAST_PYTHON = Path(__file__).resolve().parents[2] / ".venv-feast" / "bin" / "python"
WRITER = Path(__file__).resolve().parents[1] / "feast_writer.py"
N_ENTITIES = 60
VIEWS = {  # two feature views on one entity: the demo model's 24 store features
    "user_activity": synthetic.STORE_FEATURES[:12],
    "user_profile": synthetic.STORE_FEATURES[12:],
}
INTEGER_FEATURES = {"txn_count_1h", "txn_count_24h", "txn_count_7d", "chargebacks_90d"}


def run_feast(request: dict[str, Any]) -> dict[str, list[Any]]:
    """Feast's writer and reader (tests/feast_writer.py) in the Feast environment."""
    if not FEAST_PYTHON.exists():
        raise AssertionError(f"{FEAST_PYTHON} is missing: `make install` creates it")
    done = subprocess.run(
        [str(FEAST_PYTHON), str(WRITER)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found: dict[str, list[Any]] = json.loads(done.stdout)
    return found


def feast_scenario(scenario: Scenario, join_key_type: str) -> Scenario:
    """The demo bundle with its store features read from Feast's layout."""
    path = scenario.bundle_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    view_of = {name: view for view, names in VIEWS.items() for name in names}
    for feature in manifest["features"]:
        if feature["source"] == "store":
            feature["path"] = f"{view_of[feature['name']]}:{feature['name']}"
    manifest["store"] = {
        "layout": "feast",
        "feast": {
            "project": f"p{scenario.uid}",
            "join_key": "user_id",
            "join_key_type": join_key_type,
        },
    }
    path.write_text(json.dumps(manifest))
    return scenario


def entity_value(index: int, join_key_type: str) -> Any:
    return synthetic.entity_id(index) if join_key_type == "string" else index


def write_with_feast(scenario: Scenario, join_key_type: str) -> dict[Any, np.ndarray]:
    """Feast writes the entities' features (user_activity missing for every 5th entity, one
    user_profile value null) and reads them back; returns entity -> the row Feast returns."""
    table = synthetic.entity_features(N_ENTITIES)
    column = {name: i for i, name in enumerate(synthetic.STORE_FEATURES)}
    now = time.time()
    rows: dict[str, list[dict[str, Any]]] = {view: [] for view in VIEWS}
    for i in range(N_ENTITIES):
        for view, names in VIEWS.items():
            if view == "user_activity" and i % 5 == 0:
                continue
            row: dict[str, Any] = {"user_id": entity_value(i, join_key_type)}
            for name in names:
                value = float(table[i, column[name]])
                row[name] = int(value) if name in INTEGER_FEATURES else value
            if view == "user_profile" and i == 3:
                row["velocity_score"] = None
            rows[view].append({**row, "event_timestamp": now - 60})
    s = scenario.settings
    redis_address = s.redis_url.get_secret_value().split("//", 1)[1].split("/")[0]
    entities = [entity_value(i, join_key_type) for i in range(N_ENTITIES + 1)]  # one unknown
    found = run_feast(
        {
            "redis": redis_address,
            "project": f"p{scenario.uid}",
            "join_key": "user_id",
            "join_key_type": join_key_type,
            "views": [
                {
                    "name": view,
                    "features": [
                        [n, "int64" if n in INTEGER_FEATURES else "float64"] for n in names
                    ],
                }
                for view, names in VIEWS.items()
            ],
            "rows": rows,
            "read": {
                "entities": entities,
                "features": [f"{view}:{n}" for view, names in VIEWS.items() for n in names],
            },
        }
    )
    matrix = np.array(
        [[np.nan if v is None else v for v in found[name]] for name in synthetic.STORE_FEATURES],
        dtype=np.float32,
    ).T
    return dict(zip(found["user_id"], matrix, strict=True))


@pytest.mark.parametrize("join_key_type", ["string", "int64"])
def test_the_feast_layout_reads_the_rows_feasts_own_reader_returns(
    scenario: Scenario, join_key_type: str
) -> None:
    scenario = feast_scenario(scenario, join_key_type)
    feast_rows = write_with_feast(scenario, join_key_type)
    manifest = read_manifest(scenario.bundle_dir)
    store = RedisFeatureStore(connect(scenario.settings.redis_url.get_secret_value()), manifest)
    entities = list(feast_rows)
    found = store.fetch(FeatureLayout(manifest).store_keys(entities).keys)
    np.testing.assert_array_equal(found.values, np.stack([feast_rows[e] for e in entities]))
    assert np.isnan(found.values[0, :12]).all()  # entity 0: no user_activity written
    assert np.isnan(found.values[-1]).all()  # the unknown entity
    assert found.written_at is not None and (found.written_at[1] > time.time() - 3600).all()


def test_scores_from_feast_features_equal_offline_predict(scenario: Scenario) -> None:
    scenario = feast_scenario(scenario, "string")
    feast_rows = write_with_feast(scenario, "string")
    values = scenario.preload(1_000, N_ENTITIES, malformed_every=50)

    summary = build_worker(scenario.settings).run()

    assert summary.events == 1_000
    predictions, _ = scenario.outputs(expected=1_000)
    assert_scores_equal_offline_predict(scenario, predictions, values, feast_rows)
