"""The feature store on a Redis Cluster: a local 3-node cluster of the embedded Redis binary."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from streamserve.embedded import EmbeddedStack, start_redis_cluster
from streamserve.runtime.confluent import build_worker
from tests.conftest import is_scorable, offline_scores
from tests.integration.conftest import make_scenario


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
    published = {json.loads(m.value())["event_id"]: json.loads(m.value())["score"]
                 for m in predictions}  # fmt: skip
    expected = offline_scores(scenario.bundle_dir, good, stored)
    assert published.keys() == expected.keys()
    np.testing.assert_allclose([published[k] for k in expected], list(expected.values()),
                               rtol=1e-6, atol=1e-7)  # fmt: skip
