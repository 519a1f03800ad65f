"""Operating workers: the HTTP endpoint (/metrics, /healthz, /readyz) and `--processes N`."""

from __future__ import annotations

import contextlib
import json
import signal
from collections.abc import Iterator
from pathlib import Path

from streamserve.core.model import read_manifest
from streamserve_loadgen.world import synthetic
from streamserve_loadgen.world.embedded import free_port, free_ports, start_stack
from tests.integration.conftest import Scenario, wait_for
from tests.integration.helpers import (
    StderrLines,
    Worker,
    audited,
    get,
    produce_steadily,
    run,
    scrape,
    streamserve,
)


def endpoint_env(scenario: Scenario, port: int) -> dict[str, str]:
    """A worker serving HTTP on a loopback ``port``, running until SIGTERM."""
    return {
        **scenario.env(),
        "STREAMSERVE_HTTP_PORT": str(port),
        "STREAMSERVE_HTTP_HOST": "127.0.0.1",
        "STREAMSERVE_EXIT_WHEN_IDLE_S": "0",
    }


@contextlib.contextmanager
def worker_with_endpoint(scenario: Scenario) -> Iterator[tuple[int, StderrLines]]:
    """A `streamserve worker` serving HTTP on a free loopback port; SIGTERM at the end must
    give exit 0."""
    port = free_port()
    proc = streamserve("worker", env=endpoint_env(scenario, port))
    logs = StderrLines(proc)
    try:
        yield port, logs
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode == 0, logs.text()


