"""Predictors: XGBoost's own without its wrapper, and oneDAL's only where it gives XGBoost's
scores (checked at load on a sample that reaches both sides of every split)."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable

import numpy as np
import pytest
import xgboost as xgb

from streamserve.core import predictors
from streamserve.core.predictors import (
    MAX_SCORE_DIFF,
    OneDalPredictor,
    XGBoostPredictor,
    choose,
    score_difference,
    split_sample,
)

ROWS, FEATURES = 3_000, 12
needs_onedal = pytest.mark.skipif(
    importlib.util.find_spec("daal4py") is None, reason="streamserve[onedal] is not installed"
)


def trained(objective: str, **params: object) -> xgb.Booster:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(ROWS, FEATURES)).astype(np.float32)
    x[rng.random(x.shape) < 0.03] = np.nan  # so splits learn where missing values go
    signal = np.nan_to_num(x[:, 0]) + 0.5 * np.nan_to_num(x[:, 1])
    y = {
        "binary:logistic": signal > 0,
        "binary:logitraw": signal > 0,
        "reg:squarederror": signal,
        "reg:gamma": np.exp(signal),
        "multi:softprob": np.digitize(signal, [-0.5, 0.5]),
        "multi:softmax": np.digitize(signal, [-0.5, 0.5]),
    }[objective]
    extra = {"num_class": 3} if objective.startswith("multi:") else {}
    data = xgb.DMatrix(x, label=y.astype(np.float32))
    return xgb.train({"objective": objective, "max_depth": 5, **extra, **params}, data, 40)


def fresh_rows() -> np.ndarray:
    rng = np.random.default_rng(99)
    x = rng.normal(scale=2.0, size=(500, FEATURES)).astype(np.float32)
    x[rng.random(x.shape) < 0.1] = np.nan
    return x


@pytest.mark.parametrize(
    "objective", ["binary:logistic", "binary:logitraw", "reg:squarederror", "multi:softprob"]
)
def test_xgboost_without_its_wrapper_gives_its_scores_to_the_bit(objective: str) -> None:
    booster = trained(objective)
    rows = fresh_rows()
    for matrix in (rows, rows[:1], rows[::2]):  # one row; a strided view
        expected = booster.inplace_predict(matrix, validate_features=False)
        got = XGBoostPredictor(booster).predict(matrix)
        assert got.shape == expected.shape and np.array_equal(got, expected)


@needs_onedal
@pytest.mark.parametrize("objective", ["binary:logistic", "reg:squarederror", "multi:softprob"])
def test_auto_takes_onedal_where_it_gives_xgboosts_scores(objective: str) -> None:
    booster = trained(objective)
    chosen = choose(booster, "auto")
    assert chosen.predictor.name == "onedal", chosen.reason
    rows = fresh_rows()
    expected = booster.inplace_predict(rows, validate_features=False)
    got = chosen.predictor.predict(rows)
    assert got.shape == expected.shape
    assert score_difference(expected, got) <= MAX_SCORE_DIFF


@needs_onedal
def test_scores_further_than_the_bound_keep_xgboost_and_say_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sample check on its own: a margin objective let past the objective check (oneDAL
    answers probabilities, XGBoost margins) is caught by its scores."""
    booster = trained("binary:logitraw")
    difference = OneDalPredictor(booster).predict(fresh_rows()) - booster.inplace_predict(
        fresh_rows()
    )
    assert np.max(np.abs(difference)) > MAX_SCORE_DIFF
    monkeypatch.setattr(predictors, "ONEDAL_OBJECTIVES", {"binary:logitraw"})
    chosen = choose(booster, "auto")
    assert chosen.predictor.name == "xgboost"
    assert chosen.reason.startswith("oneDAL scores differ from XGBoost's by up to ")


def test_score_differences_are_absolute_within_one_and_relative_beyond() -> None:
    expected = np.array([0.25, -0.5, 20.0, -300.0], dtype=np.float32)
    assert score_difference(expected, expected) == 0.0
    off_by = np.array([2e-6, 0, 0, 0], dtype=np.float32)
    assert score_difference(expected, expected + off_by) == pytest.approx(2e-6, rel=0.01)
    nudged = np.array([0.25, -0.5, np.nextafter(np.float32(20), 99), -300.0], dtype=np.float32)
    assert score_difference(expected, nudged) == pytest.approx(1.9073486e-6 / 20)
    assert score_difference(expected, expected * 1.01) == pytest.approx(0.01, rel=1e-4)


def categorical_model() -> xgb.Booster:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2_000, 3)).astype(np.float32)
    category = rng.integers(0, 6, size=2_000)
    data = xgb.DMatrix(
        np.column_stack([x, category]),
        label=(category % 2 == 0) ^ (x[:, 0] > 0),
        feature_types=["q", "q", "q", "c"],
        enable_categorical=True,
    )
    return xgb.train({"objective": "binary:logistic", "max_depth": 4}, data, 20)


