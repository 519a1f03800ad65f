"""Integration fixtures: the real embedded broker and Redis (or external ones named by
STREAMSERVE_KAFKA_BOOTSTRAP / STREAMSERVE_REDIS_URL), isolated per test by unique topics,
consumer group and Redis key prefix."""

from __future__ import annotations

import gc
import json
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from confluent_kafka import Message

from streamserve.config import Settings, load_settings
from streamserve.core.model import read_manifest
from streamserve.core.predictors import MAX_SCORE_DIFF
from streamserve.io.kafka import Cluster
from streamserve.tools.audit import read_topics
from streamserve_loadgen.load.produce import preload
from streamserve_loadgen.measure.demo import load_entity_features
from streamserve_loadgen.world import synthetic
from streamserve_loadgen.world.embedded import EmbeddedStack, running_stack
from tests.conftest import is_scorable, offline_scores


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def stack() -> Iterator[EmbeddedStack]:
    with running_stack() as running:
        yield running
        gc.collect()  # free clients still in reference cycles before their broker goes away


@dataclass
class Scenario:
    """One isolated run: its own topics, group, key prefix and bundle copy."""

    stack: EmbeddedStack
    settings: Settings
    bundle_dir: Path
    uid: str

    def env(self) -> dict[str, str]:
        """The same settings as environment variables, for a worker subprocess."""
        env = {
            "STREAMSERVE_" + k.upper(): str(v) for k, v in self.overrides().items() if v is not None
        }
        env["STREAMSERVE_RDKAFKA_CONSUMER_SESSION_TIMEOUT_MS"] = "6000"
        env["STREAMSERVE_HTTP_PORT"] = "0"  # tests that want the endpoint pick a free port
        return env

    def overrides(self) -> dict[str, Any]:
        s = self.settings
        return {
            "kafka_bootstrap": s.kafka_bootstrap,
            "redis_url": s.redis_url.get_secret_value(),
            "model_dir": s.model_dir,
            "input_topic": s.input_topic,
            "predictions_topic": s.predictions_topic,
            "dead_letter_topic": s.dead_letter_topic,
            "metrics_topic": s.metrics_topic,
            "shadow_topic": s.shadow_topic,
            "group_id": s.group_id,
            "topic_partitions": s.topic_partitions,
            "metrics_interval_s": s.metrics_interval_s,
            "exit_when_idle_s": s.exit_when_idle_s,
            "input_format": s.input_format,
            "output_format": s.output_format,
            "schema_registry_url": s.schema_registry_url,
            "processing_guarantee": s.processing_guarantee,
        }

    def with_settings(self, **changes: Any) -> Scenario:
        merged = {**self.overrides(), "rdkafka_consumer": self.settings.rdkafka_consumer}
        settings = load_settings(**{**merged, **changes})
        return Scenario(self.stack, settings, self.bundle_dir, self.uid)

    def load_features(self, n_entities: int, skip_every: int) -> dict[str, np.ndarray]:
        """Write entity features; returns entity id -> stored row for the entities written."""
        manifest = read_manifest(self.bundle_dir)
        return load_entity_features(self.settings, manifest, n_entities, skip_every)

    def preload(self, n: int, n_entities: int, malformed_every: int = 0) -> list[bytes]:
        """Produce ``n`` events; returns their values in production order."""
        pairs = list(synthetic.generate_events(n, n_entities, malformed_every=malformed_every))
        preload(self.stack.kafka_bootstrap, self.settings.input_topic, pairs)
        return [value for _, value in pairs]

    def outputs(self, expected: int) -> tuple[list[Message], list[Message]]:
        s = self.settings
        found = read_topics(
            Cluster.of(s), [s.predictions_topic, s.dead_letter_topic], expected, idle_s=1.0
        )
        return found[s.predictions_topic], found[s.dead_letter_topic]

    def metrics(self) -> list[dict[str, Any]]:
        found = read_topics(Cluster.of(self.settings), [self.settings.metrics_topic], 1, 20, 1)
        return [value_json(m) for m in found[self.settings.metrics_topic]]


@pytest.fixture
def scenario(stack: EmbeddedStack, bundle_dir: Path, tmp_path: Path) -> Scenario:
    return make_scenario(stack, bundle_dir, tmp_path, layout="vector")


def make_scenario(stack: EmbeddedStack, bundle_dir: Path, tmp_path: Path, layout: str) -> Scenario:
    uid = uuid.uuid4().hex[:10]
    copy = tmp_path / "bundle"
    shutil.copytree(bundle_dir, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["store"] = {"key_template": f"test-{uid}:{{entity_id}}", "layout": layout}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    settings = load_settings(
        kafka_bootstrap=stack.kafka_bootstrap,
        redis_url=stack.redis_url,
        model_dir=copy,
        input_topic=f"events-{uid}",
        predictions_topic=f"predictions-{uid}",
        dead_letter_topic=f"dead-letters-{uid}",
        metrics_topic=f"metrics-{uid}",
        shadow_topic=f"shadow-predictions-{uid}",
        group_id=f"group-{uid}",
        topic_partitions=4,
        metrics_interval_s=1.0,
        exit_when_idle_s=2.0,
        rdkafka_consumer={"session.timeout.ms": "6000"},
    )
    return Scenario(stack, settings, copy, uid)


def value_json(message: Message) -> Any:
    """A consumed record's value, parsed as JSON."""
    return json.loads(message.value() or b"")


def wait_for(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def inputs_of(scenario: Scenario, expected: int) -> dict[tuple[int, int], Message]:
    """Every input record by (partition, offset), read back from the broker."""
    topic = scenario.settings.input_topic
    found = read_topics(Cluster.of(scenario.settings), [topic], expected, idle_s=0.5)[topic]
    return {(m.partition(), m.offset()): m for m in found}  # type: ignore[misc]


def assert_scores_equal_offline_predict(
    scenario: Scenario,
    predictions: list[Message],
    values: list[bytes],
    stored: dict[str, np.ndarray],
) -> None:
    """Every published score equals the booster's offline predict of the same features, within
    1e-6 (the worker may score with oneDAL: STREAMSERVE_PREDICTOR=auto)."""
    published = {value_json(m)["event_id"]: value_json(m)["score"] for m in predictions}
    expected = offline_scores(scenario.bundle_dir, [v for v in values if is_scorable(v)], stored)
    assert published.keys() == expected.keys()
    np.testing.assert_allclose(
        [published[k] for k in expected], list(expected.values()), rtol=0, atol=MAX_SCORE_DIFF
    )
