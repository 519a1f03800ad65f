"""The Faust runtime on the embedded broker: the same end-to-end assertions as the confluent one."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Producer

from streamserve.tools.audit import header_map, source_of
from streamserve_loadgen.world import synthetic
from tests.conftest import validator
from tests.integration.conftest import (
    Scenario,
    assert_scores_equal_offline_predict,
    inputs_of,
    value_json,
)
from tests.integration.helpers import audited, run

N_EVENTS, N_ENTITIES, SKIP_EVERY, MALFORMED_EVERY = 2_000, 300, 10, 50


def faust_env(scenario: Scenario) -> dict[str, str]:
    return {**scenario.env(), "STREAMSERVE_RUNTIME": "faust", "STREAMSERVE_EXIT_WHEN_IDLE_S": "3"}


def test_faust_runtime_scores_like_offline_predict_and_dead_letters_the_malformed(
    scenario: Scenario, tmp_path: Path
) -> None:
    stored = scenario.load_features(N_ENTITIES, SKIP_EVERY)
    values = scenario.preload(N_EVENTS, N_ENTITIES, MALFORMED_EVERY)
    workdir = tmp_path / "workdir"
    workdir.mkdir()

    result = run("worker", env=faust_env(scenario), timeout=120, cwd=workdir)

    assert result.returncode == 0, result.stderr[-3000:]
    assert list(workdir.iterdir()) == []  # a container's working directory may be read-only
    summary = json.loads(result.stdout.splitlines()[-1])
    report = audited(scenario)
    assert (report.events, report.lost, report.duplicated) == (N_EVENTS, 0, 0), report.render()
    assert (summary["predictions"], summary["dead_letters"]) == (
        report.predictions,
        report.dead_letters,
    )
    predictions, dead_letters = scenario.outputs(expected=N_EVENTS)
    assert_scores_equal_offline_predict(scenario, predictions, values, stored)
    for message in predictions[:200]:
        validator("prediction.schema.json").validate(value_json(message))
        assert message.headers() is None  # provenance travels in the value
    inputs = inputs_of(scenario, N_EVENTS)
    classes: Counter[str] = Counter()
    for message in dead_letters:
        headers = header_map(message)
        validator("dead-letter-headers.schema.json").validate(headers)
        original = inputs[source_of(message)]
        assert (message.key(), message.value() or b"") == (original.key(), original.value() or b"")
        classes[headers["streamserve-error-class"]] += 1
    per_kind = N_EVENTS // MALFORMED_EVERY // len(synthetic.MALFORMED_KINDS)
    assert classes == {kind: per_kind for kind in synthetic.MALFORMED_KINDS}
    metrics = scenario.metrics()
    assert sum(m["events_in"] for m in metrics) == N_EVENTS
    assert sum(m["dead_letters"] for m in metrics) == len(dead_letters)


@pytest.mark.parametrize("compression", ["lz4", "zstd", "gzip", "snappy"])
def test_faust_runtime_reads_compressed_input(scenario: Scenario, compression: str) -> None:
    stored = scenario.load_features(100, skip_every=0)
    events = list(synthetic.generate_events(500, 100))
    producer = Producer(
        {
            "bootstrap.servers": scenario.stack.kafka_bootstrap,
            "compression.type": compression,
            "linger.ms": 20,
        }
    )
    for key, value in events:
        producer.produce(scenario.settings.input_topic, value, key)
    assert producer.flush(30) == 0

    result = run("worker", env=faust_env(scenario), timeout=120)

    assert result.returncode == 0, result.stderr[-3000:]
    predictions, dead_letters = scenario.outputs(expected=500)
    assert len(predictions) == 500 and dead_letters == []
    assert_scores_equal_offline_predict(scenario, predictions, [v for _, v in events], stored)


def test_faust_runtime_stopped_mid_stream_commits_what_it_delivered(scenario: Scenario) -> None:
    scenario.load_features(N_ENTITIES, skip_every=0)
    scenario.preload(N_EVENTS, N_ENTITIES)

    first = run("worker", env={**faust_env(scenario), "STREAMSERVE_MAX_EVENTS": "500"}, timeout=120)
    second = run("worker", env=faust_env(scenario), timeout=120)

    assert first.returncode == 0 and second.returncode == 0, first.stderr[-3000:]
    handled = [json.loads(r.stdout.splitlines()[-1])["events"] for r in (first, second)]
    assert 500 <= handled[0] < N_EVENTS
    report = audited(scenario)
    assert (report.events, report.lost, report.duplicated) == (N_EVENTS, 0, 0), report.render()
    assert sum(handled) == N_EVENTS
