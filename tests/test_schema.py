"""docs/record.schema.json is the JSON Schema generated from the pydantic record models
(scripts/record_schema.py), and real records satisfy it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT
from e3bench.results.jsonschema import SCHEMA_FILE, record_schema, schema_text


def test_committed_schema_is_the_generated_one():
    committed = (ROOT / SCHEMA_FILE).read_text(encoding="utf-8")
    assert committed == schema_text(), (
        f"{SCHEMA_FILE} is out of date with e3bench.results.schema: run python scripts/record_schema.py"
    )


def test_schema_is_the_models_schema():
    from e3bench.results.schema import ResultRecord

    schema = record_schema()
    body = {k: v for k, v in schema.items() if not k.startswith("$") or k == "$defs"}
    assert body == ResultRecord.model_json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert set(schema["required"]) >= {"run_id", "created_utc", "status", "config", "config_hash", "manifest"}
    assert "EnergySummary" in schema["$defs"] and "gross_energy_j" in schema["$defs"]["EnergySummary"]["properties"]


def test_a_model_change_without_regeneration_fails(monkeypatch):
    """What the first test guards against: any field added to a record model changes the text."""
    from pydantic import create_model

    from e3bench.results import jsonschema, schema

    before = schema_text()
    changed = create_model("ResultRecord", __base__=schema.ResultRecord, new_field_j=(float, 0.0))
    monkeypatch.setattr(jsonschema, "ResultRecord", changed)
    assert schema_text() != before and '"new_field_j"' in schema_text()


def test_the_check_script_says_up_to_date():
    res = subprocess.run([sys.executable, str(ROOT / "scripts/record_schema.py"), "--check"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "up to date" in res.stdout


def test_stored_records_validate_against_the_schema():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((ROOT / SCHEMA_FILE).read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    records = sorted((ROOT / "docs" / "records").rglob("*.json"))
    assert records, "docs/records holds real records from a GPU run"
    for path in records:
        data = json.loads(path.read_text(encoding="utf-8"))
        errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(data)]
        assert errors == [], path
    # and a record that is not one fails
    bad = {**json.loads(records[0].read_text(encoding="utf-8")), "status": "maybe"}
    assert not validator.is_valid(bad)