def lags(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> list[float]:
    """The lag gauge of each partition, in partition order."""
    series = {
        dict(labels)["partition"]: v
        for (name, labels), v in metrics.items()
        if name == "streamserve_consumer_lag_records"
    }
    return [series[p] for p in sorted(series)]


def handled(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
    return sum(v for (name, _), v in metrics.items() if name == "streamserve_events_total")


def test_http_endpoint_reports_what_the_worker_did(scenario: Scenario) -> None:
    scenario.load_features(2_000, skip_every=0)
    scenario.preload(3_000, 2_000, malformed_every=50)
    with worker_with_endpoint(scenario) as (port, logs):
        wait_for(lambda: get(port, "/readyz")[0] == 200, 30, f"/readyz 200; {logs.text()}")
        wait_for(lambda: handled(scrape(port)) == 3_000, 60, "every event counted")
        wait_for(lambda: lags(scrape(port)) == [0, 0, 0, 0], 10, "lag 0 on 4 partitions")
        metrics = scrape(port)
        predictions = metrics["streamserve_events_total", (("outcome", "prediction"),)]
        dead = metrics["streamserve_events_total", (("outcome", "dead_letter"),)]
        assert dead == 60 and predictions == 2_940
        by_class = sum(v for (n, _), v in metrics.items() if n == "streamserve_dead_letters_total")
        assert by_class == dead
        assert metrics["streamserve_batch_size_sum", ()] == 3_000
        assert metrics["streamserve_end_to_end_latency_seconds_count", ()] == predictions
        assert metrics["streamserve_assigned_partitions", ()] == 4
        manifest = read_manifest(scenario.bundle_dir)
        info = ("name", manifest.name), ("version", manifest.version)
        assert metrics["streamserve_model_info", info] == 1
        assert metrics["streamserve_feature_store_up", ()] == 1
        status, body = get(port, "/healthz")
        assert status == 200 and json.loads(body)["ok"] is True
        status, body = get(port, "/readyz")
        assert json.loads(body)["assigned_partitions"] == 4
        assert get(port, "/nope")[0] == 404


def test_a_feature_store_outage_leaves_the_worker_ready_and_alive_and_says_so(
    scenario: Scenario, tmp_path: Path
) -> None:
    with start_stack(scenario.stack.kafka_bootstrap, workdir=tmp_path / "redis") as own:
        scenario = scenario.with_settings(redis_url=own.redis_url)
        scenario.load_features(500, skip_every=0)
        with worker_with_endpoint(scenario) as (port, logs):
            wait_for(lambda: get(port, "/readyz")[0] == 200, 30, f"ready; {logs.text()}")
            own.stop_redis()
            events = list(synthetic.generate_events(2_000, 500))
            produce_steadily(scenario, events, 1_000)  # lookups fail: the circuit opens
            wait_for(lambda: scrape(port)["streamserve_paused", ()] == 1, 20, "paused")
            status, body = get(port, "/readyz")
            state = json.loads(body)
            assert status == 200 and state["feature_store_reachable"] is False
            assert scrape(port)["streamserve_feature_store_up", ()] == 0
            assert get(port, "/healthz")[0] == 200  # alive: waiting for Redis is not a hang
            own.restart_redis()
            wait_for(lambda: handled(scrape(port)) == 2_000, 60, "every event handled")
            assert json.loads(get(port, "/readyz")[1])["feature_store_reachable"] is True


def test_a_replica_without_partitions_is_ready(scenario: Scenario) -> None:
    """Two replicas, one partition: a rolling update must not wait for the surplus one."""
    scenario = scenario.with_settings(topic_partitions=1)
    scenario.load_features(100, skip_every=0)
    workers = [Worker(endpoint_env(scenario, free_port())) for _ in range(2)]
    try:
        for worker in workers:
            worker.wait_ready()
        states = [worker.readiness() for worker in workers]
        assert sorted(int(str(state["assigned_partitions"])) for state in states) == [0, 1]
        assert all(state["joined_group"] is True for state in states)
        for worker in workers:
            worker.stop()
    finally:
        for worker in workers:
            worker.proc.kill()


def test_two_processes_share_the_partitions_and_stop_together(scenario: Scenario) -> None:
    scenario.load_features(2_000, skip_every=0)
    scenario.preload(4_000, 2_000)
    base = free_ports((0, 1))
    env = endpoint_env(scenario, base)
    proc = streamserve("worker", "--processes", "2", env=env)
    logs = StderrLines(proc)
    ports = [base, base + 1]
    try:
        wait_for(
            lambda: sum(handled(scrape(p)) for p in ports) >= 4_000,
            90,
            f"4,000 events handled by the two processes; {logs.text()}",
        )
        assigned = [scrape(p)["streamserve_assigned_partitions", ()] for p in ports]
        assert assigned == [2, 2], assigned
        assert all(handled(scrape(p)) > 0 for p in ports)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, logs.text()
    summaries = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert len(summaries) == 2 and all(s["events"] > 0 for s in summaries)
    report = audited(scenario)
    assert report.events == 4_000 and report.lost == 0, report.render()


def test_lag_reports_committed_offsets_against_the_log_end(scenario: Scenario) -> None:
    scenario.load_features(500, skip_every=0)
    scenario.preload(2_000, 500)
    env = scenario.env()
    fresh = json.loads(run("lag", "--json", env=env).stdout)
    assert fresh["total_lag"] == 2_000  # nothing committed: all of it is still to read
    assert all(p["committed"] is None for p in fresh["partitions"])
    assert sum(p["log_end"] for p in fresh["partitions"]) == 2_000

    worker = run("worker", "--max-events", "1200", env={**env, "STREAMSERVE_MAX_BATCH_SIZE": "100"})
    assert worker.returncode == 0, worker.stderr
    handled = json.loads(worker.stdout)["events"]
    assert 1_200 <= handled < 2_000
    after = json.loads(run("lag", "--json", env=env).stdout)
    committed = sum(p["committed"] or 0 for p in after["partitions"])
    assert committed == handled and after["total_lag"] == 2_000 - handled
    assert {p["partition"] for p in after["partitions"]} == {0, 1, 2, 3}

    table = run("lag", env=env)
    assert table.returncode == 0 and f"total lag {2_000 - handled:,}" in table.stdout
    assert run("lag", "--max-lag", "0", env=env).returncode == 1
    assert run("lag", "--max-lag", "2000", env=env).returncode == 0
    missing = run("lag", "--topic", f"no-such-{scenario.uid}", env=env)
    assert missing.returncode == 5 and "does not exist" in missing.stderr


def test_json_logs_have_a_banner_the_assignment_and_batch_stats(scenario: Scenario) -> None:
    scenario.load_features(100, skip_every=0)
    scenario.preload(300, 100)
    env = {**scenario.env(), "STREAMSERVE_LOG_FORMAT": "json", "STREAMSERVE_LOG_LEVEL": "DEBUG"}
    result = run("worker", env=env)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert lines and len(lines) == len(result.stderr.splitlines()), result.stderr[-2000:]
    banner = next(line for line in lines if "starting" in line["message"])
    assert banner["config"]["STREAMSERVE_INPUT_TOPIC"] == scenario.settings.input_topic
    assigned = [
        p for line in lines if line["message"].startswith("assigned") for p in line["partitions"]
    ]
    assert sorted(assigned) == [f"{scenario.settings.input_topic}[{p}]" for p in range(4)]
    batches = [line for line in lines if "batch_id" in line]
    assert sum(b["records"] for b in batches) == 300
    assert all(b["level"] == "DEBUG" and b["lookup_ms"] >= 0 for b in batches)


def test_json_logs_carry_librdkafkas_own_lines_and_the_fatal_one(scenario: Scenario) -> None:
    env = {
        **scenario.env(),
        "STREAMSERVE_LOG_FORMAT": "json",
        "STREAMSERVE_LOG_LEVEL": "DEBUG",
        "STREAMSERVE_RDKAFKA_CONSUMER_DEBUG": "cgrp",  # librdkafka logs its group protocol
    }
    result = run("worker", env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(line) for line in result.stderr.splitlines()]  # every one is JSON
    librdkafka = [line for line in lines if line["logger"] == "streamserve.librdkafka"]
    assert any("JOIN" in line["message"] for line in librdkafka), result.stderr[-2000:]
    refused = run("worker", env={**env, "STREAMSERVE_MODEL_DIR": str(scenario.bundle_dir / "x")})
    assert refused.returncode == 3, refused.stderr  # the model bundle's exit code
    last = json.loads(refused.stderr.splitlines()[-1])
    assert last["level"] == "CRITICAL" and "is not a directory" in last["message"]
