"""The worker against the real embedded broker and Redis: what a user of the topics sees."""

from __future__ import annotations

import logging
import socket
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from streamserve.runtime.identity import host_worker_id
from streamserve.runtime.startup import build_worker
from streamserve.tools.audit import header_map, source_of
from streamserve_loadgen.world import synthetic
from streamserve_loadgen.world.embedded import EmbeddedStack
from tests.conftest import is_scorable, offline_scores, validator
from tests.integration.conftest import (
    Scenario,
    assert_scores_equal_offline_predict,
    inputs_of,
    make_scenario,
    value_json,
)

N_EVENTS, N_ENTITIES, SKIP_EVERY, MALFORMED_EVERY = 4_000, 600, 10, 100


@pytest.fixture(scope="module")
def drained(stack: EmbeddedStack, bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """One worker drains a pre-loaded topic with bad events and entities without features."""
    scenario = make_scenario(stack, bundle_dir, tmp_path_factory.mktemp("s"), layout="vector")
    stored = scenario.load_features(N_ENTITIES, SKIP_EVERY)
    values = scenario.preload(N_EVENTS, N_ENTITIES, MALFORMED_EVERY)
    summary = build_worker(scenario.settings).run()
    predictions, dead_letters = scenario.outputs(expected=N_EVENTS)
    return scenario, stored, values, summary, predictions, dead_letters


def test_every_input_ends_as_exactly_one_prediction_or_dead_letter(drained) -> None:
    scenario, _, _, summary, predictions, dead_letters = drained
    sources = Counter(source_of(m) for m in predictions + dead_letters)
    inputs = inputs_of(scenario, N_EVENTS)
    assert len(inputs) == N_EVENTS
    assert set(sources) == set(inputs)  # nothing lost
    assert max(sources.values()) == 1  # nothing duplicated
    assert (summary.predictions, summary.dead_letters) == (len(predictions), len(dead_letters))


def test_published_scores_equal_offline_booster_predict(drained) -> None:
    scenario, stored, values, _, predictions, _ = drained
    good = [v for v in values if is_scorable(v)]
    expected = offline_scores(scenario.bundle_dir, good, stored)
    published = {}
    for message in predictions:
        record = value_json(message)
        published[record["event_id"]] = record["score"]
        assert message.key() == record["entity_id"].encode()
        assert record["model_name"] == "fraud-demo" and record["model_version"] == "1"
    assert published.keys() == expected.keys()
    np.testing.assert_allclose(
        [published[k] for k in expected], list(expected.values()), rtol=1e-6, atol=1e-7
    )


def test_malformed_events_are_dead_letters_with_original_bytes_and_reason(drained) -> None:
    scenario, _, _, _, _, dead_letters = drained
    inputs = inputs_of(scenario, N_EVENTS)
    classes: Counter[str] = Counter()
    for message in dead_letters:
        headers = header_map(message)
        validator("dead-letter-headers.schema.json").validate(headers)
        original = inputs[source_of(message)]
        assert (message.key(), message.value() or b"") == (original.key(), original.value() or b"")
        assert headers["streamserve-error-reason"]
        classes[headers["streamserve-error-class"]] += 1
    per_kind = N_EVENTS // MALFORMED_EVERY // len(synthetic.MALFORMED_KINDS)
    assert classes == {kind: per_kind for kind in synthetic.MALFORMED_KINDS}


def test_missing_features_score_as_nan_and_are_counted(drained) -> None:
    scenario, stored, _, _, predictions, _ = drained
    n_store = len(synthetic.STORE_FEATURES)
    absent = 0
    for message in predictions:
        record = value_json(message)
        validator("prediction.schema.json").validate(record)
        assert message.headers() is None  # provenance travels in the value
        is_absent = record["entity_id"] not in stored
        absent += is_absent
        assert record["missing_features"] == (n_store if is_absent else 0)
    assert absent > 0
    metrics = scenario.metrics()
    counted: Counter[str] = Counter()
    for record in metrics:
        validator("metrics.schema.json").validate(record)
        counted.update(record["missing_features"])
    assert counted == {name: absent for name in synthetic.STORE_FEATURES}


def test_metrics_records_account_for_the_run(drained) -> None:
    scenario, _, _, _, predictions, dead_letters = drained
    metrics = scenario.metrics()
    assert sum(r["events_in"] for r in metrics) == N_EVENTS
    assert sum(r["predictions_out"] for r in metrics) == len(predictions)
    assert sum(r["dead_letters"] for r in metrics) == len(dead_letters)
    busy = [r for r in metrics if r["events_in"]]
    assert all(
        r["latency"]["p50_ms"] <= r["latency"]["p99_ms"] <= r["latency"]["max_ms"] for r in busy
    )
    assert all(r["lookup"]["total_ms"] > 0 and r["predict"]["total_ms"] > 0 for r in busy)
    # no STREAMSERVE_WORKER_ID: <hostname>-<slot>, the slot this process took for the group
    (worker_id,) = {r["worker_id"] for r in metrics}
    assert worker_id == host_worker_id(scenario.settings.group_id)
    assert worker_id == f"{socket.gethostname()}-0"  # the group's first worker on this host


def test_hash_layout_scores_equal_offline_predict(
    stack: EmbeddedStack, bundle_dir: Path, tmp_path: Path
) -> None:
    scenario = make_scenario(stack, bundle_dir, tmp_path, layout="hash")
    stored = scenario.load_features(200, skip_every=7)
    values = scenario.preload(1_000, 200)
    build_worker(scenario.settings).run()
    predictions, dead_letters = scenario.outputs(expected=1_000)
    assert dead_letters == []
    assert_scores_equal_offline_predict(scenario, predictions, values, stored)


def test_a_worker_waiting_for_commits_hears_them_without_pausing(
    scenario: Scenario, caplog: pytest.LogCaptureFixture
) -> None:
    """With one event's offsets allowed to wait, every full batch waits for a commit's report,
    which only a call to the consumer serves: the loop keeps calling it, so it never holds
    long enough to pause its partitions (a pause costs a second of fetching)."""
    scenario = scenario.with_settings(max_batch_size=50, commit_every_events=1)
    scenario.load_features(50, skip_every=0)
    scenario.preload(2_000, 50)
    with caplog.at_level(logging.INFO, logger="streamserve"):
        summary = build_worker(scenario.settings).run()
    predictions, dead_letters = scenario.outputs(expected=2_000)
    assert len(predictions) + len(dead_letters) == summary.events == 2_000
    assert [r.getMessage() for r in caplog.records if "paused" in r.getMessage()] == []


def test_full_batches_close_by_size_and_the_tail_at_once(scenario: Scenario) -> None:
    """A backlog fills batches to max_batch_size; the last 50 events are scored as soon as the
    scoring stage is free (trigger ``idle``), not after the 300 ms window."""
    scenario = scenario.with_settings(max_batch_size=100, max_wait_ms=300.0)
    scenario.load_features(50, skip_every=0)
    scenario.preload(1_050, 50)
    summary = build_worker(scenario.settings).run()
    predictions, _ = scenario.outputs(expected=1_050)
    sizes = Counter(value_json(m)["batch_id"] for m in predictions)
    assert max(sizes.values()) == 100  # no batch grows past max_batch_size
    triggers: Counter[str] = Counter()
    for record in scenario.metrics():
        triggers.update(record["batches_by_trigger"])
    assert triggers["size"] >= 1 and triggers["idle"] >= 1
    assert triggers["time"] == 0  # the stage was never busy for 300 ms
    assert triggers == Counter(summary.triggers)
    assert sum(sizes.values()) == 1_050
