"""Write docs/record.schema.json, the JSON Schema of a result record, from the pydantic models.

    python scripts/record_schema.py            # (re)write the file
    python scripts/record_schema.py --check    # exit 1 if the committed file is out of date

Run it after changing anything in ``e3bench.results.schema`` (or the models it uses);
tests/test_schema.py fails until you do.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from e3bench.results.jsonschema import SCHEMA_FILE, schema_text  # noqa: E402


def main(argv: list[str]) -> int:
    """Write the schema file, or with ``--check`` only compare it; returns the exit status."""
    path = ROOT / SCHEMA_FILE
    text = schema_text()
    if "--check" in argv:
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            print(f"{SCHEMA_FILE} is out of date: run python scripts/record_schema.py", file=sys.stderr)
            return 1
        print(f"{SCHEMA_FILE} is up to date")
        return 0
    path.write_text(text, encoding="utf-8")
    print(f"wrote {SCHEMA_FILE} ({len(text):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
