"""Evaluation and fine-tuning data: the one dataset resolver (a local data directory first, the
Hugging Face hub otherwise) and the one JSONL reader.

Used by the tasks (``evals/tasks``), the speed runs' dataset prompts (``--prompts name:field``,
``bench/prompts.py``) and fine-tuning (``train``). Entry points::

    resolve(name, split=None, *, data_dir_=None) -> Dataset     # rows + source + split used
    load_dataset_rows(name, split, *, data_dir_=None) -> list[dict]   # = resolve(...).rows
    local_file(name, split, *, data_dir_=None) -> Path | None   # the local copy, if there is one
    local_relpath(name, split) -> Path                          # <folder>/<split>.jsonl
    read_jsonl(path) -> list[dict]                              # every JSONL file e3bench reads

``name`` is a built-in dataset (:data:`e3bench.evals.hub_schemas.DATASETS`: ``mmlu``,
``hellaswag``, ``arc_easy``, ``arc_challenge``, ``boolq``, ``copa``, ``openbookqa``, ``piqa``,
``siqa``, ``commonsense_qa``, ``rte``, ``cb``, ``wic``, ``wsc``, ``winogrande``,
``lambada_openai``, ``gsm8k``) or any other name, which is looked up as a folder of the data
directory and as a hub dataset id with no config and no mapping. ``split`` is e3bench's split name
(``test`` is the public evaluation split: the hub's ``validation`` where the test labels are
hidden); ``None`` takes the dataset's default split (:attr:`DatasetSpec.default_split`) and,
locally, falls back to the first of :data:`SPLITS` present. Errors are :class:`E3Error` naming
every place looked in.

Lookup order (``resolve("hellaswag", "validation")``):

1. ``data_dir_`` argument, else the ``E3BENCH_DATA_DIR`` environment variable: a directory laid out
   as ``<dir>/<folder>/<split>.jsonl`` (``mmlu/test.jsonl``, ``hellaswag/validation.jsonl``,
   ``openbook_qa/test.jsonl`` ...; the layout of the shared data README). Rows are in e3bench's
   schema, or in the hub's (a ``datasets`` export), which is mapped as in 2.
2. The Hugging Face hub through ``datasets.load_dataset(path, config, split=...)`` (the paths and
   configs of :mod:`e3bench.evals.hub_schemas`, lm-eval's sources), mapped to the same schema.
3. Otherwise an :class:`E3Error` that names every place looked in and how to point at a local copy.

Schemas (one dict per item; every row read also carries ``_line``, its 1-based line or position):
multiple choice ``{"query": str, "choices": [str], "gold": int}``; partial context (WinoGrande)
``{"context_options": [str], "continuation": str, "gold": int}``; single continuation (LAMBADA)
``{"context": str, "continuation": str}``; MMLU keeps the hub schema ``{question, subject,
choices, answer}`` and GSM8K ``{"question": str, "answer": str}`` (final answer after ``#### ``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from e3bench.core.errors import E3Error
from e3bench.evals.hub_schemas import DATASETS, DatasetSpec

ENV_VAR = "E3BENCH_DATA_DIR"
#: Key under which :func:`read_jsonl` (and the hub path) records each row's line number.
LINE_KEY = "_line"
#: Split names, in the order an unspecified split is looked for in a local folder.
SPLITS = ("test", "validation", "val", "train", "dev")


def data_dir(explicit: str | os.PathLike | None = None) -> Path | None:
    """The local data directory in effect: the explicit one, else ``$E3BENCH_DATA_DIR``."""
    value = explicit if explicit is not None else os.environ.get(ENV_VAR)
    return Path(value).expanduser() if value else None


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Every JSON object of a JSONL file, blank lines skipped, each with its 1-based line number
    under :data:`LINE_KEY`. A missing file, a malformed line or a line that is not an object is an
    :class:`E3Error` naming file and line."""
    path = Path(path)
    rows: list[dict] = []
    try:
        fh = path.open(encoding="utf-8")
    except FileNotFoundError:
        raise E3Error(f"data file {path} does not exist", "check the path") from None
    with fh:
        try:
            lines = list(enumerate(fh, start=1))
        except UnicodeDecodeError as exc:
            raise E3Error(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})", "convert it to UTF-8") from None
        for lineno, line in lines:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise E3Error(
                    f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno})",
                    "fix that line: every line must be one JSON object",
                ) from None
            except RecursionError:
                raise E3Error(f"{path}:{lineno}: JSON nested too deeply", "write one flat JSON object per line") from None
            if not isinstance(row, dict):
                raise E3Error(
                    f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}",
                    "write one JSON object per line",
                )
            row[LINE_KEY] = lineno
            rows.append(row)
    return rows


