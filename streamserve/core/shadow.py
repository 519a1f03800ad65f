"""Shadow scoring: a challenger model scores the same events as the served model; its
predictions go to their own topic and the two are compared. Pure."""

from __future__ import annotations

import numpy as np

from streamserve.core.batch import BatchScorer, Inference, ShadowBatch


def shadow_batch(
    champion: BatchScorer,
    served: Inference,
    challenger: BatchScorer,
    shadow: Inference,
    scored_at_ms: int,
    batch_id: str,
) -> ShadowBatch:
    """The challenger's prediction records (same provenance, its own model version) and
    its agreement with the served model over the events both scored."""
    predictions = challenger.encode(shadow, scored_at_ms, batch_id).predictions
    if served.batch is shadow.batch:  # same inputs: the very same events, in the same order
        ours, theirs = served.scores, shadow.scores
    else:
        _, at_ours, at_theirs = np.intersect1d(
            served.batch.events.indices,
            shadow.batch.events.indices,
            assume_unique=True,
            return_indices=True,
        )
        ours, theirs = served.scores[at_ours], shadow.scores[at_theirs]
    deltas = np.abs(primary_score(theirs) - primary_score(ours)).astype(np.float64)
    ours_decide = decisions(ours, champion.bundle.manifest.threshold)
    theirs_decide = decisions(theirs, challenger.bundle.manifest.threshold)
    flips = int(np.count_nonzero(ours_decide != theirs_decide))
    return ShadowBatch(predictions, challenger.bundle.version, deltas, flips)


def primary_score(scores: np.ndarray) -> np.ndarray:
    """The published `score`: the score of a single-output model, the top one of a multi-output."""
    return scores if scores.ndim == 1 else scores.max(axis=1)


def decisions(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Positive or not (single output, by the threshold); the top output (multi-output)."""
    if scores.ndim == 1:
        return (scores >= threshold).astype(np.int64)
    return scores.argmax(axis=1)
