import numpy as np

from streamserve.core.features import (
    FeatureLayout,
    hash_fields_to_rows,
    vector_bytes,
    vectors_to_rows,
)
from streamserve.core.model import FeatureDef, Manifest, StoreDef

MANIFEST = Manifest(
    name="t",
    version="1",
    features=[FeatureDef("s1", "store"), FeatureDef("e1", "event"), FeatureDef("s2", "store")],
    store=StoreDef(key_template="f:{entity_id}:v2"),
)


def test_store_keys_are_deduplicated_and_mapped_back_to_events() -> None:
    keys = FeatureLayout(MANIFEST).store_keys(["a", "b", "a", 7, "b"])
    assert keys.keys == ["f:a:v2", "f:b:v2", "f:7:v2"]
    assert keys.key_index.tolist() == [0, 1, 0, 2, 1]


def test_assemble_puts_columns_in_manifest_order() -> None:
    layout = FeatureLayout(MANIFEST)
    event_cols = np.array([[10.0], [20.0]], dtype=np.float32)
    store_rows = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    matrix = layout.assemble(event_cols, store_rows, np.array([1, 0]))
    assert matrix.dtype == np.float32
    np.testing.assert_array_equal(matrix, [[3.0, 10.0, 4.0], [1.0, 20.0, 2.0]])


def test_vector_layout_round_trips_and_absent_or_wrong_length_values_are_nan() -> None:
    good = vector_bytes([1.5, -2.0])
    rows = vectors_to_rows([good, None, b"\x00" * 12, good], width=2)
    np.testing.assert_array_equal(rows[0], [1.5, -2.0])
    np.testing.assert_array_equal(rows[3], [1.5, -2.0])
    assert np.isnan(rows[1]).all() and np.isnan(rows[2]).all()
    np.testing.assert_array_equal(vectors_to_rows([good, good], 2), [[1.5, -2.0], [1.5, -2.0]])


def test_hash_layout_parses_decimals_and_absent_or_garbage_fields_are_nan() -> None:
    found = hash_fields_to_rows(
        [[b"1.25", None, b"1767225600.25"], [b"oops", b"-3e2", None]], width=2
    )
    rows = found.values
    np.testing.assert_array_equal(rows[0, :1], [1.25])
    assert np.isnan(rows[0, 1]) and np.isnan(rows[1, 0])
    assert rows[1, 1] == -300.0
    assert found.written_at is not None
    assert found.written_at[0] == 1767225600.25  # float64: a timestamp keeps its fraction
    assert np.isnan(found.written_at[1])
    assert hash_fields_to_rows([], width=2).values.shape == (0, 2)
