"""Results on disk: the one place that knows the layout of a results directory.

::

    <output_dir>/<sweep>/<stem>.json                      one record per run (stem: the run id;
                                                          sweeps use the config hash, so a retried
                                                          run replaces its failed record)
    <output_dir>/<sweep>/samples/<run_id>-<task>.jsonl    per-item predictions of one task
                                                          (``--log-samples``), one file per run
    <output_dir>/<sweep>/.claims/<config_hash>.claim      a sweep run in progress (pid, host,
                                                          start; :mod:`e3bench.sweep.claims`)

Records are written atomically (temp file + fsync + ``os.replace``), so a crash never leaves a
half-written record and never touches earlier ones; files get the user's umask mode. Every name
that becomes a path component here (sweep, run id, config hash, task) is checked to be one safe
component (:func:`e3bench.core.fsutil.safe_component`), behind the config's own validation.

Other applications may keep JSON documents in the same directory tree (``e3bench finetune``,
``e3bench train``). The store tells them apart by a top-level ``kind`` field, which run records
never have, and hands them over unread (grouped by ``kind``) so their own readers can parse them
from the same scan; the store itself knows nothing of what they contain.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import re
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from e3bench.core.errors import E3Error
from e3bench.core.fsutil import NAME_MAX, atomic_write_text, component_problem, safe_component
from e3bench.results.schema import SCHEMA_VERSION, ResultRecord, ServeRecord

#: Folder (inside a sweep folder) that holds the per-task samples files.
SAMPLES_DIR = "samples"


def sweep_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a sweep folder (None when it can): not one safe folder name
    (:func:`e3bench.core.fsutil.component_problem`: ``..``, ``a/b``, an absolute path, a
    newline, ...), or ``samples``, the folder name whose JSON files the store skips."""
    if name == SAMPLES_DIR:
        return f"'{SAMPLES_DIR}' is reserved for per-item samples files: its records would be invisible"
    return component_problem(name)


def claim_path(output_dir: str | os.PathLike, sweep: str, config_hash: str) -> Path:
    """The claim file of a sweep configuration being run: ``<sweep folder>/.claims/<hash>.claim``
    (not a ``.json``: scans never see it)."""
    return run_dir(output_dir, sweep) / ".claims" / f"{safe_component(config_hash, 'config hash')}.claim"


def run_dir(output_dir: str | os.PathLike, sweep: str) -> Path:
    """The folder holding one sweep's records: ``<output_dir>/<sweep>``. :class:`E3Error` when
    ``sweep`` cannot be a sweep folder (:func:`sweep_name_problem`): nothing is ever written
    outside ``output_dir``. (The config refuses such names first; this is the second check.)"""
    problem = sweep_name_problem(sweep)
    if problem is not None:
        raise E3Error(f"sweep name {sweep!r} cannot be used as a folder name: {problem}",
                      "use a plain name such as 'my-sweep' (letters, digits, '-', '_', '.')")  # fmt: skip
    return Path(output_dir) / sweep


def record_path(output_dir: str | os.PathLike, sweep: str, stem: str) -> Path:
    """Where a record with file stem ``stem`` (run id or config hash) is stored; :class:`E3Error`
    when ``sweep`` or ``stem`` is not one safe name."""
    return run_dir(output_dir, sweep) / f"{safe_component(stem, 'record name')}.json"


