"""Avro events through the real worker, broker and Redis, with confluent-kafka's in-process mock
Schema Registry (no registry server installs here): scores equal offline predict, nothing lost,
a registry that goes away while a new schema id arrives pauses the worker instead of losing or
dead-lettering anything, and one unreachable at start-up stops it with exit code 7."""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer

from streamserve.io.kafka import Cluster
from streamserve.io.registry import RegistrySchemas, registry_client
from streamserve.runtime.startup import build_worker
from streamserve.tools.audit import audit
from streamserve_loadgen.world import synthetic
from streamserve_loadgen.world.embedded import free_port
from tests.conftest import is_scorable
from tests.integration.conftest import (
    Scenario,
    assert_scores_equal_offline_predict,
    value_json,
    wait_for,
)
from tests.integration.helpers import audited, run
from tests.schema_registry import avro_schema, context

N_EVENTS, N_ENTITIES = 1_000, 200


def avro_scenario(scenario: Scenario) -> tuple[Scenario, Any]:
    url = f"mock://{uuid.uuid4().hex}"
    return scenario.with_settings(input_format="avro", schema_registry_url=url), registry_client(
        {"url": url}
    )


def produce(scenario: Scenario, values: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": scenario.stack.kafka_bootstrap, "linger.ms": 5})
    for i, value in enumerate(values):
        producer.produce(scenario.settings.input_topic, value, f"k{i}".encode())
    assert producer.flush(30) == 0


def test_avro_events_score_like_offline_predict_and_nothing_is_lost(scenario: Scenario) -> None:
    scenario, client = avro_scenario(scenario)
    stored = scenario.load_features(N_ENTITIES, skip_every=10)
    serialize = AvroSerializer(client, avro_schema())
    events = [json.loads(v) for _, v in synthetic.generate_events(N_EVENTS, N_ENTITIES)]
    values = [serialize(e, context(scenario.settings.input_topic)) for e in events]
    values[7] = json.dumps(events[7]).encode()  # a producer that forgot the serializer
    produce(scenario, values)

    summary = build_worker(scenario.settings).run()

    assert (summary.events, summary.dead_letters) == (N_EVENTS, 1)
    predictions, dead_letters = scenario.outputs(expected=N_EVENTS)
    as_json = [json.dumps(e).encode() for i, e in enumerate(events) if i != 7]
    assert all(is_scorable(v) for v in as_json)
    assert_scores_equal_offline_predict(scenario, predictions, as_json, stored)
    [letter] = dead_letters
    assert dict(letter.headers())["streamserve-error-class"] == b"not_framed"  # type: ignore[arg-type]
    assert letter.value() == values[7]
    report = audited(scenario)
    assert (report.events, report.lost, report.duplicated) == (N_EVENTS, 0, 0)


def test_a_registry_away_when_a_new_schema_arrives_pauses_and_loses_nothing(
    scenario: Scenario,
) -> None:
    scenario, client = avro_scenario(scenario)
    scenario.load_features(N_ENTITIES, skip_every=0)
    scenario = scenario.with_settings(exit_when_idle_s=0)
    topic = scenario.settings.input_topic
    events = [json.loads(v) for _, v in synthetic.generate_events(2 * 500, N_ENTITIES)]
    v1 = AvroSerializer(client, avro_schema())
    v2 = AvroSerializer(client, avro_schema(extra_field=True))
    worker = build_worker(scenario.settings)
    runner = threading.Thread(target=worker.run, daemon=True)
    runner.start()
    try:
        produce(scenario, [v1(e, context(topic)) for e in events[:500]])
        wait_for(lambda: worker.summary.events == 500, 60, "the first 500 events")
        second = [v2({**e, "channel": "app"}, context(topic)) for e in events[500:]]  # new id

        real_get_schema = client.get_schema

        def away(*args: Any, **kwargs: Any) -> Any:
            raise ConnectionError("registry unreachable (the test took it away)")

        client.get_schema = away
        produce(scenario, second)
        wait_for(
            lambda: worker.telemetry.registry.get_sample_value("streamserve_paused") == 1,
            30,
            "the worker to pause",
        )
        assert worker.summary.events == 500 and worker.summary.dead_letters == 0
        up = "streamserve_schema_registry_up"
        assert worker.telemetry.registry.get_sample_value(up) == 0
        client.get_schema = real_get_schema
        wait_for(lambda: worker.summary.events == 1_000, 60, "the rest once it is back")
        assert worker.telemetry.registry.get_sample_value(up) == 1
    finally:
        worker.stop()
        runner.join(60)
    assert worker.summary.dead_letters == 0
    predictions, _ = scenario.outputs(expected=1_000)
    assert {value_json(m)["event_id"] for m in predictions} == {e["event_id"] for e in events}
    report = audited(scenario)
    assert (report.events, report.lost, report.duplicated, report.dead_letters) == (1_000, 0, 0, 0)


def test_a_registry_unreachable_at_start_up_stops_the_worker_with_exit_7(
    scenario: Scenario,
) -> None:
    env = {
        **scenario.env(),
        "STREAMSERVE_INPUT_FORMAT": "avro",
        "STREAMSERVE_SCHEMA_REGISTRY_URL": f"http://127.0.0.1:{free_port()}",
    }
    result = run("worker", env=env, timeout=60)
    assert result.returncode == 7, result.stderr
    assert "Schema Registry unreachable" in result.stderr


def test_predictions_written_in_avro_read_back_with_confluent_kafkas_deserializer(
    scenario: Scenario,
) -> None:
    url = f"mock://{uuid.uuid4().hex}"
    scenario = scenario.with_settings(output_format="avro", schema_registry_url=url)
    client = registry_client({"url": url})
    scenario.load_features(N_ENTITIES, skip_every=0)
    values = scenario.preload(500, N_ENTITIES)

    summary = build_worker(scenario.settings).run()

    assert summary.predictions == 500
    predictions, _ = scenario.outputs(expected=500)
    deserialize = AvroDeserializer(client)
    topic = scenario.settings.predictions_topic
    read = [deserialize(m.value(), context(topic)) for m in predictions]
    assert {p["event_id"] for p in read} == {json.loads(v)["event_id"] for v in values}
    assert all(p["model_name"] == "fraud-demo" and 0 <= p["score"] <= 1 for p in read)
    subjects = client.get_subjects()
    assert f"{topic}-value" in subjects
    s = scenario.settings
    schemas = RegistrySchemas(client, "avro")
    report = audit(Cluster.of(s), s.input_topic, topic, s.dead_letter_topic, 30, schemas)
    assert (report.events, report.predictions, report.lost, report.duplicated) == (500, 500, 0, 0)