def validate_rows(rows: list[dict], path: str, required: dict[str, type | tuple[type, ...]]) -> None:
    """Check each row has the required fields with the right types (errors name file:line)."""
    for i, row in enumerate(rows):
        where = f"{path}:{row.get(LINE_KEY, i + 1)}"
        for key, typ in required.items():
            if key not in row:
                raise E3Error(
                    f"{where}: missing field '{key}' (has: {', '.join(k for k in row if k != LINE_KEY)})",
                    f"every item needs the fields {', '.join(required)}",
                )
            if not isinstance(row[key], typ) or isinstance(row[key], bool) and typ is int:
                raise E3Error(
                    f"{where}: field '{key}' should be {_typename(typ)}, "
                    f"got {type(row[key]).__name__}",
                    f"every item needs the fields {', '.join(required)}",
                )


def validate_multiple_choice(rows: list[dict], path: str) -> None:
    """Check ``{query: str, choices: [≥ 2 non-empty str], gold: valid index}`` per row;
    :class:`E3Error` naming ``path:line`` otherwise."""
    validate_rows(rows, path, {"query": str, "choices": list, "gold": int})
    for i, row in enumerate(rows):
        where = f"{path}:{row.get(LINE_KEY, i + 1)}"
        if len(row["choices"]) < 2 or not all(isinstance(c, str) and c for c in row["choices"]):
            raise E3Error(
                f"{where}: 'choices' must be a list of at least two non-empty strings",
                "fix the item's choices",
            )
        if not 0 <= row["gold"] < len(row["choices"]):
            raise E3Error(
                f"{where}: 'gold' = {row['gold']} is not an index into its "
                f"{len(row['choices'])} choices",
                "gold is the 0-based index of the correct choice",
            )


def _typename(typ) -> str:
    if isinstance(typ, tuple):
        return " or ".join(t.__name__ for t in typ)
    return typ.__name__


def apply_limit(rows: list, limit: int | None, *, what: str, seed: int | None = None,
                sample: bool = False) -> list:
    """First ``limit`` rows (lm-eval's convention), or a seeded random sample when ``sample``.

    An empty result is an :class:`E3Error`.
    """
    if limit is not None:
        if limit < 0:
            raise E3Error(f"limit must be positive, got {limit}", "pass --limit N with N ≥ 1")
        if sample and limit < len(rows):
            import random

            idx = sorted(random.Random(seed).sample(range(len(rows)), limit))
            rows = [rows[i] for i in idx]
        else:
            rows = rows[:limit]
    if not rows:
        raise E3Error(
            f"{what} has no items to evaluate" + (f" with limit={limit}" if limit is not None else ""),
            "raise --limit or check the data file",
        )
    return rows


def dataset_spec(name: str) -> DatasetSpec:
    """The built-in spec of ``name``; any other name is a local folder and a hub id of that name
    (no config, rows as they are, splits named as in :data:`SPLITS`)."""
    spec = DATASETS.get(name)
    return spec if spec is not None else DatasetSpec(name, name, None, {s: s for s in SPLITS}, dict)


@dataclass(frozen=True)
class Dataset:
    """Rows of one split of one dataset, and where they came from."""

    name: str
    split: str
    rows: list[dict]
    #: the local file, or ``hub:<path>[:<config>] split <hub split>``
    source: str


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def local_relpath(name: str, split: str) -> Path:
    """``<folder>/<split>.jsonl``: where ``name``'s ``split`` lies inside a data directory."""
    return Path(dataset_spec(name).local_name) / f"{split}.jsonl"


def local_file(name: str, split: str, *, data_dir_: str | os.PathLike | None = None) -> Path | None:
    """The local copy of ``name``'s ``split`` in the data directory in effect, or None."""
    root = data_dir(data_dir_)
    if root is None:
        return None
    path = root / local_relpath(name, split)
    return path if path.is_file() else None


