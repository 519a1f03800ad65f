"""Models and features that change while a worker runs: hot reload, a shadow challenger, feature
freshness and the local feature cache, against the real embedded broker and Redis."""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb
from confluent_kafka import Message

from streamserve.core.model import read_manifest
from streamserve.core.predictors import MAX_SCORE_DIFF
from streamserve.io import store as store_io
from streamserve.io.kafka import Cluster
from streamserve.runtime.confluent import Worker
from streamserve.runtime.startup import build_worker
from streamserve.tools.audit import read_topics, source_of
from streamserve_loadgen.world import synthetic
from streamserve_loadgen.world.embedded import EmbeddedStack
from tests.conftest import TREES, is_scorable, offline_scores
from tests.integration.conftest import Scenario, make_scenario, value_json, wait_for

N_ENTITIES = 200
PREDICTORS = ["xgboost", "onedal"]


@pytest.fixture(params=PREDICTORS)
def predictor(request: pytest.FixtureRequest) -> str:
    """Each predictor a bundle can be scored with (oneDAL's only where its extra is installed)."""
    if request.param == "onedal":
        pytest.importorskip("daal4py", reason="streamserve[onedal] is not installed")
    return str(request.param)


def scored_with(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The worker's "model M V scores with P: reason" lines, in order."""
    return [r.getMessage() for r in caplog.records if " scores with " in r.getMessage()]


@pytest.fixture(scope="module")
def challenger_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another model of the same inputs: other trees, version 2."""
    path = tmp_path_factory.mktemp("challenger")
    synthetic.train_demo_model(path, trees=TREES // 2, rows=5_000, seed=99, version="2")
    return path


def same_store(bundle: Path, like: Path, into: Path) -> Path:
    """A copy of ``bundle`` whose manifest reads the store the way ``like``'s does."""
    shutil.copytree(bundle, into)
    manifest = json.loads((into / "manifest.json").read_text())
    manifest["store"] = json.loads((like / "manifest.json").read_text())["store"]
    (into / "manifest.json").write_text(json.dumps(manifest))
    return into


def assert_scored_by(
    bundle: Path, predictions: list[Message], values: list[bytes], stored: dict[str, np.ndarray]
) -> None:
    """Each prediction's score is ``bundle``'s offline predict of its event and ``stored`` row
    (every event of ``values`` has one: event ids repeat only with the same event)."""
    published = {value_json(m)["event_id"]: value_json(m)["score"] for m in predictions}
    expected = offline_scores(bundle, values, stored)
    assert published and published.keys() <= expected.keys()
    np.testing.assert_allclose(
        [published[k] for k in published],
        [expected[k] for k in published],
        rtol=0,
        atol=MAX_SCORE_DIFF,
    )


def reloads(worker: Worker, outcome: str) -> float:
    sample = "streamserve_model_reloads_total"
    return worker.telemetry.registry.get_sample_value(sample, {"outcome": outcome}) or 0.0


def test_a_new_bundle_takes_over_and_a_bad_one_is_rejected_without_losing_events(
    scenario: Scenario,
    challenger_dir: Path,
    tmp_path: Path,
    predictor: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The served directory is a symlink an operator switches: first to a broken bundle (the
    old model keeps serving), then to a good one (it takes over); every event is scored once,
    each by the model that was serving when its batch started, with the predictor asked for."""
    good = same_store(challenger_dir, scenario.bundle_dir, tmp_path / "v2")
    broken = same_store(challenger_dir, scenario.bundle_dir, tmp_path / "broken")
    (broken / "model.ubj").write_bytes(b"not a model")
    current = tmp_path / "current"
    current.symlink_to(scenario.bundle_dir)
    scenario = scenario.with_settings(
        model_dir=current, model_reload_s=0.1, exit_when_idle_s=0, predictor=predictor
    )
    stored = scenario.load_features(N_ENTITIES, skip_every=10)
    caplog.set_level(logging.INFO, logger="streamserve")
    worker = build_worker(scenario.settings)
    runner = threading.Thread(target=worker.run, daemon=True)
    runner.start()
    try:
        values = scenario.preload(400, N_ENTITIES)
        wait_for(lambda: worker.summary.events >= 400, 60, "the first model's events")
        switch(current, broken)
        wait_for(lambda: reloads(worker, "rejected") == 1, 30, "the broken bundle's rejection")
        scenario.preload(400, N_ENTITIES)
        wait_for(lambda: worker.summary.events >= 800, 60, "events after the rejection")
        switch(current, good)
        wait_for(lambda: reloads(worker, "loaded") == 1, 30, "the new bundle")
        scenario.preload(400, N_ENTITIES)
        wait_for(lambda: worker.summary.events >= 1_200, 60, "the new model's events")
    finally:
        worker.stop()
        runner.join(60)
    predictions, dead_letters = scenario.outputs(expected=1_200)
    assert not dead_letters
    assert len({source_of(m) for m in predictions}) == len(predictions) == 1_200
    by_version = Counter(value_json(m)["model_version"] for m in predictions)
    assert by_version == {"1": 800, "2": 400}
    by_new_model = [m for m in predictions if value_json(m)["model_version"] == "2"]
    assert_scored_by(good, by_new_model, values, stored)
    counted: Counter[str] = Counter()
    for record in scenario.metrics():
        counted.update(record["predictions_by_model_version"])
    assert counted == by_version
    assert scenario.metrics()[-1]["model_version"] == "2"
    lines = scored_with(caplog)
    assert len(lines) == 2 and lines[0].startswith("model fraud-demo 1 scores with ")
    assert all(f"scores with {predictor}: " in line for line in lines), lines
    assert lines[1].startswith("model fraud-demo 2 ")


def switch(link: Path, target: Path) -> None:
    """Point ``link`` at ``target`` atomically, as a deploy script would (rename over it)."""
    staged = link.with_name(link.name + ".new")
    staged.symlink_to(target)
    staged.replace(link)


def test_a_redis_pointer_key_selects_the_served_bundle(
    scenario: Scenario, challenger_dir: Path, tmp_path: Path
) -> None:
    good = same_store(challenger_dir, scenario.bundle_dir, tmp_path / "v2")
    key = f"test-{scenario.uid}:model"
    client = store_io.connect(scenario.settings.redis_url.get_secret_value())
    client.set(key, str(good))
    scenario = scenario.with_settings(model_pointer_key=key)
    scenario.load_features(N_ENTITIES, skip_every=10)
    scenario.preload(300, N_ENTITIES)
    build_worker(scenario.settings).run()
    predictions, _ = scenario.outputs(expected=300)
    assert {value_json(m)["model_version"] for m in predictions} == {"2"}


def test_a_challenger_scores_every_event_to_the_shadow_topic(
    scenario: Scenario,
    challenger_dir: Path,
    tmp_path: Path,
    predictor: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    challenger = same_store(challenger_dir, scenario.bundle_dir, tmp_path / "challenger")
    scenario = scenario.with_settings(shadow_model_dir=challenger, predictor=predictor)
    settings = scenario.settings
    stored = scenario.load_features(N_ENTITIES, skip_every=10)
    values = scenario.preload(1_000, N_ENTITIES, malformed_every=50)
    caplog.set_level(logging.INFO, logger="streamserve")
    summary = build_worker(scenario.settings).run()
    lines = scored_with(caplog)
    assert {line.split(" scores with ")[0] for line in lines} == {
        "model fraud-demo 1",
        "model fraud-demo 2",
    }
    assert all(f"scores with {predictor}: " in line for line in lines), lines
    predictions, dead_letters = scenario.outputs(expected=1_000)
    topic = settings.shadow_topic
    shadows = read_topics(Cluster.of(settings), [topic], len(predictions), idle_s=1.0)[topic]
    assert len(dead_letters) == 20 and len(predictions) == summary.predictions == 980
    # every prediction has one shadow twin with the same provenance, scored by the challenger
    provenance = ("source_topic", "source_partition", "source_offset", "batch_id")
    served = {tuple(value_json(m)[f] for f in provenance): m for m in predictions}
    shadowed = {tuple(value_json(m)[f] for f in provenance): m for m in shadows}
    assert served.keys() == shadowed.keys() and len(shadows) == 980
    assert {value_json(m)["model_version"] for m in shadows} == {"2"}
    good = [v for v in values if is_scorable(v)]
    assert_scored_by(challenger, shadows, good, stored)
    ours = offline_scores(scenario.bundle_dir, good, stored)
    theirs = offline_scores(challenger, good, stored)
    # the metrics compare the two models as an offline comparison does
    records = [r["shadow"] for r in scenario.metrics() if r["shadow"]]
    assert {r["model_version"] for r in records} == {"2"}
    assert sum(r["compared"] for r in records) == 980
    flips = sum((ours[k] >= 0.5) != (theirs[k] >= 0.5) for k in ours)
    assert flips > 0
    assert sum(r["decision_flips"] for r in records) == flips
    deltas = np.abs(np.array(list(theirs.values())) - np.array([ours[k] for k in theirs]))
    assert max(r["score_delta_max"] for r in records) == pytest.approx(deltas.max(), abs=1e-5)


def test_a_model_onedal_would_score_differently_is_served_by_xgboost_and_the_log_says_why(
    scenario: Scenario, caplog: pytest.LogCaptureFixture
) -> None:
    """A margin objective (oneDAL would answer probabilities): with the default predictor (auto)
    the worker keeps XGBoost's scores and names the reason."""
    pytest.importorskip("daal4py", reason="streamserve[onedal] is not installed")
    model_file = scenario.bundle_dir / "model.ubj"
    booster = xgb.Booster(model_file=str(model_file))
    booster.set_param({"objective": "binary:logitraw"})
    booster.save_model(str(model_file))
    stored = scenario.load_features(N_ENTITIES, skip_every=10)
    values = scenario.preload(300, N_ENTITIES)
    caplog.set_level(logging.INFO, logger="streamserve")
    build_worker(scenario.settings).run()
    predictions, _ = scenario.outputs(expected=300)
    [line] = scored_with(caplog)
    assert line.startswith(
        "model fraud-demo 1 scores with xgboost: oneDAL does not take this model: "
        "objective binary:logitraw"
    )
    assert_scored_by(scenario.bundle_dir, predictions, values, stored)
    assert any(value_json(m)["score"] < 0 for m in predictions)  # margins, not probabilities


def test_features_older_than_the_models_max_age_become_missing_and_are_counted(
    stack: EmbeddedStack, bundle_dir: Path, tmp_path: Path
) -> None:
    """`hash` layout with `_ts`: fresh entities keep their features; entities written an hour
    ago, or with no timestamp at all, are scored with those features missing."""
    scenario = make_scenario(stack, bundle_dir, tmp_path, layout="hash")
    manifest_path = scenario.bundle_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["store"]["max_age_s"] = 60
    manifest_path.write_text(json.dumps(manifest))
    store_manifest = read_manifest(scenario.bundle_dir)
    rows = synthetic.entity_features(N_ENTITIES)
    client = store_io.connect(scenario.settings.redis_url.get_secret_value())
    template = store_manifest.store.key_template
    now = time.time()
    fresh: dict[str, np.ndarray] = {}
    old: dict[str, np.ndarray] = {}
    untimed: dict[str, np.ndarray] = {}
    for i in range(N_ENTITIES):
        entity = synthetic.entity_id(i)
        group, written_at = [(fresh, now), (old, now - 3_600), (untimed, None)][i % 3]
        group[entity] = rows[i]
        store_io.write_features(
            client,
            store_manifest,
            [template.replace("{entity_id}", entity)],
            rows[i : i + 1],
            written_at=written_at,
        )
    values = scenario.preload(1_000, N_ENTITIES)
    build_worker(scenario.settings).run()
    predictions, _ = scenario.outputs(expected=1_000)
    n_store = len(synthetic.STORE_FEATURES)
    missing = {}
    for m in predictions:
        prediction = value_json(m)
        missing[prediction["entity_id"]] = prediction["missing_features"]
    assert {missing[e] for e in missing if e in fresh} == {0}
    assert {missing[e] for e in missing if e not in fresh} == {n_store}
    # scores are those of a model that never saw the stale values
    assert_scored_by(scenario.bundle_dir, predictions, values, fresh)
    metrics = scenario.metrics()
    stale = sum(r["store_stale"] for r in metrics)
    looked_up = sum(r["store_keys"] for r in metrics)
    assert 0.5 * looked_up < stale < looked_up  # about 2 of 3 entities, hot ones weigh more
    assert sum(r["store_misses"] for r in metrics) == 0  # stale is not absent
    ages = [r["feature_age"] for r in metrics if r["feature_age"]]
    assert max(a["max_s"] for a in ages) >= 3_600


def test_the_local_cache_answers_hot_entities_and_scores_stay_exact(scenario: Scenario) -> None:
    scenario = scenario.with_settings(feature_cache_ttl_s=60)
    stored = scenario.load_features(N_ENTITIES, skip_every=10)
    values = scenario.preload(3_000, N_ENTITIES)  # Zipf-skewed entities
    build_worker(scenario.settings).run()
    predictions, _ = scenario.outputs(expected=3_000)
    assert_scored_by(scenario.bundle_dir, predictions, values, stored)
    metrics = scenario.metrics()
    hits = sum(r["cache_hits"] for r in metrics)
    looked_up = sum(r["store_keys"] for r in metrics)
    distinct = len({json.loads(v)["entity_id"] for v in values})
    assert hits == looked_up - distinct  # each entity goes to Redis once, then the cache answers
    assert hits > 0
    for r in metrics:
        rate = r["cache_hit_rate"]
        assert rate == (round(r["cache_hits"] / r["store_keys"], 4) if r["store_keys"] else None)
