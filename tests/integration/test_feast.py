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

from streamserve.core.features import FeatureLayout
from streamserve.core.model import read_manifest
from streamserve.io.store import RedisFeatureStore, connect
from streamserve.runtime.confluent import build_worker
from streamserve_loadgen.embedded import EmbeddedStack, start_redis_cluster
from streamserve_loadgen.feast_world import use_feast_layout, write_and_read
from tests.integration.conftest import (
    Scenario,
    assert_scores_equal_offline_predict,
    make_scenario,
)

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


def feast_world(scenario: Scenario, join_key_type: str) -> dict[Any, np.ndarray]:
    """The scenario's bundle on Feast's layout, its entities written by Feast; entity -> the
    row Feast's own reader returns."""
    project = f"p{scenario.uid}"
    use_feast_layout(scenario.bundle_dir, project, join_key_type)
    redis_url = scenario.settings.redis_url.get_secret_value()
    cluster = scenario.settings.redis_cluster
    rows, _ = write_and_read(redis_url, project, N_ENTITIES, join_key_type, cluster=cluster)
    return rows
