"""The pure pipeline with an in-memory store: no broker, no Redis."""

from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np
import pytest

from streamserve import synthetic
from streamserve.core import records as rec
from streamserve.core.batch import BatchScorer
from streamserve.core.features import StoreRows
from streamserve.core.model import ModelBundle
from tests.conftest import is_scorable, offline_scores


@dataclass
class Record:
    """Satisfies the core's SourceRecord protocol like a confluent_kafka.Message."""

    _value: bytes | None
    _offset: int
    _key: bytes | None = b"k"
    _timestamp: int = 1_000

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def topic(self) -> str:
        return "events"

    def partition(self) -> int:
        return 3

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return (1, self._timestamp)

    def headers(self) -> list[tuple[str, bytes]]:
        return [("trace", b"t-1")]


class MemoryStore:
    def __init__(self, rows: dict[str, np.ndarray], width: int) -> None:
        self.rows, self.width, self.calls = rows, width, []

    def fetch(self, keys: list[str]) -> StoreRows:
        self.calls.append(keys)
        rows = np.full((len(keys), self.width), np.nan, dtype=np.float32)
        for i, key in enumerate(keys):
            if key in self.rows:
                rows[i] = self.rows[key]
        return StoreRows(rows)


@pytest.fixture
def world() -> tuple[list[Record], MemoryStore, dict[str, np.ndarray]]:
    table = synthetic.entity_features(30)
    by_entity = {synthetic.entity_id(i): table[i] for i in range(30) if i % 3}  # every 3rd absent
    store = MemoryStore({f"feat:{e}": row for e, row in by_entity.items()}, table.shape[1])
    pairs = list(synthetic.generate_events(400, 40, malformed_every=50))
    records = [Record(value, offset) for offset, (_, value) in enumerate(pairs)]
    return records, store, by_entity


def test_scores_equal_offline_booster_predict(bundle: ModelBundle, bundle_dir: Path, world) -> None:
    records, store, by_entity = world
    scored = BatchScorer(bundle).score(records, store, clock_ms=lambda: 5_000, batch_id="b1")
    good = [r.value() for r in records if is_scorable(r.value())]
    expected = offline_scores(bundle_dir, good, by_entity)
    got = {}
    for out in scored.predictions:
        prediction = msgspec.json.decode(out.value, type=rec.Prediction)
        got[prediction.event_id] = prediction.score
        assert out.key == str(prediction.entity_id).encode()
        assert prediction.latency_ms == 4_000
    assert got.keys() == expected.keys()
    np.testing.assert_allclose([got[k] for k in expected], list(expected.values()), rtol=1e-6)


def test_one_store_fetch_per_batch_with_distinct_keys(bundle: ModelBundle, world) -> None:
    records, store, _ = world
    BatchScorer(bundle).score(records, store, clock_ms=lambda: 0, batch_id="b")
    assert len(store.calls) == 1
    assert len(store.calls[0]) == len(set(store.calls[0])) <= 40


def test_every_record_is_a_prediction_or_a_dead_letter(bundle: ModelBundle, world) -> None:
    records, store, _ = world
    scored = BatchScorer(bundle).score(records, store, clock_ms=lambda: 0, batch_id="b7")
    offsets = [int(dict(o.headers)[rec.HEADER_SOURCE_OFFSET]) for o in scored.predictions]
    offsets += [int(dict(o.headers)[rec.HEADER_SOURCE_OFFSET]) for o in scored.dead_letters]
    assert sorted(offsets) == list(range(len(records)))
    assert len(scored.dead_letters) == 8
    assert set(scored.dead_letter_classes) == set(synthetic.MALFORMED_KINDS)


def test_dead_letters_keep_the_original_bytes_and_say_why(bundle: ModelBundle, world) -> None:
    records, store, _ = world
    scored = BatchScorer(bundle).score(records, store, clock_ms=lambda: 0, batch_id="b9")
    for out in scored.dead_letters:
        headers = dict(out.headers)
        source = records[int(headers[rec.HEADER_SOURCE_OFFSET])]
        assert (out.key, out.value) == (source.key(), source.value())
        assert headers["trace"] == b"t-1"  # the producer's own headers survive
        assert headers[rec.HEADER_ERROR_CLASS] in synthetic.MALFORMED_KINDS
        assert headers[rec.HEADER_ERROR_REASON]
        assert headers[rec.HEADER_BATCH_ID] == "b9"
        assert headers[rec.HEADER_SOURCE_PARTITION] == "3"


def test_missing_store_features_are_nan_and_counted(bundle: ModelBundle, world) -> None:
    records, store, by_entity = world
    scored = BatchScorer(bundle).score(records, store, clock_ms=lambda: 0, batch_id="b")
    n_store = len(synthetic.STORE_FEATURES)
    for out in scored.predictions:
        prediction = msgspec.json.decode(out.value, type=rec.Prediction)
        absent = prediction.entity_id not in by_entity
        assert prediction.missing_features == (n_store if absent else 0)
    store_counts = [scored.missing_by_feature.get(name, 0) for name in synthetic.STORE_FEATURES]
    absent_events = sum(
        msgspec.json.decode(o.value, type=rec.Prediction).entity_id not in by_entity
        for o in scored.predictions
    )
    assert absent_events > 0
    assert store_counts == [absent_events] * n_store
    assert scored.store_misses == sum(1 for k in store.calls[0] if k[5:] not in by_entity)
