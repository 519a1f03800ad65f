"""What turns a batch's feature matrix into scores: XGBoost's own predict, called without its
Python wrapper, or oneDAL's (``streamserve[onedal]``), chosen at load by STREAMSERVE_PREDICTOR.

A fast path is taken only when it gives XGBoost's scores: at load both score a sample that
reaches both sides of every split of the model (and its missing-value branches), and any score
further than ``MAX_SCORE_DIFF`` from XGBoost's refuses it (relative beyond +-1: float32 holds a
regression score of 20 to 1.9e-6), as does a model it cannot take.
"""

from __future__ import annotations

import ctypes
import json
import logging
import threading
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import xgboost as xgb

try:  # the C call under Booster.inplace_predict; absent in some other XGBoost: the wrapper
    from xgboost.core import _LIB, _check_call, c_bst_ulong
except ImportError:  # pragma: no cover
    _LIB = None  # type: ignore[assignment]

log = logging.getLogger("streamserve.predictors")

PredictorChoice = Literal["auto", "xgboost", "onedal"]
MAX_SCORE_DIFF = 1e-6
SAMPLE_ROWS = 2_000
MISSING_SHARE = 0.1  # of the sample's values: NaN, for the missing-value branches
# the objectives whose scores oneDAL's classifier (probabilities) or regressor (the sum of the
# trees: identity links) give; others (margins, log links, class labels) it scores differently
ONEDAL_OBJECTIVES = {
    "binary:logistic",
    "multi:softprob",
    "reg:squarederror",
    "reg:squaredlogerror",
    "reg:pseudohubererror",
    "reg:absoluteerror",
}


class Predictor(Protocol):
    name: str

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        """Scores of a C-contiguous float32 matrix: (rows,) or (rows, outputs)."""
        ...


class XGBoostPredictor:
    """``Booster.inplace_predict`` without its Python wrapper: the same C call with its
    configuration built once and a proxy matrix kept per thread (XGBoost otherwise builds one
    per call, reading the cgroup CPU quota files each time). A 200-tree depth-6 model on 15
    rows here: 61 µs a call, 96 with a proxy per call, 198 through the wrapper; same scores to
    the bit."""

    name = "xgboost"

    def __init__(self, booster: xgb.Booster) -> None:
        self._booster = booster
        self._config = json.dumps(
            {
                "type": 0,
                "training": False,
                "iteration_begin": 0,
                "iteration_end": 0,
                "missing": float("nan"),
                "strict_shape": False,
                "cache_id": 0,
            }
        ).encode()
        self._proxies = threading.local()
        self._handles: list[ctypes.c_void_p] = []  # every thread's proxy, freed with this

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        if _LIB is None:  # pragma: no cover
            return np.asarray(self._booster.inplace_predict(matrix, validate_features=False))
        matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        rows, columns = matrix.shape
        interface = b'{"data": [%d, true], "shape": [%d, %d], "typestr": "<f4", "version": 3}' % (
            matrix.ctypes.data,
            rows,
            columns,
        )
        shape = ctypes.POINTER(c_bst_ulong)()
        dims = c_bst_ulong()
        scores = ctypes.POINTER(ctypes.c_float)()
        _check_call(
            _LIB.XGBoosterPredictFromDense(
                self._booster.handle,
                interface,
                self._config,
                self._proxy(),
                ctypes.byref(shape),
                ctypes.byref(dims),
                ctypes.byref(scores),
            )
        )
        out_shape = tuple(int(shape[i]) for i in range(dims.value))
        return np.ctypeslib.as_array(scores, shape=out_shape).copy()  # XGBoost reuses its buffer

    def _proxy(self) -> ctypes.c_void_p:
        """This thread's proxy matrix (it holds a call's data only during the call)."""
        handle = getattr(self._proxies, "handle", None)
        if handle is None:
            handle = ctypes.c_void_p()
            _check_call(_LIB.XGProxyDMatrixCreate(ctypes.byref(handle)))
            self._handles.append(handle)
            self._proxies.handle = handle
        return handle

    def __del__(self) -> None:
        for handle in getattr(self, "_handles", ()):
            _LIB.XGDMatrixFree(handle)


class OneDalPredictor:
    """oneDAL's gradient-boosting inference on the converted booster (daal4py), on ``threads``
    threads (oneDAL's default, every core, spins idle threads: in a drain here its 2 threads
    cost more CPU than 1 saved)."""

    name = "onedal"

    def __init__(self, booster: xgb.Booster, threads: int = 1) -> None:
        import daal4py  # the onedal extra
        from daal4py import mb

        daal4py.daalinit(threads)  # process-wide, like XGBoost's nthread here
        self._model = mb.convert_model(booster)
        self._classes = int(getattr(self._model, "n_classes_", 0) or 0)
        self._classifier = bool(self._model.is_classifier_)

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        if not self._classifier:
            return np.asarray(self._model.predict(matrix), dtype=np.float32).reshape(-1)
        probabilities = np.asarray(self._model.predict_proba(matrix), dtype=np.float32)
        return probabilities[:, 1].copy() if self._classes == 2 else probabilities


