"""The batch pipeline with fakes of the records, the store and the producer: no broker, no
Redis. What a downstream consumer would read from the output topics."""

from pathlib import Path

import msgspec
import numpy as np
import pytest

from streamserve.core import records as rec
from streamserve.core.model import ModelBundle
from streamserve.runtime.pipeline import SentBatch
from streamserve_loadgen.world import synthetic
from tests.conftest import is_scorable, offline_scores
from tests.unit.fakes import FakeProducer, MemoryStore, Record, pipeline


def run(bundle: ModelBundle, world, producer: FakeProducer | None = None) -> SentBatch:
    records, store, _ = world
    return pipeline(bundle, store, producer or FakeProducer()).run(records)


def on_topic(producer: FakeProducer, topic: str) -> list:
    return [p for p in producer.pending + producer.delivered if p.topic == topic]


@pytest.fixture
def world() -> tuple[list[Record], MemoryStore, dict[str, np.ndarray]]:
    table = synthetic.entity_features(30)
    by_entity = {synthetic.entity_id(i): table[i] for i in range(30) if i % 3}  # every 3rd absent
    store = MemoryStore({f"feat:{e}": row for e, row in by_entity.items()}, table.shape[1])
    pairs = list(synthetic.generate_events(400, 40, malformed_every=50))
    records = [Record(value, offset) for offset, (_, value) in enumerate(pairs)]
    return records, store, by_entity


def test_scores_equal_offline_booster_predict(bundle: ModelBundle, bundle_dir: Path, world) -> None:
    records, _, by_entity = world
    producer = FakeProducer(auto_ack=False)
    run(bundle, world, producer)
    good = [r.value() for r in records if is_scorable(r.value())]
    expected = offline_scores(bundle_dir, good, by_entity)
    got = {}
    for out in on_topic(producer, "predictions"):
        prediction = msgspec.json.decode(out.value, type=rec.Prediction)
        got[prediction.event_id] = prediction.score
        assert out.key == str(prediction.entity_id).encode()
        assert out.headers is None  # provenance is in the value
        assert prediction.latency_ms == 4_000
        source = records[prediction.source_offset]
        assert (prediction.source_topic, prediction.source_partition) == ("events", 3)
        assert msgspec.json.decode(source.value())["event_id"] == prediction.event_id
        assert prediction.batch_id == "w-1388-1"  # worker, start (5,000 ms in hex), sequence
    assert got.keys() == expected.keys()
    np.testing.assert_allclose([got[k] for k in expected], list(expected.values()), rtol=1e-6)


def test_one_store_fetch_per_batch_with_distinct_keys(bundle: ModelBundle, world) -> None:
    _, store, _ = world
    run(bundle, world)
    assert len(store.calls) == 1
    assert len(store.calls[0]) == len(set(store.calls[0])) <= 40


def test_every_record_is_a_prediction_or_a_dead_letter(bundle: ModelBundle, world) -> None:
    records = world[0]
    producer = FakeProducer(auto_ack=False)
    sent = run(bundle, world, producer)
    predictions = on_topic(producer, "predictions")
    dead_letters = on_topic(producer, "dead-letters")
    offsets = [msgspec.json.decode(o.value, type=rec.Prediction).source_offset for o in predictions]
    offsets += [int(dict(o.headers)[rec.HEADER_SOURCE_OFFSET]) for o in dead_letters]
    assert sorted(offsets) == list(range(len(records)))
    assert len(dead_letters) == 8
    assert set(sent.stats.outputs.dead_letter_classes) == set(synthetic.MALFORMED_KINDS)
    assert sent.delivery.pending == len(records)  # nothing acknowledged yet
    producer.acknowledge(lambda _: True)
    assert sent.delivery.done and not sent.delivery.errors


