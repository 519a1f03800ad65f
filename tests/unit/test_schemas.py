import json
from typing import Final

import jsonschema
import msgspec
import pytest

from streamserve.core import records as rec
from streamserve.tools.schemas import all_schemas, render
from streamserve_loadgen.world.synthetic import demo_manifest
from tests.conftest import SCHEMAS


def test_schema_files_are_what_the_code_generates() -> None:
    generated = all_schemas(demo_manifest())
    assert sorted(p.name for p in SCHEMAS.glob("*.*")) == sorted(generated)
    for name, schema in generated.items():
        assert (SCHEMAS / name).read_text() == render(schema), (
            f"schemas/{name} is stale: run `streamserve schemas write schemas --model-dir DEMO` "
            "with a bundle from `streamserve-loadgen demo-model DEMO`"
        )


def test_records_the_code_writes_validate_against_the_files() -> None:
    version: Final = rec.PREDICTION_SCHEMA_VERSION
    prediction = rec.Prediction(
        "e1", "u1", 0.25, "m", "3", 1700000000000, 1699999999990, 10.0, 2, "events", 0, 17,
        "w-1", version, decision=False, threshold=0.4,
    )  # fmt: skip
    check("prediction.schema.json", msgspec.json.encode(prediction))
    multi = rec.Prediction(
        "e1", 42, 0.7, "m", "3", 1, None, None, 0, "events", 1, 3, "w-2", version,
        scores=[0.1, 0.2, 0.7],
    )  # fmt: skip
    check("prediction.schema.json", msgspec.json.encode(multi))
    stale = msgspec.json.decode(msgspec.json.encode(prediction))
    with pytest.raises(jsonschema.ValidationError):  # a record of another version is refused
        check("prediction.schema.json", msgspec.json.encode({**stale, "schema_version": 1}))
    event = {"event_id": "e", "entity_id": "u", "amount": 3, "merchant": {"risk": None}}
    check("event.schema.json", json.dumps(event).encode())


def check(schema_file: str, instance: bytes) -> None:
    schema = json.loads((SCHEMAS / schema_file).read_text())
    jsonschema.validate(json.loads(instance), schema)
