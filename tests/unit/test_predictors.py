"""Predictors: XGBoost's own without its wrapper, and oneDAL's only where it gives XGBoost's
scores (checked at load on a sample that reaches both sides of every split)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import xgboost as xgb

from streamserve.core.predictors import (
    MAX_SCORE_DIFF,
    OneDalPredictor,
    XGBoostPredictor,
    choose,
    split_sample,
)

ROWS, FEATURES = 3_000, 12


def trained(objective: str, **params: object) -> xgb.Booster:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(ROWS, FEATURES)).astype(np.float32)
    x[rng.random(x.shape) < 0.03] = np.nan  # so splits learn where missing values go
    signal = np.nan_to_num(x[:, 0]) + 0.5 * np.nan_to_num(x[:, 1])
    y = {
        "binary:logistic": signal > 0,
        "binary:logitraw": signal > 0,
        "reg:squarederror": signal,
        "multi:softprob": np.digitize(signal, [-0.5, 0.5]),
    }[objective]
    extra = {"num_class": 3} if objective == "multi:softprob" else {}
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


@pytest.mark.parametrize("objective", ["binary:logistic", "reg:squarederror", "multi:softprob"])
def test_auto_takes_onedal_where_it_gives_xgboosts_scores(objective: str) -> None:
    booster = trained(objective)
    chosen = choose(booster, "auto")
    assert chosen.predictor.name == "onedal", chosen.reason
    rows = fresh_rows()
    expected = booster.inplace_predict(rows, validate_features=False)
    got = chosen.predictor.predict(rows)
    assert got.shape == expected.shape
    assert np.max(np.abs(got - expected)) <= MAX_SCORE_DIFF


def test_a_model_onedal_scores_differently_keeps_xgboost_and_says_why() -> None:
    booster = trained("binary:logitraw")  # margins: oneDAL would answer probabilities
    assert (
        np.max(
            np.abs(
                OneDalPredictor(booster).predict(fresh_rows())
                - booster.inplace_predict(fresh_rows())
            )
        )
        > MAX_SCORE_DIFF
    )
    chosen = choose(booster, "auto")
    assert chosen.predictor.name == "xgboost" and "differ" in chosen.reason


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


def test_onedal_runs_on_the_threads_it_is_given_not_every_core() -> None:
    import daal4py

    OneDalPredictor(trained("binary:logistic"), threads=1)
    assert daal4py.num_threads() == 1  # STREAMSERVE_PREDICT_THREADS, as for XGBoost
