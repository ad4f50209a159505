"""Results on disk: ``<output_dir>/<sweep>/<run_id>.json``, written atomically (temp file +
``os.replace``) so a crash never leaves a half-written record and never touches earlier ones."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from e3bench.core.errors import E3Error
from e3bench.results.schema import ResultRecord


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def run_dir(output_dir: str | Path, sweep: str) -> Path:
    return Path(output_dir) / sweep


def save(record: ResultRecord, output_dir: str | Path, sweep: str, *, stem: str | None = None) -> Path:
    """Write one record. Sweeps pass ``stem=config_hash`` so a retried run replaces its
    failed record instead of adding a duplicate."""
    path = run_dir(output_dir, sweep) / f"{stem or record.run_id}.json"
    try:
        atomic_write_text(path, record.model_dump_json(indent=1))
    except OSError as exc:
        raise E3Error(f"cannot write results to {path}: {exc.strerror}", "choose a writable --output-dir") from None
    return path


def load(path: Path) -> ResultRecord:
    try:
        return ResultRecord.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise E3Error(f"{path} is not a readable e3bench result ({type(exc).__name__})", "remove or fix it") from None


def scan(
    root: Path, other_kinds: list[tuple[Path, dict]] | None = None
) -> tuple[list[tuple[Path, ResultRecord]], list[str]]:
    """Every readable record under ``root`` and a list of problems with the other JSON files
    (unreadable, another schema_version, invalid) — reports say what they skipped.

    Records of other kinds (finetune, train-suite: they carry ``kind``) are not run records; with
    ``other_kinds`` they are appended there as parsed JSON, so one scan serves the whole report."""
    from e3bench.results.schema import SCHEMA_VERSION

    found: list[tuple[Path, ResultRecord]] = []
    problems: list[str] = []
    for p in sorted(root.rglob("*.json")):
        if p.name.startswith(".") or "samples" in p.parts:
            continue
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            problems.append(f"{p}: not readable JSON ({type(exc).__name__})")
            continue
        if isinstance(data, dict) and "kind" in data:
            if other_kinds is not None:
                other_kinds.append((p, data))
            continue  # a finetune/train-suite record
        if not (isinstance(data, dict) and "schema_version" in data and "run_id" in data):
            continue  # not an e3bench record (e.g. a user file)
        if data["schema_version"] != SCHEMA_VERSION:
            problems.append(f"{p}: schema_version {data['schema_version']} (this e3bench reads {SCHEMA_VERSION})")
            continue
        try:
            found.append((p, ResultRecord.model_validate(data)))
        except ValueError as exc:
            problems.append(f"{p}: invalid record ({str(exc).splitlines()[0]})")
    return found, problems


def iter_records(root: Path) -> Iterator[tuple[Path, ResultRecord]]:
    yield from scan(root)[0]


def completed_hashes(root: Path) -> set[str]:
    """Config hashes of runs under ``root`` that finished successfully (resume skips them)."""
    return {rec.config_hash for _, rec in iter_records(root) if rec.status == "ok"} if root.exists() else set()
