"""The demo: embedded stack, demo model and features, pre-loaded events, one worker drain."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from loadgen.produce import preload
from loadgen.watch import read_topics
from streamserve import synthetic
from streamserve.config import Settings, load_settings
from streamserve.core.model import Manifest
from streamserve.embedded import running_stack
from streamserve.io import store as store_io
from streamserve.runtime.confluent import build_worker


def load_entity_features(
    settings: Settings, manifest: Manifest, n_entities: int, skip_every: int = 0, seed: int = 7
) -> dict[str, np.ndarray]:
    """Write synthetic features of entities u0..u{n-1}; every ``skip_every``-th stays absent.

    Returns entity id -> the row written, for whoever needs to know what the store holds.
    """
    rows = synthetic.entity_features(n_entities, seed)
    keep = np.arange(n_entities)
    if skip_every:
        keep = keep[keep % skip_every != skip_every - 1]
    written = {synthetic.entity_id(int(i)): rows[i] for i in keep}
    template = manifest.store.key_template
    keys = [template.replace("{entity_id}", entity) for entity in written]
    client = store_io.connect(settings.redis_url.get_secret_value(), settings.redis_timeout_s)
    store_io.write_features(client, manifest, keys, rows[keep], written_at=time.time())
    return written


def run_demo(events: int, entities: int, malformed_every: int, trees: int) -> dict[str, Any]:
    """Drain ``events`` pre-loaded events with one worker; returns the accounting."""
    workdir = Path(tempfile.mkdtemp(prefix="streamserve-demo-"))
    with running_stack() as stack:
        model_dir = workdir / "model"
        manifest = synthetic.train_demo_model(model_dir, trees=trees)
        settings = load_settings(
            kafka_bootstrap=stack.kafka_bootstrap,
            redis_url=stack.redis_url,
            model_dir=model_dir,
            exit_when_idle_s=3.0,
            metrics_interval_s=2.0,
        )
        load_entity_features(settings, manifest, entities, skip_every=50)
        worker = build_worker(settings)  # creates the topics
        generated = synthetic.generate_events(events, entities, malformed_every=malformed_every)
        produced = preload(stack.kafka_bootstrap, settings.input_topic, generated)
        summary = worker.run()
        del worker  # its clients go before the stack they talk to
        outputs = read_topics(
            stack.kafka_bootstrap,
            [settings.predictions_topic, settings.dead_letter_topic],
            expected=produced,
            idle_s=1.0,
        )
        predictions = len(outputs[settings.predictions_topic])
        dead_letters = len(outputs[settings.dead_letter_topic])
    return {
        "events": produced,
        "scored": predictions,
        "dead_letters": dead_letters,
        "lost": produced - predictions - dead_letters,
        "events_per_s": summary.as_dict()["events_per_s"],
        "batches": summary.batches,
    }