def resolve(
    name: str, split: str | None = None, *, data_dir_: str | os.PathLike | None = None, max_rows: int | None = None
) -> Dataset:
    """Rows of ``name``'s ``split`` in e3bench's schema: the local data directory first, then the
    hub (see the module docstring). ``split=None``: the dataset's default split, or locally the
    first of :data:`SPLITS` present. ``max_rows``: only the first rows (a large hub split is not
    converted whole). Raises :class:`E3Error` naming every place looked in."""
    spec = dataset_spec(name)
    wanted = split or spec.default_split
    looked: list[str] = []
    root = data_dir(data_dir_)
    if root is not None:
        candidates = [wanted] if split else list(dict.fromkeys([wanted, *SPLITS]))
        for s in candidates:
            path = local_file(name, s, data_dir_=root)
            if path is not None:
                return Dataset(name, s, [spec.map_local(r) for r in read_jsonl(path)[:max_rows]], str(path))
        looked.append(f"{root / local_relpath(name, wanted)} (not found)")
    else:
        looked.append(f"no local data directory (${ENV_VAR} is not set)")
    hub_split = spec.hub_splits.get(wanted)
    if hub_split is None:
        raise E3Error(
            f"dataset '{name}' has no split '{wanted}' on the hub; looked in: {'; '.join(looked)}",
            f"provide {local_relpath(name, wanted)} in a directory named by {ENV_VAR}",
        )
    try:
        import datasets as hf_datasets
    except ImportError:
        looked.append(f"Hugging Face hub {spec.hub_id}: the 'datasets' package is not installed")
        raise _not_found(name, wanted, looked) from None
    try:
        # explicit False: a dataset's loading script never runs (datasets < 4 would ask or run it)
        ds = hf_datasets.load_dataset(spec.hub_path, spec.hub_name, split=hub_split, trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001 - hub/network/cache errors come in many types
        why = "offline mode (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE) and not cached" if _offline() else (
            f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        )
        looked.append(f"Hugging Face hub {spec.hub_id} split {hub_split}: {why}")
        raise _not_found(name, wanted, looked) from None
    if max_rows is not None:
        ds = ds.select(range(min(max_rows, len(ds))))
    rows = [spec.mapper(dict(doc)) for doc in ds]
    for i, row in enumerate(rows):
        row[LINE_KEY] = i + 1
    source = f"hub:{spec.hub_path}" + (f":{spec.hub_name}" if spec.hub_name else "") + f" split {hub_split}"
    return Dataset(name, wanted, rows, source)


def load_dataset_rows(name: str, split: str, *, data_dir_: str | os.PathLike | None = None) -> list[dict]:
    """``resolve(name, split, data_dir_=...).rows``: the rows the tasks score."""
    return resolve(name, split, data_dir_=data_dir_).rows


def _not_found(name: str, split: str, looked: list[str]) -> E3Error:
    spec = dataset_spec(name)
    return E3Error(
        f"could not find data for '{name}' (split {split}); looked in: " + "; ".join(looked),
        f"point {ENV_VAR} at a local copy laid out as <dir>/{local_relpath(name, split)} "
        f"(e.g. {ENV_VAR}=/path/to/data), or connect to the Hugging Face hub once so "
        f"'{spec.hub_path}' is cached",
    )


def read_text(path: str | os.PathLike) -> str:
    """The UTF-8 text of ``path``; :class:`E3Error` when missing or not UTF-8."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise E3Error(f"text file {path} does not exist", "check the path") from None
    except UnicodeDecodeError as exc:
        raise E3Error(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})", "convert it to UTF-8") from None


def resolve_local_file(path: str | os.PathLike, *, data_dir_: str | os.PathLike | None = None) -> Path:
    """A user-given data file: as given, else relative to the data directory."""
    p = Path(path).expanduser()
    if p.is_file():
        return p
    root = data_dir(data_dir_)
    if root is not None and (root / p).is_file():
        return root / p
    where = f" or under {root}" if root is not None else ""
    raise E3Error(f"data file '{path}' not found (looked at {p.resolve()}{where})", "check the path")


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of the bytes of ``path``: which version of a data file a result scored."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
