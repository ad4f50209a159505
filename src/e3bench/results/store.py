"""Results on disk: the one place that knows the layout of a results directory.

::

    <output_dir>/<sweep>/<stem>.json                      one record per run (stem: the run id;
                                                          sweeps use the config hash, so a retried
                                                          run replaces its failed record)
    <output_dir>/<sweep>/samples/<run_id>-<task>.jsonl    per-item predictions of one task
                                                          (``--log-samples``), one file per run

Records are written atomically (temp file + fsync + ``os.replace``), so a crash never leaves a
half-written record and never touches earlier ones.

Other applications may keep JSON documents in the same directory tree (``e3bench finetune``,
``e3bench train``). The store tells them apart by a top-level ``kind`` field, which run records
never have, and hands them over unread (grouped by ``kind``) so their own readers can parse them
from the same scan; the store itself knows nothing of what they contain.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from e3bench.core.errors import E3Error
from e3bench.core.fsutil import atomic_write_text
from e3bench.results.schema import SCHEMA_VERSION, ResultRecord

#: Folder (inside a sweep folder) that holds the per-task samples files.
SAMPLES_DIR = "samples"


def run_dir(output_dir: str | os.PathLike, sweep: str) -> Path:
    """The folder holding one sweep's records: ``<output_dir>/<sweep>``."""
    return Path(output_dir) / sweep


def record_path(output_dir: str | os.PathLike, sweep: str, stem: str) -> Path:
    """Where a record with file stem ``stem`` (run id or config hash) is stored."""
    return run_dir(output_dir, sweep) / f"{stem}.json"


def samples_path(output_dir: str | os.PathLike, sweep: str, run_id: str, task: str) -> Path:
    """Where run ``run_id``'s samples of ``task`` are stored:
    ``<output_dir>/<sweep>/samples/<run_id>-<task>.jsonl`` (characters other than letters,
    digits, ``-``, ``_`` and ``.`` in ``task`` become ``_``). Keyed by run id, so two runs of one
    configuration keep their own samples."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in task)
    return run_dir(output_dir, sweep) / SAMPLES_DIR / f"{run_id}-{safe}.jsonl"


def save_samples(output_dir: str | os.PathLike, sweep: str, run_id: str, task: str, samples: list) -> Path:
    """Write ``samples`` (JSON-able dicts; other values via ``str``) as JSONL at
    :func:`samples_path`, atomically; returns the path. Raises :class:`E3Error` when unwritable."""
    path = samples_path(output_dir, sweep, run_id, task)
    lines = [json.dumps(s, default=str, ensure_ascii=False) for s in samples]
    _write(path, "\n".join(lines) + "\n")
    return path


def save(record: ResultRecord, output_dir: str | os.PathLike, sweep: str, *, stem: str | None = None) -> Path:
    """Write one record to :func:`record_path` (``stem`` defaults to its run id); returns the path.

    Sweeps pass ``stem=config_hash`` so a retried run replaces its failed record instead of
    adding a duplicate. Raises :class:`E3Error` when the directory is not writable.
    """
    path = record_path(output_dir, sweep, stem or record.run_id)
    _write(path, record.model_dump_json(indent=1))
    return path


def _write(path: Path, text: str) -> None:
    try:
        atomic_write_text(path, text)
    except OSError as exc:
        raise E3Error(f"cannot write results to {path}: {exc.strerror}", "choose a writable --output-dir") from None


def load(path: Path) -> ResultRecord:
    """The record stored at ``path``; :class:`E3Error` when unreadable or not a valid record."""
    try:
        return ResultRecord.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise E3Error(f"{path} is not a readable e3bench result ({type(exc).__name__})", "remove or fix it") from None


@dataclass
class Document:
    """What one JSON file under a results directory turned out to be (exactly one field set,
    or none for a JSON file that is no e3bench document at all, e.g. a user's file)."""

    path: Path
    record: ResultRecord | None = None
    #: a document of another kind: its ``kind`` and parsed JSON, unvalidated
    kind: str | None = None
    data: dict | None = None
    #: why this looks like a run record but cannot be read (unreadable, other schema, invalid)
    problem: str | None = None


def json_files(root: Path) -> Iterator[Path]:
    """Every ``*.json`` under ``root`` in sorted order, except hidden files (temporary files,
    the index) and anything inside a ``samples`` folder below ``root``."""
    for p in sorted(root.rglob("*.json")):
        if p.name.startswith(".") or SAMPLES_DIR in p.relative_to(root).parts[:-1]:
            continue
        yield p


def read_document(path: Path) -> Document:
    """Parse one JSON file and classify it (see :class:`Document`); never raises."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return Document(path, problem=f"{path}: not readable JSON ({type(exc).__name__})")
    if not isinstance(data, dict):
        return Document(path)
    if "kind" in data:
        return Document(path, kind=str(data["kind"]), data=data)
    if "schema_version" not in data or "run_id" not in data:
        return Document(path)  # not an e3bench record
    if data["schema_version"] != SCHEMA_VERSION:
        return Document(path, problem=f"{path}: schema_version {data['schema_version']} "
                                      f"(this e3bench reads {SCHEMA_VERSION})")  # fmt: skip
    try:
        return Document(path, record=ResultRecord.model_validate(data))
    except ValueError as exc:
        return Document(path, problem=f"{path}: invalid record ({str(exc).splitlines()[0]})")


@dataclass
class Scan:
    """Everything one pass over a results directory found."""

    #: readable run records, in path order
    records: list[tuple[Path, ResultRecord]] = field(default_factory=list)
    #: one line per JSON file that looks like a run record but could not be read
    problems: list[str] = field(default_factory=list)
    #: documents of other kinds, by ``kind``: ``{kind: [(path, parsed JSON), ...]}``
    others: dict[str, list[tuple[Path, dict]]] = field(default_factory=dict)


def scan(root: Path) -> Scan:
    """Read every JSON file under ``root`` once (see :func:`json_files`): run records, problems
    (so reports say what they skipped) and other applications' documents by kind. A missing
    ``root`` gives an empty :class:`Scan`."""
    out = Scan()
    if not root.exists():
        return out
    for p in json_files(root):
        doc = read_document(p)
        if doc.record is not None:
            out.records.append((p, doc.record))
        elif doc.problem is not None:
            out.problems.append(doc.problem)
        elif doc.kind is not None:
            out.others.setdefault(doc.kind, []).append((p, doc.data or {}))
    return out


def iter_records(root: Path) -> Iterator[tuple[Path, ResultRecord]]:
    """``(path, record)`` for every readable run record under ``root``."""
    yield from scan(root).records


def completed_hashes(root: Path) -> set[str]:
    """Config hashes of runs under ``root`` that finished successfully (resume skips them)."""
    return {rec.config_hash for _, rec in iter_records(root) if rec.status == "ok"}
