"""The `feast` store layout against features Feast itself wrote: feast 0.67 (in `.venv-feast`,
`make install`; never a dependency of the product) applies a project with two feature views on
one entity and writes them to the test's Redis with `write_to_online_store` (the harness's
`feast_world`); the worker reads them without Feast, and every score equals the booster's offline
predict on the rows Feast's own `get_online_features` returns for the same entities."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from streamserve.core.features import FeatureLayout, check_freshness
from streamserve.core.model import FeastDef, read_manifest
from streamserve.io.store import RedisFeatureStore, connect
from streamserve.runtime.startup import build_worker
from streamserve_loadgen.world.embedded import EmbeddedStack, start_redis_cluster
from streamserve_loadgen.world.feast_world import (
    INTEGER_FEATURES,
    VIEWS,
    use_feast_layout,
    write_and_read,
)
from tests.integration.conftest import (
    Scenario,
    assert_scores_equal_offline_predict,
    make_scenario,
)
from tests.integration.helpers import run

N_ENTITIES = 60


@pytest.mark.parametrize("join_key_type", ["string", "int64"])
def test_the_feast_layout_reads_the_rows_feasts_own_reader_returns(
    scenario: Scenario, join_key_type: str
) -> None:
    feast_rows = feast_world(scenario, join_key_type)
    manifest = read_manifest(scenario.bundle_dir)
    store = RedisFeatureStore(connect(scenario.settings.redis_url.get_secret_value()), manifest)
    entities = list(feast_rows)
    found = store.fetch(FeatureLayout(manifest).store_keys(entities).keys)
    np.testing.assert_array_equal(found.values, np.stack([feast_rows[e] for e in entities]))
    assert np.isnan(found.values[0, :12]).all()  # entity 0: no user_activity written
    assert np.isnan(found.values[-1]).all()  # the unknown entity
    assert found.written_at is not None and (found.written_at[1] > time.time() - 3600).all()


def test_on_a_redis_cluster_the_worker_reads_what_feast_wrote_there(
    stack: EmbeddedStack, bundle_dir: Path, tmp_path: Path
) -> None:
    url, servers = start_redis_cluster(tmp_path / "cluster", nodes=3)
    try:
        scenario = make_scenario(stack, bundle_dir, tmp_path, layout="vector")
        scenario = scenario.with_settings(redis_url=url, redis_cluster=True)
        feast_rows = feast_world(scenario, "string")
        cluster = redis.RedisCluster.from_url(url)
        per_node = [redis.Redis(host=n.host, port=n.port).dbsize() for n in cluster.get_nodes()]
        # Feast's keys of 60 entities land on two or three nodes: reads go to several of them
        assert sum(n > 0 for n in per_node) >= 2, per_node
        values = scenario.preload(600, N_ENTITIES)

        build_worker(scenario.settings).run()

        predictions, _ = scenario.outputs(expected=600)
        assert_scores_equal_offline_predict(scenario, predictions, values, feast_rows)
    finally:
        for server in servers:
            server.terminate()
            server.wait(10)


def test_scores_from_feast_features_equal_offline_predict(scenario: Scenario) -> None:
    feast_rows = feast_world(scenario, "string")
    values = scenario.preload(1_000, N_ENTITIES, malformed_every=50)

    summary = build_worker(scenario.settings).run()

    assert summary.events == 1_000
    predictions, _ = scenario.outputs(expected=1_000)
    assert_scores_equal_offline_predict(scenario, predictions, values, feast_rows)


def test_model_feast_points_a_bundle_at_the_repository_feast_applied(scenario: Scenario) -> None:
    """`streamserve model feast --write` reads the views, the entity and the TTLs from the
    repository (feature_store.yaml and the registry Feast applied), not from Feast. The worker
    then reads what Feast's own reader returns, except where a view's row is older than its
    TTL: those features are missing. Half the entities have their user_profile view past its TTL,
    so entities with a stale view far outnumber absent ones (which once made the miss count
    negative and crash-looped the worker on its first batch): every event is still scored, and
    absent, wholly stale and partly stale entities are counted apart."""
    project = f"p{scenario.uid}"
    world = write_and_read(
        scenario.settings.redis_url.get_secret_value(),
        project,
        N_ENTITIES,
        view_ttl_s={"user_profile": 3600},
        old_every=2,  # entities 1, 3, 5...: user_profile written two hours ago
    )
    bundle = str(scenario.bundle_dir)

    done = run("model", "feast", bundle, "--repo", str(world.repo), "--write", env={})

    assert done.returncode == 0, done.stderr
    assert "24 store features from user_activity, user_profile" in done.stdout
    manifest = read_manifest(scenario.bundle_dir)
    paths = {name: f"{view}:{name}" for view, names in VIEWS.items() for name in names}
    assert {f.name: f.path for f in manifest.store_features} == paths
    types = {p: "INT64" if n in INTEGER_FEATURES else "DOUBLE" for n, p in paths.items()}
    assert manifest.store.feast == FeastDef(
        project, "user_id", "string", {"user_profile": 3600.0}, types
    )
    layout = FeatureLayout(manifest)
    store = RedisFeatureStore(connect(scenario.settings.redis_url.get_secret_value()), manifest)
    entities = list(world.rows)  # the 60 written and one Feast never saw
    found = store.fetch(layout.store_keys(entities).keys)
    lookup = check_freshness(found, time.time(), layout.max_age_s)
    expected = np.stack([world.rows[e] for e in entities])
    old = [i for i in range(N_ENTITIES) if i % 2 == 1]
    # Feast's reader returns them, TTL or not (all but entity 3's null velocity_score)
    assert np.isnan(expected[old, 12:]).sum() == 1
    expected[old, 12:] = np.nan  # user_profile's features (manifest order)
    np.testing.assert_array_equal(lookup.rows, expected)
    no_activity = {i for i in range(N_ENTITIES) if i % 5 == 0}  # user_activity never written
    assert lookup.absent == 1  # the entity Feast never saw
    assert lookup.stale == len(no_activity.intersection(old))  # its only view too old
    assert lookup.partly_stale == len(set(old) - no_activity)

    fresh = {e: row for e, row in zip(entities, expected, strict=True)}
    values = scenario.preload(1_000, N_ENTITIES + 10)  # 10 entities Feast never wrote
    summary = build_worker(scenario.settings).run()

    assert summary.predictions == 1_000
    predictions, _ = scenario.outputs(expected=1_000)
    assert_scores_equal_offline_predict(scenario, predictions, values, fresh)
    metrics = scenario.metrics()
    keys, absent, stale, partly = (
        sum(r[name] for r in metrics)
        for name in ("store_keys", "store_misses", "store_stale", "store_partly_stale")
    )
    assert 0 < absent < partly and 0 < stale < partly
    assert absent + stale + partly < keys  # the rest were fresh


def test_model_feast_refuses_a_bundle_that_does_not_fit_the_repository(
    scenario: Scenario,
) -> None:
    project = f"p{scenario.uid}"
    world = write_and_read(scenario.settings.redis_url.get_secret_value(), project, 5)
    manifest_path = scenario.bundle_dir / "manifest.json"
    before = manifest_path.read_text()
    manifest_path.write_text(before.replace('"txn_count_1h"', '"txn_count_2h"'))

    done = run("model", "feast", str(scenario.bundle_dir), "--repo", str(world.repo), env={})

    assert done.returncode == 3
    assert f"no feature view of project {project} has a feature 'txn_count_2h'" in done.stderr
    missing_repo = run("model", "feast", str(scenario.bundle_dir), "--repo", "/nonexistent", env={})
    assert missing_repo.returncode == 2
    assert "/nonexistent/feature_store.yaml" in missing_repo.stderr


def feast_world(scenario: Scenario, join_key_type: str) -> dict[Any, np.ndarray]:
    """The scenario's bundle on Feast's layout, its entities written by Feast; entity -> the
    row Feast's own reader returns."""
    project = f"p{scenario.uid}"
    use_feast_layout(scenario.bundle_dir, project, join_key_type)
    redis_url = scenario.settings.redis_url.get_secret_value()
    cluster = scenario.settings.redis_cluster
    return write_and_read(redis_url, project, N_ENTITIES, join_key_type, cluster=cluster).rows