def _file_part(text: str, limit: int) -> str:
    """``text`` as a file-name part: characters other than letters, digits, ``-``, ``_`` and
    ``.`` become ``_``, plus a hash of the whole text when any did (so ``x?2`` and ``x_2``, two
    task names of one run, keep two files); longer than ``limit`` bytes → cut, plus that hash
    too, so two long names stay apart."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in text)
    if safe != text:
        safe = f"{safe}-{hashlib.sha256(text.encode('utf-8')).hexdigest()[:8]}"
    if len(safe.encode("utf-8")) > limit:
        cut = safe.encode("utf-8")[: limit - 13].decode("utf-8", "ignore")
        safe = f"{cut}-{hashlib.sha256(text.encode('utf-8')).hexdigest()[:12]}"
    return safe


def samples_path(output_dir: str | os.PathLike, sweep: str, run_id: str, task: str) -> Path:
    """Where run ``run_id``'s samples of ``task`` are stored:
    ``<output_dir>/<sweep>/samples/<run_id>-<task>.jsonl`` (characters other than letters,
    digits, ``-``, ``_`` and ``.`` in ``task`` become ``_``, so ``a/b`` or ``../x`` stay one file
    name; a task spec too long for a file name is cut and keeps a hash of the whole). Keyed by
    run id, so two runs of one configuration keep their own samples."""
    stem = f"{safe_component(run_id, 'run id')}-"
    name = stem + _file_part(task, NAME_MAX - len(stem) - len(".jsonl")) + ".jsonl"
    return run_dir(output_dir, sweep) / SAMPLES_DIR / safe_component(name, "samples file name")


def save_samples(output_dir: str | os.PathLike, sweep: str, run_id: str, task: str, samples: list) -> Path:
    """Write ``samples`` (JSON-able dicts; other values via ``str``) as JSONL at
    :func:`samples_path`, atomically; returns the path. Raises :class:`E3Error` when unwritable."""
    path = samples_path(output_dir, sweep, run_id, task)
    lines = [json.dumps(s, default=str, ensure_ascii=False) for s in samples]
    _write(path, "\n".join(lines) + "\n")
    return path


def save(record: ResultRecord | ServeRecord, output_dir: str | os.PathLike, sweep: str, *,
         stem: str | None = None) -> Path:  # fmt: skip
    """Write one record to :func:`record_path` (``stem`` defaults to its run id); returns the path.
    A :class:`~e3bench.results.schema.ServeRecord` (``kind: serve``) is stored the same way and
    read back by :func:`scan` among the other kinds.

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
    for _, p in json_keys(root):
        yield Path(p)


def json_keys(root: Path) -> list[tuple[str, str]]:
    """``(key, path)`` of every file :func:`json_files` yields, in its order: ``key`` is the path
    relative to ``root`` with ``/`` separators, ``path`` the file's path as text. One
    ``os.scandir`` walk (folders reached through a symbolic link are not entered, as
    ``Path.rglob`` does not), so listing 10,000 records costs no ``Path`` object per file."""
    found: list[tuple[tuple[str, ...], str]] = []

    def walk(folder: str, rel: tuple[str, ...]) -> None:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return  # removed while we looked, or not readable
        for e in entries:
            if e.name.endswith(".json") and not e.name.startswith("."):
                found.append(((*rel, e.name), e.path))
            try:
                sub = e.is_dir(follow_symlinks=False)
            except OSError:
                continue
            if sub and e.name != SAMPLES_DIR:  # nothing inside a samples folder is a record
                walk(e.path, (*rel, e.name))

    walk(str(root), ())
    found.sort(key=lambda kp: kp[0])
    return [("/".join(parts), path) for parts, path in found]


def read_document(path: Path) -> Document:
    """Parse one JSON file and classify it (see :class:`Document`); never raises.

    A run record is validated straight from its bytes (pydantic's JSON parser: about 3x faster
    than ``json.loads`` and validating the objects, which counts at thousands of records);
    anything else, or a record that does not validate, takes the slow path that classifies it
    and names the problem."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return Document(path, problem=f"{path}: not readable JSON ({type(exc).__name__})")
    if b'"kind"' not in raw and b'"schema_version"' in raw:  # else the slow path classifies it
        try:
            rec = ResultRecord.model_validate_json(raw)
        except ValueError:
            pass
        else:
            if rec.schema_version == SCHEMA_VERSION:
                return Document(path, record=rec)
    try:
        data = json.loads(raw.decode("utf-8"))
    except ValueError as exc:
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
        return Document(path, problem=f"{path}: invalid record ({_first_error(exc)})")


def _first_error(exc: ValueError) -> str:
    """``field.path: message`` of a pydantic validation error's first problem (``+ N more``)."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc).splitlines()[0]
    errs = errors()
    loc = ".".join(str(x) for x in errs[0].get("loc", ())) or "record"
    more = f", and {len(errs) - 1} more" if len(errs) > 1 else ""
    return f"{loc}: {errs[0].get('msg', '')}{more}"


