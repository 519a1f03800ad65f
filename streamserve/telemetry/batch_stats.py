"""What one batch did: the one record Prometheus, the metrics record and the run summary are
all taken from (the pipeline builds it when the checkpoint completes the batch)."""

from __future__ import annotations

from dataclasses import dataclass

from streamserve.core.batch import BatchOutputs
from streamserve.core.window import Trigger
from streamserve.telemetry.stages import StageTimes


@dataclass(frozen=True)
class BatchStats:
    """What one batch did: the one record that every count and metric is taken from."""

    size: int
    trigger: Trigger
    outputs: BatchOutputs
    model_name: str
    lookup_ms: float
    predict_ms: float
    service_s: float  # from opening the batch to its outputs being handed to the producer
    stages: StageTimes  # per prediction
