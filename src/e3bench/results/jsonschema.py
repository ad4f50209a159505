"""The JSON Schema of a result record, generated from the pydantic models (never written by hand).

``docs/record.schema.json`` is :func:`schema_text`'s output, written by
``python scripts/record_schema.py``; ``tests/test_schema.py`` fails when the models change and
the file was not regenerated. The schema is pydantic's *validation* schema of
:class:`~e3bench.results.schema.ResultRecord` (JSON Schema 2020-12): what a record file must
satisfy for e3bench to read it.
"""

from __future__ import annotations

import json
from typing import Any

from e3bench.results.schema import SCHEMA_VERSION, ResultRecord

#: the committed copy, relative to the repository root
SCHEMA_FILE = "docs/record.schema.json"
DIALECT = "https://json-schema.org/draft/2020-12/schema"


def record_schema() -> dict[str, Any]:
    """``ResultRecord.model_json_schema()`` with the dialect and the record's schema_version."""
    body = ResultRecord.model_json_schema()
    return {
        "$schema": DIALECT,
        "$comment": f"generated from e3bench.results.schema.ResultRecord (schema_version {SCHEMA_VERSION}) "
        "by scripts/record_schema.py; do not edit",
        **body,
    }


def schema_text() -> str:
    """The schema as the committed file holds it: 2-space indented JSON, UTF-8, final newline."""
    return json.dumps(record_schema(), indent=2, ensure_ascii=False) + "\n"
