import json
from pathlib import Path

import jsonschema
import msgspec

from streamserve.core import records as rec
from streamserve.tools.schemas import all_schemas, render
from streamserve_loadgen.synthetic import demo_manifest

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def test_schema_files_are_what_the_code_generates() -> None:
    generated = all_schemas(demo_manifest())
    assert sorted(p.name for p in SCHEMAS.glob("*.json")) == sorted(generated)
    for name, schema in generated.items():
        assert (SCHEMAS / name).read_text() == render(schema), (
            f"schemas/{name} is stale: run `streamserve schemas write schemas --model-dir DEMO` "
            "with a bundle from `streamserve-loadgen demo-model DEMO`"
        )


def test_records_the_code_writes_validate_against_the_files() -> None:
    prediction = rec.Prediction(
        "e1", "u1", 0.25, "m", "3", 1700000000000, 12.5, 2, "events", 0, 17, "w-1"
    )
    check("prediction.schema.json", msgspec.json.encode(prediction))
    multi = rec.Prediction(
        "e1", 42, 0.7, "m", "3", 1, 1.0, 0, "events", 1, 3, "w-2", scores=[0.1, 0.2, 0.7]
    )
    check("prediction.schema.json", msgspec.json.encode(multi))
    event = {"event_id": "e", "entity_id": "u", "amount": 3, "merchant": {"risk": None}}
    check("event.schema.json", json.dumps(event).encode())


def check(schema_file: str, instance: bytes) -> None:
    schema = json.loads((SCHEMAS / schema_file).read_text())
    jsonschema.validate(json.loads(instance), schema)