@dataclass
class Scan:
    """Everything one pass over a results directory found."""

    #: readable run records, in path order
    records: list[tuple[Path, ResultRecord]] = field(default_factory=list)
    #: one line per JSON file that looks like a run record but could not be read
    problems: list[str] = field(default_factory=list)
    #: documents of other kinds, by ``kind``: ``{kind: [(path, parsed JSON), ...]}``
    others: dict[str, list[tuple[Path, dict]]] = field(default_factory=dict)


def check_root(root: str | os.PathLike) -> Path:
    """``root`` as a Path when it is an existing directory; else :class:`E3Error` (missing, or a
    file given where the results folder is expected)."""
    root = Path(root)
    if not root.exists():
        raise E3Error(f"results directory {root} does not exist", "pass the --output-dir of your runs")
    if not root.is_dir():
        raise E3Error(f"{root} is a file, not a results directory",
                      "pass the folder that holds the records (the --output-dir of your runs)")  # fmt: skip
    return root


def no_results_error(root: Path, problems: list[str]) -> E3Error:
    """The one "nothing to read under ``root``" error; names the skipped files and why
    (``problems`` as :attr:`Scan.problems`: up to 3 shown, then a count)."""
    if not problems:
        return E3Error(f"no e3bench results under {root}", "run `e3bench run -o DIR` or `e3bench sweep` first")
    shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
    newer = any(re.search(r"schema_version \d+ \(this e3bench reads", p) for p in problems)
    invalid = any(not re.search(r"schema_version \d+ \(this e3bench reads", p) for p in problems)
    fixes = (["records from a newer e3bench need that version (pip install -U e3bench)"] if newer else []) + (
        ["fix or remove the invalid files"] if invalid else [])
    return E3Error(f"no readable e3bench results under {root}: skipped {len(problems)} file(s): {shown}",
                   "; ".join(fixes))  # fmt: skip


def scan(root: Path) -> Scan:
    """Read every JSON file under ``root`` once (see :func:`json_files`): run records, problems
    (so reports say what they skipped) and other applications' documents by kind. A missing
    ``root`` gives an empty :class:`Scan`."""
    out = Scan()
    if not root.exists():
        return out
    with gc_paused():
        for p in json_files(root):
            doc = read_document(p)
            if doc.record is not None:
                out.records.append((p, doc.record))
            elif doc.problem is not None:
                out.problems.append(doc.problem)
            elif doc.kind is not None:
                out.others.setdefault(doc.kind, []).append((p, doc.data or {}))
    return out


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cycle collector off while records are parsed (and back as it was after):
    parsing makes millions of objects and no cyclic garbage, and each collection walks them all
    again: half the time of reading 10,000 records went to it. Nested pauses are one pause (the
    outermost turns it back on), so a caller can ``gc.freeze()`` what was read before the
    collector runs again (:func:`e3bench.report.render.build_report` does)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def iter_records(root: Path) -> Iterator[tuple[Path, ResultRecord]]:
    """``(path, record)`` for every readable run record under ``root``."""
    yield from scan(root).records


def completed_hashes(root: Path) -> set[str]:
    """Config hashes of runs under ``root`` that finished successfully (resume skips them)."""
    return {rec.config_hash for _, rec in iter_records(root) if rec.status == "ok"}
