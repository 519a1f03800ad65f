"""Where each prediction's time went: the stage histograms and the pipeline's stage times."""

import numpy as np
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streamserve.core.model import ModelBundle
from streamserve.telemetry.prometheus import Telemetry
from streamserve.telemetry.stages import StageHistograms, StageTimes
from streamserve_loadgen.world import synthetic
from tests.unit.fakes import FakeProducer, MemoryStore, Record, pipeline


def test_quantiles_of_a_whole_run_are_within_two_percent() -> None:
    histograms = StageHistograms()
    rng = np.random.default_rng(3)
    to_worker = rng.lognormal(mean=3.0, sigma=0.8, size=20_000)  # ms
    for chunk in np.array_split(to_worker, 200):
        times = StageTimes(chunk, np.zeros(len(chunk)), 0.4, 1.5, 0.2)
        histograms.add(times, ack_ms=55.0, predictions=len(chunk))
    got = histograms.quantiles()
    for name, q in (("p50", 50), ("p99", 99)):
        assert got["to_worker"][name] == pytest.approx(np.percentile(to_worker, q), rel=0.02)
    assert got["predict"] == {
        "p50": pytest.approx(1.5, rel=0.02),
        "p99": pytest.approx(1.5, rel=0.02),
    }
    assert got["ack"]["p99"] == pytest.approx(55.0, rel=0.02)
    assert got["window"]["p50"] <= 0.001  # no wait at all counts in the smallest bucket


def test_a_stage_never_seen_is_left_out_and_nan_is_not_counted() -> None:
    histograms = StageHistograms()
    times = StageTimes(np.array([np.nan, 5.0]), np.array([1.0, 1.0]), 0.1, 0.1, 0.1)
    histograms.add(times, ack_ms=None, predictions=2)
    got = histograms.quantiles()
    assert "ack" not in got
    assert got["to_worker"]["p99"] == pytest.approx(5.0, rel=0.02)


def test_each_prediction_gets_its_time_before_the_batch_and_the_batch_stages(
    bundle: ModelBundle,
) -> None:
    table = synthetic.entity_features(10)
    store = MemoryStore(
        {f"feat:{synthetic.entity_id(i)}": table[i] for i in range(10)}, table.shape[1]
    )
    pairs = list(synthetic.generate_events(30, 10, malformed_every=10))
    records = [Record(value, offset) for offset, (_, value) in enumerate(pairs)]  # stamped 1,000
    batches = pipeline(bundle, store, FakeProducer(), clock_ms=5_000)
    taken = [(20, 4_990.0), (10, 4_995.0)]  # two takes from the consumer
    batch = batches.open(records, "idle", taken)
    predicted = batches.score_here(batch)
    assert predicted is not None
    sent = batches.send(batch, predicted)
    stages, predictions = sent.stats.stages, len(sent.stats.outputs.predictions)
    assert predictions == 27 and len(stages.to_worker_ms) == len(stages.window_ms) == 27
    assert sorted(set(stages.to_worker_ms.tolist())) == [3_990.0, 3_995.0]
    assert sorted(set(stages.window_ms.tolist())) == [5.0, 10.0]
    assert (stages.window_ms == 10.0).sum() == 18  # 2 of the first 20 records were malformed
    assert stages.lookup_ms == sent.stats.lookup_ms and stages.predict_ms == sent.stats.predict_ms


def test_prometheus_counts_each_stage_once_per_prediction() -> None:
    telemetry = Telemetry("m", "1")
    times = StageTimes(np.array([30.0, 40.0]), np.array([0.1, 0.2]), 0.5, 1.0, 0.3)
    telemetry.record_stages(times, ack_ms=55.0, predictions=2)
    telemetry.record_stages(times, ack_ms=None, predictions=2)  # acknowledgement not timed
    text = generate_latest(telemetry.registry).decode()
    counts, sums = {}, {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "streamserve_stage_seconds_count":
                counts[sample.labels["stage"]] = sample.value
            if sample.name == "streamserve_stage_seconds_sum":
                sums[sample.labels["stage"]] = sample.value
    assert counts == {
        "to_worker": 4,
        "window": 4,
        "lookup": 4,
        "predict": 4,
        "handling": 4,
        "ack": 2,
    }
    assert sums["to_worker"] == pytest.approx(0.14) and sums["ack"] == pytest.approx(0.11)
    assert sums["lookup"] == pytest.approx(0.002)  # 0.5 ms for each of 4 predictions
