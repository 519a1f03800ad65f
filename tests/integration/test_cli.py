"""End-to-end runs of the `streamserve` command, as an operator would run it."""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path

from confluent_kafka import Producer

from streamserve.io.kafka import Cluster
from streamserve.tools.audit import read_topics, source_of
from streamserve_loadgen.world import synthetic
from streamserve_loadgen.world.embedded import free_port
from tests.integration.conftest import Scenario, wait_for
from tests.integration.helpers import Worker, produce_steadily, run


def test_an_invalid_setting_stops_start_up_naming_the_variable(bundle_dir: Path) -> None:
    result = run(
        "worker", env={"STREAMSERVE_MAX_BATCH_SIZE": "0", "STREAMSERVE_MODEL_DIR": str(bundle_dir)}
    )
    assert result.returncode == 2
    assert "STREAMSERVE_MAX_BATCH_SIZE='0': Input should be greater than or equal to 1" in (
        result.stderr
    )


def test_settings_that_used_to_fail_later_stop_start_up_naming_the_variable(
    bundle_dir: Path,
) -> None:
    base = {"STREAMSERVE_MODEL_DIR": str(bundle_dir)}
    refused = {
        "STREAMSERVE_REDIS_URL": {"STREAMSERVE_REDIS_URL": "http://127.0.0.1:1/0"},
        "STREAMSERVE_KAFKA_BOOTSTRAP": {"STREAMSERVE_KAFKA_BOOTSTRAP": ""},
        "STREAMSERVE_DEAD_LETTER_TOPIC": {"STREAMSERVE_DEAD_LETTER_TOPIC": "events"},
        "STREAMSERVE_RDKAFKA_PRODUCER_LINGER_MS": {"STREAMSERVE_RDKAFKA_PRODUCER_LINGER_MS": "x"},
    }
    for var, env in refused.items():
        for command in ("worker", "config"):
            result = run(command, env={**base, **env})
            assert (result.returncode, "Traceback" in result.stderr) == (2, False), result.stderr
            assert var in result.stderr


def test_config_prints_the_effective_settings_with_secrets_masked() -> None:
    result = run(
        "config",
        env={
            "STREAMSERVE_REDIS_URL": "redis://:pw@127.0.0.1:1/0",
            "STREAMSERVE_MAX_WAIT_MS": "7.5",
        },
    )
    assert result.returncode == 0
    assert "STREAMSERVE_MAX_WAIT_MS=7.5" in result.stdout.splitlines()
    assert "STREAMSERVE_REDIS_URL=redis://:****@127.0.0.1:1/0" in result.stdout.splitlines()
    assert "pw@" not in result.stdout


def test_a_worker_without_a_model_or_with_a_bad_one_refuses_to_start(tmp_path: Path) -> None:
    result = run("worker", env={})
    assert result.returncode == 2 and "STREAMSERVE_MODEL_DIR is not set" in result.stderr
    (tmp_path / "manifest.json").write_text('{"name": "x", "version": "1", "features": []}')
    result = run("worker", env={"STREAMSERVE_MODEL_DIR": str(tmp_path)})
    assert result.returncode == 3 and "manifest lists no features" in result.stderr


def test_an_unreachable_feature_store_stops_start_up(bundle_dir: Path) -> None:
    env = {
        "STREAMSERVE_MODEL_DIR": str(bundle_dir),
        "STREAMSERVE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "STREAMSERVE_REDIS_TIMEOUT_S": "1",
    }
    result = run("worker", env=env)
    assert result.returncode == 4 and "feature store unreachable" in result.stderr


def test_a_down_broker_or_a_missing_topic_stops_start_up_with_a_clear_error(
    scenario: Scenario,
) -> None:
    scenario.load_features(10, skip_every=0)
    down = {**scenario.env(), "STREAMSERVE_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"}
    result = run("worker", env=down, timeout=60)
    assert result.returncode == 5 and "cannot reach the Kafka cluster" in result.stderr

    no_topics = {**scenario.env(), "STREAMSERVE_CREATE_TOPICS": "false"}
    result = run("worker", env=no_topics, timeout=60)
    assert result.returncode == 5
    assert f"{scenario.settings.input_topic}" in result.stderr
    assert "STREAMSERVE_CREATE_TOPICS is false" in result.stderr