@needs_onedal
@pytest.mark.filterwarnings("ignore::UserWarning")  # "max_depth not used" by gblinear
@pytest.mark.parametrize(
    ("model", "reason"),
    [
        (lambda: trained("binary:logitraw"), "objective binary:logitraw"),
        (lambda: trained("reg:gamma"), "objective reg:gamma"),
        (lambda: trained("multi:softmax"), "objective multi:softmax"),
        (lambda: trained("binary:logistic", booster="dart"), "a dart booster"),
        (lambda: trained("binary:logistic", booster="gblinear"), "a gblinear booster"),
        (categorical_model, "categorical splits"),
    ],
    ids=["margins", "log-link", "class-labels", "dart", "gblinear", "categorical"],
)
def test_models_onedal_does_not_take_keep_xgboost_and_name_the_reason(
    model: Callable[[], xgb.Booster], reason: str
) -> None:
    booster = model()
    for wanted in ("auto", "onedal"):
        chosen = choose(booster, wanted)
        assert chosen.predictor.name == "xgboost"
        assert chosen.reason.startswith(f"oneDAL does not take this model: {reason}")


@needs_onedal
@pytest.mark.parametrize("seed", range(8))
def test_random_models_with_missing_values_score_as_xgboost_does(seed: int) -> None:
    """Models of random shape (depth, trees, features, missing share, objective, base score),
    scored on random rows (10% missing, some far outside the training range): where auto
    takes oneDAL, every score is within the bound of XGBoost's."""
    rng = np.random.default_rng(seed)
    rows, columns = int(rng.integers(200, 3_000)), int(rng.integers(1, 40))
    x = rng.normal(size=(rows, columns)).astype(np.float32)
    x[rng.random(x.shape) < rng.choice([0.0, 0.05, 0.3])] = np.nan
    signal = np.nan_to_num(x[:, 0]) + rng.normal(scale=0.5, size=rows)
    objective = str(rng.choice(["binary:logistic", "reg:squarederror", "multi:softprob"]))
    label = {
        "binary:logistic": signal > 0,
        "reg:squarederror": signal * 10,
        "multi:softprob": np.digitize(signal, [-0.5, 0.5]),
    }[objective]
    params = {
        "objective": objective,
        "max_depth": int(rng.integers(1, 10)),
        "eta": float(rng.uniform(0.05, 0.5)),
        **({"num_class": 3} if objective == "multi:softprob" else {}),
    }
    data = xgb.DMatrix(x, label=label.astype(np.float32))
    booster = xgb.train(params, data, int(rng.integers(1, 120)))
    chosen = choose(booster, "auto")
    assert chosen.predictor.name == "onedal", chosen.reason
    fresh = rng.normal(scale=3.0, size=(1_000, columns)).astype(np.float32)
    fresh[rng.random(fresh.shape) < 0.1] = np.nan
    expected = booster.inplace_predict(fresh, validate_features=False)
    got = chosen.predictor.predict(fresh)
    assert got.shape == expected.shape
    assert score_difference(expected, got) <= MAX_SCORE_DIFF


def test_without_the_extra_auto_keeps_xgboost_and_onedal_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    booster = trained("binary:logistic")
    monkeypatch.setitem(sys.modules, "daal4py", None)  # as if streamserve[onedal] were absent
    chosen = choose(booster, "auto")
    assert chosen.predictor.name == "xgboost" and "streamserve[onedal]" in chosen.reason
    with pytest.raises(ImportError):
        choose(booster, "onedal")
    assert choose(booster, "xgboost").predictor.name == "xgboost"


def test_the_sample_takes_both_sides_of_every_split_and_the_missing_branch() -> None:
    booster = trained("binary:logistic")
    sample = split_sample(booster)
    splits: set[tuple[int, float]] = set()

    def walk(node: dict) -> None:
        if "split" in node:
            splits.add((int(str(node["split"]).removeprefix("f")), float(node["split_condition"])))
            for child in node["children"]:
                walk(child)

    for tree in booster.get_dump(dump_format="json"):
        walk(json.loads(tree))
    assert splits
    for column, threshold in splits:
        values = sample[:, column]
        assert (values < np.float32(threshold)).any() and (values >= np.float32(threshold)).any()
        assert np.isnan(values).any()


@needs_onedal
def test_onedal_runs_on_the_threads_it_is_given_not_every_core() -> None:
    import daal4py

    OneDalPredictor(trained("binary:logistic"), threads=1)
    assert daal4py.num_threads() == 1  # STREAMSERVE_PREDICT_THREADS, as for XGBoost
