"""What decoding costs per event in each input format: the worker's own decoder on the same
synthetic events in JSON and in the Schema Registry formats, in this process (no broker: the
formats' schemas go to confluent-kafka's in-process mock registry). `make bench` prints it."""

from __future__ import annotations

import tempfile
import timeit
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path

from streamserve.core.decoding.events import EventDecoder
from streamserve.core.decoding.formats import FramedDecoder, InputFormat
from streamserve.core.model import Manifest
from streamserve.io.registry import RegistrySchemas, registry_client
from streamserve_loadgen.world import synthetic
from streamserve_loadgen.world.formats import framed, serializer

FORMATS: tuple[InputFormat, ...] = ("json", "avro", "protobuf")


def decode_costs(
    manifest: Manifest | None = None, events: int = 20_000, batch_size: int = 1_000
) -> dict[str, float]:
    """Microseconds per event to decode ``events`` demo events (1% malformed) in batches of
    ``batch_size``, per format: the best of 7 passes, so a busy machine inflates it least."""
    if manifest is None:
        manifest = synthetic.train_demo_model(Path(tempfile.mkdtemp()) / "model", trees=5)
    pairs = list(synthetic.generate_events(events, 1_000, malformed_every=100))
    costs: dict[str, float] = {}
    for input_format in FORMATS:
        decoder = EventDecoder(manifest)
        values = [value for _, value in pairs]
        decode = decoder.decode
        if input_format != "json":
            client = registry_client({"url": f"mock://decode-cost-{uuid.uuid4().hex}"})
            serialize = serializer(input_format, client, "events", manifest)
            values = [value for _, value in framed(pairs, serialize)]
            schemas = RegistrySchemas(client, input_format)
            decode = FramedDecoder(decoder, input_format, schemas).decode
        batches = [values[i : i + batch_size] for i in range(0, len(values), batch_size)]
        best = min(timeit.repeat(partial(_decode_all, decode, batches), number=1, repeat=7))
        costs[input_format] = round(best / len(values) * 1e6, 2)
    return costs


def _decode_all(decode: Callable[[list[bytes]], object], batches: list[list[bytes]]) -> None:
    for batch in batches:
        decode(batch)