def test_sigterm_during_load_then_restart_loses_nothing(scenario: Scenario) -> None:
    n_events = 30_000
    scenario = scenario.with_settings(max_batch_size=100, exit_when_idle_s=0.0)
    scenario.load_features(1_000, skip_every=20)
    events = list(synthetic.generate_events(n_events, 1_000, malformed_every=500))
    settings = scenario.settings
    outputs = [settings.predictions_topic, settings.dead_letter_topic]

    first = Worker(scenario.env())
    first.wait_ready()
    producer = threading.Thread(target=produce_steadily, args=(scenario, events, 10_000))
    producer.start()
    wait_for(
        lambda: read_topics(Cluster.of(settings), outputs, 1, 2, 0)[outputs[0]],
        timeout_s=60,
        what="the first worker's first predictions",
    )
    done_first = first.stop()["events"]
    producer.join()
    assert 0 < done_first < n_events, "SIGTERM must land mid-run for this test to mean anything"

    second = run("worker", env={**scenario.env(), "STREAMSERVE_EXIT_WHEN_IDLE_S": "2"}, timeout=120)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["events"] == n_events - done_first

    found = read_topics(Cluster.of(settings), outputs, n_events, idle_s=1.0)
    sources = Counter(source_of(m) for topic in outputs for m in found[topic])
    assert len(sources) == n_events  # every input has an outcome: nothing lost
    assert max(sources.values()) == 1  # a graceful stop commits what it finished: no duplicates


def test_demo_command_accounts_for_every_event() -> None:
    result = run(
        "demo",
        "--seconds",
        "3",
        "--start-rate",
        "500",
        "--peak-rate",
        "1500",
        "--entities",
        "200",
        "--trees",
        "20",
        env={},
        timeout=180,
        command="streamserve_loadgen",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["events"] == 3000 and summary["lost"] == 0  # (500 + 1500) / 2 * 3 s
    assert summary["dead_letters"] == 30 and summary["scored"] == 2970
    assert 0 < summary["p50_ms"] <= summary["p99_ms"]
    assert "latency p50 / p99" in result.stderr  # the live view was drawn


def test_audit_reconciles_inputs_with_outcomes_and_fails_on_loss(scenario: Scenario) -> None:
    scenario.load_features(200, skip_every=0)
    scenario.preload(2_000, 200, malformed_every=100)
    assert run("worker", env=scenario.env(), timeout=120).returncode == 0
    settings = scenario.settings
    found = read_topics(Cluster.of(settings), [settings.predictions_topic], 1_980, idle_s=0.5)
    replayed = found[settings.predictions_topic][0]  # a redelivered prediction: a duplicate
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    producer.produce(
        settings.predictions_topic, replayed.value(), replayed.key(), headers=replayed.headers()
    )
    producer.flush(10)

    clean = json.loads(run("audit", "--json", env=scenario.env()).stdout)
    assert clean["events"] == 2_000
    assert (clean["predictions"], clean["dead_letters"]) == (1_981, 20)
    assert (clean["lost"], clean["duplicated"], clean["extra_outputs"]) == (0, 1, 1)
    assert sum(clean["dead_letters_by_class"].values()) == 20

    scenario.preload(3, 200)  # nobody scores these
    after = run("audit", env=scenario.env())
    assert after.returncode == 1
    assert "lost          3" in after.stdout and "FAILED" in after.stdout


def test_audit_and_lag_take_the_librdkafka_security_settings(scenario: Scenario) -> None:
    scenario.preload(10, 10)
    env = scenario.env()
    assert json.loads(run("audit", "--json", env=env).stdout)["events"] == 10  # read the input
    assert json.loads(run("lag", "--json", env=env).stdout)["total_lag"] == 10  # nobody scored them
    # SASL without credentials: librdkafka refuses the reader before it connects. Before the
    # readers were built in io/kafka.py, audit took the bootstrap address alone and went on.
    sasl = {
        **env,
        "STREAMSERVE_RDKAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "STREAMSERVE_RDKAFKA_SASL_MECHANISM": "PLAIN",
    }
    for tool in ("audit", "lag"):
        refused = run(tool, env=sasl)
        assert refused.returncode == 2, (tool, refused.stderr)
        assert "sasl.username" in refused.stderr and "STREAMSERVE_RDKAFKA_" in refused.stderr
