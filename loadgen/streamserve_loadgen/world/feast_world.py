"""The demo world in Feast's Redis online store, written and read by Feast itself (the
`feast_writer.py` script, run by the Python of `.venv-feast`): for the tests and the bench of the
`feast` store layout. The demo model's 24 store features are split over two feature views of
one entity, `user_id`."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from streamserve_loadgen.world import synthetic

FEAST_PYTHON = Path(
    os.environ.get("FEAST_PYTHON", Path(__file__).resolve().parents[3] / ".venv-feast/bin/python")
)
WRITER = Path(__file__).with_name("feast_writer.py")
VIEWS = {
    "user_activity": synthetic.STORE_FEATURES[:12],
    "user_profile": synthetic.STORE_FEATURES[12:],
}
INTEGER_FEATURES = {"txn_count_1h", "txn_count_24h", "txn_count_7d", "chargebacks_90d"}
FEATURE_REFS = [f"{view}:{name}" for view, names in VIEWS.items() for name in names]


def run_feast(request: dict[str, Any]) -> dict[str, list[Any]]:
    """Feast's writer and reader in the Feast environment; its answer."""
    if not FEAST_PYTHON.exists():
        raise RuntimeError(f"{FEAST_PYTHON} is missing: `make install` creates it")
    done = subprocess.run(
        [str(FEAST_PYTHON), str(WRITER)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"Feast failed:\n{done.stderr[-3000:]}")
    found: dict[str, list[Any]] = json.loads(done.stdout)
    return found


def use_feast_layout(bundle_dir: Path, project: str, join_key_type: str = "string") -> None:
    """Point a demo bundle's store features at Feast's layout: `<view>:<feature>`."""
    path = bundle_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    view_of = {name: view for view, names in VIEWS.items() for name in names}
    for feature in manifest["features"]:
        if feature["source"] == "store":
            feature["path"] = f"{view_of[feature['name']]}:{feature['name']}"
    manifest["store"] = {
        "layout": "feast",
        "feast": {"project": project, "join_key": "user_id", "join_key_type": join_key_type},
    }
    path.write_text(json.dumps(manifest))


def entity_value(index: int, join_key_type: str) -> Any:
    return synthetic.entity_id(index) if join_key_type == "string" else index


class FeastWorld(NamedTuple):
    rows: dict[Any, np.ndarray]  # entity -> the row Feast returned (manifest order, NaN: None)
    read_seconds: list[float]  # each timed read
    repo: Path  # the Feast repository: feature_store.yaml and the registry Feast applied


def write_and_read(
    redis_url: str,
    project: str,
    n_entities: int,
    join_key_type: str = "string",
    repeat: int = 0,
    read_entities: int | None = None,
    cluster: bool = False,
    view_ttl_s: dict[str, float] | None = None,
    old_every: int = 0,
) -> FeastWorld:
    """Feast writes the entities' features (user_activity missing for every 5th entity, entity
    3's velocity_score null; with ``old_every`` n, the user_profile of entities 1, 1 + n,
    1 + 2n... two hours old, every other row a minute), then reads the first ``read_entities``
    (default: all) and one unknown entity back, and ``repeat`` more times, timed. Views have
    ``view_ttl_s``."""
    table = synthetic.entity_features(n_entities)
    column = {name: i for i, name in enumerate(synthetic.STORE_FEATURES)}
    now = time.time()
    rows: dict[str, list[dict[str, Any]]] = {view: [] for view in VIEWS}
    for i in range(n_entities):
        for view, names in VIEWS.items():
            if view == "user_activity" and i % 5 == 0:
                continue
            row: dict[str, Any] = {"user_id": entity_value(i, join_key_type)}
            for name in names:
                value = float(table[i, column[name]])
                row[name] = int(value) if name in INTEGER_FEATURES else value
            if view == "user_profile" and i == 3:
                row["velocity_score"] = None
            old = view == "user_profile" and old_every and i % old_every == 1
            rows[view].append({**row, "event_timestamp": now - (7200 if old else 60)})
    ttl = view_ttl_s or {}
    features = [
        {"name": view, "features": [[n, _dtype(n)] for n in names], "ttl_s": ttl.get(view)}
        for view, names in VIEWS.items()
    ]
    read = n_entities if read_entities is None else read_entities
    entities = [entity_value(i, join_key_type) for i in [*range(read), n_entities]]
    found = run_feast(
        {
            "redis": redis_url.split("//", 1)[1].split("/")[0],
            "cluster": cluster,
            "project": project,
            "join_key": "user_id",
            "join_key_type": join_key_type,
            "views": features,
            "rows": rows,
            "read": {"entities": entities, "features": FEATURE_REFS, "repeat": repeat},
        }
    )
    matrix = np.array(
        [[np.nan if v is None else v for v in found[name]] for name in synthetic.STORE_FEATURES],
        dtype=np.float32,
    ).T
    by_entity = dict(zip(found["user_id"], matrix, strict=True))
    return FeastWorld(by_entity, list(found["read_seconds"]), Path(str(found["repo"])))


def _dtype(name: str) -> str:
    return "int64" if name in INTEGER_FEATURES else "float64"
