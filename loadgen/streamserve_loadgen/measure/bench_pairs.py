"""Bench steps that compare two setups side by side: each drain runs right after its reference
on the same events (drains drift as the broker holds more data, so only neighbours compare).
Registry formats against JSON; the `feast` store layout against `vector`, and its lookup
against Feast's own `get_online_features`."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from streamserve.core.features import FeatureLayout
from streamserve.core.model import read_manifest
from streamserve.io.registry import registry_client
from streamserve.io.store import RedisFeatureStore, connect
from streamserve_loadgen.measure.bench_steps import AVRO_ARRAYS, REGISTRY_FORMATS, Bench
from streamserve_loadgen.world.feast_world import use_feast_layout, write_and_read
from streamserve_loadgen.world.formats import avro_with_unread_array, framed, serializer


def format_drains(bench: Bench, argv: list[str]) -> dict[str, dict[str, Any]]:
    """The same events in each Schema Registry format, each drained by the worker right
    after a fresh JSON drain of them (``json_before_<format>``): drains drift as the broker
    holds more data, so each pair is compared side by side. Loaded last, so the other steps
    run as before."""
    manifest = read_manifest(bench.model_dir)
    events = bench.events()
    client = registry_client({"url": bench.registry_url})
    for input_format in REGISTRY_FORMATS:
        topic = bench.topic(f"drain-{input_format}")
        serialize = serializer(input_format, client, topic, manifest)
        bench.load_topic(topic, framed(events, serialize), input_format)
    topic = bench.topic(f"drain-{AVRO_ARRAYS}")
    serialize = avro_with_unread_array(client, topic, manifest)
    bench.load_topic(topic, framed(events, serialize), "avro (half with an unread array)")
    drains = {}
    for name in (*REGISTRY_FORMATS, AVRO_ARRAYS):
        step = name.replace("_", "-")
        drains[f"json_before_{name}"] = bench.drain(f"worker-json-before-{step}", argv)
        drains[name] = bench.drain(
            f"worker-{step}",
            argv,
            input_topic=bench.topic(f"drain-{name}"),
            input_format="avro" if name == AVRO_ARRAYS else name,
            schema_registry_url=bench.registry_url,
        )
    return drains


def feast_steps(bench: Bench, argv: list[str]) -> dict[str, Any]:
    """The `feast` layout: Feast itself writes the bench's entities to Redis (two feature
    views, the model's 24 store features); then the lookup of 1,000 entities by Feast's
    `get_online_features` against the worker's store, and a drain of the worker with the
    feast layout right after one with the vector layout, on the same events."""
    bundle = Path(tempfile.mkdtemp(prefix="streamserve-bench-feast-")) / "model"
    shutil.copytree(bench.model_dir, bundle)
    project = f"bench{bench.run_id}"
    use_feast_layout(bundle, project)
    with bench.console.status(f"Feast writing {bench.plan.world.entities:,} entities"):
        rows, feast_s, _ = write_and_read(
            bench.stack.redis_url,
            project,
            bench.plan.world.entities,
            repeat=10,
            read_entities=1_000,
        )
    manifest = read_manifest(bundle)
    store = RedisFeatureStore(connect(bench.stack.redis_url), manifest)
    keys = FeatureLayout(manifest).store_keys(list(rows)).keys
    ours_s = []
    for _ in range(10):
        started = time.perf_counter()
        store.fetch(keys)
        ours_s.append(time.perf_counter() - started)
    lookup = {
        "entities": len(keys),
        "feast_ms": round(min(feast_s) * 1000, 2),
        "streamserve_ms": round(min(ours_s) * 1000, 2),
    }
    bench.console.print(
        f"lookup of {len(keys):,} entities (best of 10): Feast get_online_features "
        f"{lookup['feast_ms']} ms, the worker's store {lookup['streamserve_ms']} ms"
    )
    return {
        "lookup": lookup,
        "vector": bench.drain("worker-vector-before-feast", argv),
        "feast": bench.drain("worker-feast", argv, model_dir=bundle),
    }