def test_dead_letters_keep_the_original_bytes_and_say_why(bundle: ModelBundle, world) -> None:
    records = world[0]
    producer = FakeProducer(auto_ack=False)
    run(bundle, world, producer)
    for out in on_topic(producer, "dead-letters"):
        headers = dict(out.headers)
        source = records[int(headers[rec.HEADER_SOURCE_OFFSET])]
        assert (out.key, out.value) == (source.key(), source.value())
        assert headers["trace"] == b"t-1"  # the producer's own headers survive
        assert headers[rec.HEADER_ERROR_CLASS] in synthetic.MALFORMED_KINDS
        assert headers[rec.HEADER_ERROR_REASON]
        assert headers[rec.HEADER_BATCH_ID] == "w-1388-1"
        assert headers[rec.HEADER_SOURCE_PARTITION] == "3"
        # when and where it failed; the record keeps its own time (the fakes' clock: 5,000 ms)
        assert (headers[rec.HEADER_FAILED_AT], headers[rec.HEADER_WORKER_ID]) == ("5000", "w")
        assert out.timestamp_ms == source.timestamp()[1] == 1_000


def test_missing_store_features_are_nan_and_counted(bundle: ModelBundle, world) -> None:
    _, store, by_entity = world
    producer = FakeProducer(auto_ack=False)
    scored = run(bundle, world, producer).stats.outputs
    predictions = on_topic(producer, "predictions")
    n_store = len(synthetic.STORE_FEATURES)
    for out in predictions:
        prediction = msgspec.json.decode(out.value, type=rec.Prediction)
        absent = prediction.entity_id not in by_entity
        assert prediction.missing_features == (n_store if absent else 0)
    store_counts = [scored.missing_by_feature.get(name, 0) for name in synthetic.STORE_FEATURES]
    absent_events = sum(
        msgspec.json.decode(o.value, type=rec.Prediction).entity_id not in by_entity
        for o in predictions
    )
    assert absent_events > 0
    assert store_counts == [absent_events] * n_store
    assert scored.store_misses == sum(1 for k in store.calls[0] if k[5:] not in by_entity)


def test_a_full_producer_queue_is_waited_out_not_dropped(bundle: ModelBundle, world) -> None:
    producer = FakeProducer(auto_ack=False, queue_room=50)  # a poll with a full queue drains it
    sent = run(bundle, world, producer)
    assert len(on_topic(producer, "predictions")) == len(sent.stats.outputs.predictions) == 392
    producer.acknowledge(lambda _: True)
    assert sent.delivery.done and not sent.delivery.errors


def test_each_batch_gets_its_own_id_and_the_serving_model(bundle: ModelBundle, world) -> None:
    records, store, _ = world
    batches = pipeline(bundle, store, FakeProducer())
    first, second = batches.run(records[:10]), batches.run(records[10:20], trigger="time")
    assert (first.batch_id, second.batch_id) == ("w-1388-1", "w-1388-2")
    restarted = pipeline(bundle, store, FakeProducer(), clock_ms=6_000)  # the same worker id
    assert restarted.run(records[:10]).batch_id == "w-1770-1"
    assert (first.stats.trigger, second.stats.trigger) == ("size", "time")
    assert first.stats.model_name == bundle.name and first.stats.size == 10


def test_a_prediction_carries_its_events_time_its_schema_version_and_a_set_thresholds_decision(
    bundle: ModelBundle, world
) -> None:
    records = world[0]
    producer = FakeProducer(auto_ack=False)
    run(bundle, world, producer)
    for out in on_topic(producer, "predictions"):
        value = msgspec.json.decode(out.value)
        source = records[value["source_offset"]]
        assert value["event_time_ms"] == source.timestamp()[1] == value["scored_at_ms"] - 4_000
        assert value["schema_version"] == rec.PREDICTION_SCHEMA_VERSION
        assert "decision" not in value and "threshold" not in value  # the manifest sets none
    manifest = msgspec.structs.replace(bundle.manifest, decision_threshold=0.3)
    decided = FakeProducer(auto_ack=False)
    run(ModelBundle(manifest=manifest, booster=bundle.booster), world, decided)
    values = [msgspec.json.decode(o.value) for o in on_topic(decided, "predictions")]
    assert {v["threshold"] for v in values} == {0.3}
    assert all(v["decision"] is (v["score"] >= 0.3) for v in values)
    assert {v["decision"] for v in values} == {True, False}  # both occur in this batch
