"""Feast itself, for the tests and the bench: a script run with the Python of the Feast
environment (`.venv-feast`, `make install`), never imported. Reads one JSON request on stdin:
write a Feast repository (`feature_store.yaml`, a file registry), apply the project's entity and
feature views, write rows to the Redis online store with `write_to_online_store`, then read
entities back with `get_online_features` (``"repeat"`` more times, timed: ``"read_seconds"``);
prints Feast's answer as JSON, with the repository's directory (``"repo"``).

Request: {"redis": "host:port", "cluster": false, "project": ..., "join_key": ..., "join_key_type":
"string" |
"int64", "views": [{"name", "features": [[name, "float64" | "float32" | "int64" | "int32" |
"bool"]], "ttl_s"}], "rows": {view: [{join_key: id, feature: value, "event_timestamp": epoch
s}]}, "read": {"entities": [id, ...], "features": ["view:feature", ...]}}
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast import types as feast_types

DTYPES = {
    "float64": feast_types.Float64,
    "float32": feast_types.Float32,
    "int64": feast_types.Int64,
    "int32": feast_types.Int32,
    "bool": feast_types.Bool,
}
JOIN_KEY_TYPES = {"string": ValueType.STRING, "int64": ValueType.INT64, "int32": ValueType.INT32}


def main() -> None:
    request = json.load(sys.stdin)
    workdir = Path(tempfile.mkdtemp(prefix="feast-repo-"))
    config = {
        "project": request["project"],
        "registry": "registry.db",
        "provider": "local",
        "online_store": {
            "type": "redis",
            "redis_type": "redis_cluster" if request.get("cluster") else "redis",
            "connection_string": request["redis"],
        },
        "offline_store": {"type": "file"},
        "entity_key_serialization_version": 3,
    }
    (workdir / "feature_store.yaml").write_text(json.dumps(config))  # JSON is YAML
    store = FeatureStore(repo_path=str(workdir))
    join_key = request["join_key"]
    entity = Entity(
        name="entity", join_keys=[join_key], value_type=JOIN_KEY_TYPES[request["join_key_type"]]
    )
    views = []
    for spec in request["views"]:
        source_path = workdir / f"{spec['name']}.parquet"
        pd.DataFrame({join_key: [], "event_timestamp": []}).to_parquet(source_path)
        views.append(
            FeatureView(
                name=spec["name"],
                entities=[entity],
                ttl=timedelta(seconds=spec.get("ttl_s") or 0),
                schema=[Field(name=n, dtype=DTYPES[t]) for n, t in spec["features"]],
                source=FileSource(path=str(source_path), timestamp_field="event_timestamp"),
                online=True,
            )
        )
    store.apply([entity, *views])
    for view in views:
        rows = request["rows"].get(view.name, [])
        if not rows:
            continue
        frame = pd.DataFrame(rows)
        frame["event_timestamp"] = [
            datetime.fromtimestamp(t, tz=UTC) for t in frame["event_timestamp"]
        ]
        for field in view.schema:  # integer columns with gaps: pandas' nullable integers
            if field.dtype in (feast_types.Int64, feast_types.Int32) and field.name in frame:
                frame[field.name] = frame[field.name].astype("Int64")
        store.write_to_online_store(view.name, frame)
    read = request["read"]
    entity_rows = [{join_key: e} for e in read["entities"]]
    found = store.get_online_features(features=read["features"], entity_rows=entity_rows).to_dict()
    timings = []
    for _ in range(read.get("repeat", 0)):
        started = time.perf_counter()
        store.get_online_features(features=read["features"], entity_rows=entity_rows).to_dict()
        timings.append(time.perf_counter() - started)
    json.dump({**found, "read_seconds": timings, "repo": str(workdir)}, sys.stdout, default=str)


if __name__ == "__main__":
    main()
