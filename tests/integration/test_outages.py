"""Feature store outages under live load: a Redis of the test's own is stopped and restarted."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from streamserve.core.model import read_manifest
from streamserve.io.kafka import Cluster
from streamserve.tools.audit import audit, read_topics
from streamserve_loadgen.world import synthetic
from streamserve_loadgen.world.embedded import start_stack
from tests.integration.conftest import Scenario, value_json, wait_for
from tests.integration.helpers import Worker, audited, produce_steadily, streamserve


@pytest.mark.parametrize("policy", ["wait", "degrade"])
def test_a_redis_outage_under_load_loses_nothing(
    scenario: Scenario, tmp_path: Path, policy: str
) -> None:
    n_events, entities = 12_000, 500
    with start_stack(scenario.stack.kafka_bootstrap, workdir=tmp_path / "redis") as own:
        scenario = scenario.with_settings(redis_url=own.redis_url, max_batch_size=200)
        scenario.load_features(entities, skip_every=0)  # every entity has all its features
        events = list(synthetic.generate_events(n_events, entities, malformed_every=0))
        env = {
            **scenario.env(),
            "STREAMSERVE_STORE_OUTAGE_POLICY": policy,
            "STREAMSERVE_EXIT_WHEN_IDLE_S": "0",
            "STREAMSERVE_LOG_LEVEL": "INFO",
        }
        worker = Worker(env)
        worker.wait_ready()
        producer = threading.Thread(target=produce_steadily, args=(scenario, events, 2_000))
        producer.start()
        keys = "streamserve_feature_store_keys_total"
        wait_for(lambda: worker.metric(keys) > 0, 30, "the first lookups")
        own.stop_redis()
        wait_for(
            lambda: worker.readiness().get("feature_store_reachable") is False,
            30,
            "the worker to see the outage",
        )
        # wait: consumption paused; degrade: predictions without store features
        sign = (
            "streamserve_paused" if policy == "wait" else "streamserve_degraded_predictions_total"
        )
        wait_for(lambda: worker.metric(sign) > 0, 30, f"{sign} during the outage")
        own.restart_redis()
        producer.join()
        settings = scenario.settings
        outputs = [settings.predictions_topic, settings.dead_letter_topic]
        wait_for(
            lambda: (
                sum(map(len, read_topics(Cluster.of(settings), outputs, n_events, 5, 0.2).values()))
                >= n_events
            ),
            timeout_s=60,
            what="an outcome for every event",
        )
        worker.stop()

    report = audit(Cluster.of(settings), settings.input_topic, outputs[0], outputs[1])
    assert (report.events, report.lost, report.duplicated) == (n_events, 0, 0)
    assert report.predictions == n_events
    found = read_topics(Cluster.of(settings), [settings.predictions_topic], n_events, 30, 0.5)
    predictions = [value_json(m) for m in found[settings.predictions_topic]]
    store_width = len(read_manifest(scenario.bundle_dir).store_features)
    degraded = [p for p in predictions if p.get("degraded")]
    if policy == "wait":
        assert "feature store unavailable" in worker.log.text()
        assert not degraded
        assert all(p["missing_features"] == 0 for p in predictions)  # none scored without Redis
    else:
        assert 0 < len(degraded) < n_events
        assert all(p["missing_features"] == store_width for p in degraded)
        assert all(p["missing_features"] == 0 for p in predictions if not p.get("degraded"))
        assert not predictions[-1].get("degraded")  # back to full features after the outage


def test_a_full_producer_queue_slows_the_worker_down_without_losing_anything(
    scenario: Scenario,
) -> None:
    scenario = scenario.with_settings(max_batch_size=500)
    scenario.load_features(300, skip_every=0)
    scenario.preload(6_000, 300, malformed_every=50)
    tiny_queue = {
        **scenario.env(),
        "STREAMSERVE_RDKAFKA_PRODUCER_QUEUE_BUFFERING_MAX_MESSAGES": "50",
    }
    worker = streamserve("worker", env=tiny_queue)
    out, err = worker.communicate(timeout=120)
    assert worker.returncode == 0, err
    assert json.loads(out)["events"] == 6_000
    report = audited(scenario)
    assert (report.events, report.lost, report.duplicated) == (6_000, 0, 0)
    assert report.dead_letters == 120


def test_sigterm_while_waiting_for_redis_exits_cleanly_and_a_restart_scores_the_rest(
    scenario: Scenario, tmp_path: Path
) -> None:
    n_events, entities = 6_000, 300
    with start_stack(scenario.stack.kafka_bootstrap, workdir=tmp_path / "redis") as own:
        scenario = scenario.with_settings(redis_url=own.redis_url, max_batch_size=200)
        scenario.load_features(entities, skip_every=0)
        env = {
            **scenario.env(),
            "STREAMSERVE_EXIT_WHEN_IDLE_S": "0",
            "STREAMSERVE_LOG_LEVEL": "INFO",
        }
        worker = Worker(env)
        worker.wait_ready()
        own.stop_redis()
        scenario.preload(n_events, entities)
        wait_for(lambda: worker.metric("streamserve_paused") == 1, 30, "the worker to pause")
        assert worker.stop(timeout_s=30)["events"] == 0
        assert "left unscored, to be read again" in worker.log.text()

        own.restart_redis()
        again = streamserve("worker", env={**env, "STREAMSERVE_EXIT_WHEN_IDLE_S": "2"})
        out, err = again.communicate(timeout=120)
        assert again.returncode == 0, err
        assert json.loads(out)["events"] == n_events

    report = audited(scenario)
    assert (report.events, report.lost, report.duplicated) == (n_events, 0, 0)