@dataclass(frozen=True)
class Choice:
    """The predictor a bundle scores with, and why (for the log)."""

    predictor: Predictor
    reason: str


def choose(booster: xgb.Booster, wanted: PredictorChoice, threads: int = 1) -> Choice:
    """``wanted``'s predictor (on ``threads`` threads) if it gives XGBoost's scores on a sample
    that reaches every split's sides, else XGBoost's (``auto``: oneDAL when it is installed
    and passes)."""
    reference = XGBoostPredictor(booster)
    if wanted == "xgboost":
        return Choice(reference, "STREAMSERVE_PREDICTOR=xgboost")
    try:
        import daal4py  # noqa: F401  # the onedal extra
    except ImportError:
        if wanted == "onedal":
            raise
        return Choice(reference, "oneDAL not installed (pip install 'streamserve[onedal]')")
    refused = onedal_refuses(booster)
    if refused:
        return Choice(reference, f"oneDAL does not take this model: {refused}")
    try:
        fast = OneDalPredictor(booster, threads)
    except Exception as exc:  # a model the conversion does not support after all
        return Choice(reference, f"oneDAL cannot convert this model: {exc}")
    sample = split_sample(booster)
    expected, got = reference.predict(sample), fast.predict(sample)
    if expected.shape != got.shape:
        return Choice(reference, f"oneDAL scores have shape {got.shape}, not {expected.shape}")
    difference = score_difference(expected, got)
    if not difference <= MAX_SCORE_DIFF:
        return Choice(
            reference,
            f"oneDAL scores differ from XGBoost's by up to {difference:.3g} on {len(sample):,} "
            f"sample rows (more than {MAX_SCORE_DIFF:g})",
        )
    return Choice(
        fast,
        f"oneDAL scores equal XGBoost's within {difference:.2g} on {len(sample):,} sample rows",
    )


def score_difference(expected: np.ndarray, got: np.ndarray) -> float:
    """The largest difference between two predictors' scores: absolute within +-1, relative to
    XGBoost's score beyond (where float32's spacing passes 1e-6: 1.9e-6 at 16)."""
    if not expected.size:
        return 0.0
    reference = expected.astype(np.float64)
    return float(np.max(np.abs(reference - got) / np.maximum(1.0, np.abs(reference))))


def onedal_refuses(booster: xgb.Booster) -> str | None:
    """Why oneDAL cannot give this model's scores, known before converting it: None if it may
    (the sample check decides)."""
    learner = json.loads(booster.save_config())["learner"]
    kind = learner["gradient_booster"]["name"]
    if kind != "gbtree":
        return f"a {kind} booster (oneDAL takes gbtree)"
    objective = learner["objective"]["name"]
    if objective not in ONEDAL_OBJECTIVES:
        answered = ", ".join(sorted(ONEDAL_OBJECTIVES))
        return f"objective {objective} (oneDAL gives the scores of {answered})"
    if "c" in (booster.feature_types or ()):
        return "categorical splits"
    return None


def split_sample(booster: xgb.Booster, rows: int = SAMPLE_ROWS, seed: int = 0) -> np.ndarray:
    """Rows whose values sit just below, at and just above the model's split thresholds of
    their feature, with a share of NaN: between them they take both sides of every split and
    every missing-value branch."""
    columns = booster.num_features()
    names = booster.feature_names or [f"f{i}" for i in range(columns)]
    index = {name: i for i, name in enumerate(names)}
    thresholds: list[set[float]] = [set() for _ in range(columns)]
    for tree in booster.get_dump(dump_format="json"):
        _collect(json.loads(tree), index, thresholds)
    rng = np.random.default_rng(seed)
    sample = rng.normal(size=(rows, columns)).astype(np.float32)
    for column, found in enumerate(thresholds):
        if not found:
            continue
        points = np.array(sorted(found), dtype=np.float32)
        nearby = np.concatenate(
            [points, np.nextafter(points, -np.inf), np.nextafter(points, np.inf)]
        ).astype(np.float32)
        sample[:, column] = rng.choice(nearby, size=rows)
    sample[rng.random(sample.shape) < MISSING_SHARE] = np.nan
    return sample


def _collect(node: dict[str, Any], index: dict[str, int], thresholds: list[set[float]]) -> None:
    if "split" in node:
        column = index.get(str(node["split"]))
        if column is not None and "split_condition" in node:
            thresholds[column].add(float(node["split_condition"]))
        for child in node.get("children", ()):
            _collect(child, index, thresholds)
