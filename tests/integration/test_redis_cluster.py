"""The feature store on a Redis Cluster: a local 3-node cluster of the embedded Redis binary."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from streamserve.runtime.startup import build_worker
from streamserve_loadgen.world.embedded import EmbeddedStack, start_redis_cluster
from tests.conftest import is_scorable
from tests.integration.conftest import assert_scores_equal_offline_predict, make_scenario


@pytest.fixture
def cluster_url(tmp_path: Path) -> Iterator[str]:
    url, servers = start_redis_cluster(tmp_path / "cluster", nodes=3)
    yield url
    for server in servers:
        server.terminate()
        server.wait(10)


@pytest.mark.parametrize("layout", ["vector", "hash"])
def test_features_spread_over_cluster_nodes_score_like_offline_predict(
    stack: EmbeddedStack, bundle_dir: Path, tmp_path: Path, cluster_url: str, layout: str
) -> None:
    scenario = make_scenario(stack, bundle_dir, tmp_path, layout=layout)
    scenario = scenario.with_settings(redis_url=cluster_url, redis_cluster=True)
    stored = scenario.load_features(300, skip_every=7)
    cluster = redis.RedisCluster.from_url(cluster_url)
    per_node = [redis.Redis(host=n.host, port=n.port).dbsize() for n in cluster.get_nodes()]
    assert len(per_node) == 3 and min(per_node) > 50, per_node  # keys on every node
    values = scenario.preload(1_000, 300, malformed_every=100)

    summary = build_worker(scenario.settings).run()

    predictions, dead_letters = scenario.outputs(expected=1_000)
    assert (summary.predictions, summary.dead_letters) == (len(predictions), len(dead_letters))
    good = [v for v in values if is_scorable(v)]
    assert len(predictions) == len(good) and len(dead_letters) == 1_000 - len(good)
    assert_scores_equal_offline_predict(scenario, predictions, values, stored)
