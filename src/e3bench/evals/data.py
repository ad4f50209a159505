"""Evaluation data: a local data directory first, the Hugging Face hub otherwise.

Lookup order for a built-in dataset (``load_dataset_rows("hellaswag", "validation")``):

1. ``data_dir`` argument, else the ``E3BENCH_DATA_DIR`` environment variable: a directory laid out
   as ``<dir>/<name>/<split>.jsonl`` (``mmlu/test.jsonl``, ``hellaswag/validation.jsonl``,
   ``openbook_qa/test.jsonl`` ...; the layout of the shared data README). Rows are already in
   e3bench's schema.
2. The Hugging Face hub through ``datasets.load_dataset`` (cais/mmlu, Rowan/hellaswag,
   allenai/ai2_arc, super_glue, allenai/openbookqa, openai/gsm8k), mapped to the same schema.
3. Otherwise an :class:`E3Error` that names every place looked in and how to point at a local copy.

Schemas (one dict per item):

* multiple choice ``{"query": str, "choices": [str], "gold": int}`` (+ ``subject`` for MMLU, which
  keeps the hub schema ``{question, subject, choices, answer}``)
* GSM8K ``{"question": str, "answer": str}`` (final answer after ``#### ``)
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from e3bench.core.errors import E3Error

ENV_VAR = "E3BENCH_DATA_DIR"


def data_dir(explicit: str | os.PathLike | None = None) -> Path | None:
    """The local data directory in effect: the explicit one, else ``$E3BENCH_DATA_DIR``."""
    value = explicit if explicit is not None else os.environ.get(ENV_VAR)
    return Path(value).expanduser() if value else None


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSONL file; a malformed line is an :class:`E3Error` naming file and line."""
    path = Path(path)
    rows: list[dict] = []
    try:
        fh = path.open(encoding="utf-8")
    except FileNotFoundError:
        raise E3Error(f"data file {path} does not exist", "check the path") from None
    with fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise E3Error(
                    f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno})",
                    "fix that line: every line must be one JSON object",
                ) from None
            if not isinstance(row, dict):
                raise E3Error(
                    f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}",
                    "write one JSON object per line",
                )
            row["_line"] = lineno
            rows.append(row)
    return rows


def validate_rows(rows: list[dict], path: str, required: dict[str, type | tuple[type, ...]]) -> None:
    """Check each row has the required fields with the right types (errors name file:line)."""
    for i, row in enumerate(rows):
        where = f"{path}:{row.get('_line', i + 1)}"
        for key, typ in required.items():
            if key not in row:
                raise E3Error(
                    f"{where}: missing field '{key}' (has: {', '.join(k for k in row if k != '_line')})",
                    f"every item needs the fields {', '.join(required)}",
                )
            if not isinstance(row[key], typ) or isinstance(row[key], bool) and typ is int:
                raise E3Error(
                    f"{where}: field '{key}' should be {_typename(typ)}, "
                    f"got {type(row[key]).__name__}",
                    f"every item needs the fields {', '.join(required)}",
                )


def validate_multiple_choice(rows: list[dict], path: str) -> None:
    validate_rows(rows, path, {"query": str, "choices": list, "gold": int})
    for i, row in enumerate(rows):
        where = f"{path}:{row.get('_line', i + 1)}"
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


# --------------------------------------------------------------------------- hub mappings
def _hellaswag_preprocess(text: str) -> str:
    """lm-eval's ``hellaswag.utils.preprocess`` (WikiHow artifacts removed)."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    text = text.replace("  ", " ")
    return text


def _map_hellaswag(doc: dict) -> dict:
    ctx = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
    return {
        "query": _hellaswag_preprocess(doc["activity_label"] + ": " + ctx),
        "choices": [_hellaswag_preprocess(e) for e in doc["endings"]],
        "gold": int(doc["label"]),
    }


def _gold_from_key(doc: dict) -> int:
    labels = list(doc["choices"]["label"])
    key = str(doc["answerKey"]).strip()
    if key in labels:
        return labels.index(key)
    # ARC sometimes labels 1..4 while answerKey is a letter (or the reverse)
    return ["A", "B", "C", "D", "E"].index(key) if key in "ABCDE" else int(key) - 1


def _map_arc(doc: dict) -> dict:
    return {
        "query": "Question: " + doc["question"],
        "choices": list(doc["choices"]["text"]),
        "gold": _gold_from_key(doc),
    }


def _map_openbookqa(doc: dict) -> dict:
    return {"query": doc["question_stem"], "choices": list(doc["choices"]["text"]), "gold": _gold_from_key(doc)}


def _map_boolq(doc: dict) -> dict:
    # the llm-foundry export (our local layout) writes "Passage: ...\nQuestion: ...?"
    return {
        "query": f"Passage: {doc['passage']}\nQuestion: {doc['question']}?",
        "choices": ["no", "yes"],
        "gold": int(doc["label"]),
    }


def _map_copa(doc: dict) -> dict:
    # llm-foundry's COPA: "<premise without final period>, therefore|because" + lowercased choices
    connector = {"cause": "because", "effect": "therefore"}[doc["question"]]
    premise = doc["premise"].strip()
    if premise.endswith("."):
        premise = premise[:-1]

    def low(c: str) -> str:
        return c[0].lower() + c[1:]

    return {
        "query": f"{premise}, {connector}",
        "choices": [low(doc["choice1"]), low(doc["choice2"])],
        "gold": int(doc["label"]),
    }


def _identity(doc: dict) -> dict:
    return dict(doc)


@dataclass(frozen=True)
class DatasetSpec:
    """Where a built-in dataset lives locally and on the hub, and how to map hub rows."""

    local_name: str  # folder under the data dir
    hub_path: str
    hub_name: str | None
    hub_splits: dict[str, str]  # our split name -> hub split name
    mapper: Callable[[dict], dict]


DATASETS: dict[str, DatasetSpec] = {
    "mmlu": DatasetSpec("mmlu", "cais/mmlu", "all", {"test": "test", "val": "validation", "dev": "dev"}, _identity),
    "hellaswag": DatasetSpec("hellaswag", "Rowan/hellaswag", None, {"validation": "validation", "train": "train"}, _map_hellaswag),
    "arc_easy": DatasetSpec("arc_easy", "allenai/ai2_arc", "ARC-Easy", {"test": "test", "train": "train", "validation": "validation"}, _map_arc),
    "boolq": DatasetSpec("boolq", "super_glue", "boolq", {"test": "validation", "train": "train"}, _map_boolq),
    "copa": DatasetSpec("copa", "super_glue", "copa", {"test": "validation", "train": "train"}, _map_copa),
    "openbookqa": DatasetSpec("openbook_qa", "allenai/openbookqa", "main", {"test": "test", "train": "train", "validation": "validation"}, _map_openbookqa),
    "gsm8k": DatasetSpec("gsm8k", "openai/gsm8k", "main", {"test": "test", "train": "train"}, _identity),
}


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def load_dataset_rows(name: str, split: str, *, data_dir_: str | os.PathLike | None = None) -> list[dict]:
    """Rows of a built-in dataset in e3bench's schema (local data directory first, then the hub)."""
    spec = DATASETS.get(name)
    if spec is None:
        raise E3Error(f"no built-in dataset '{name}'", f"known: {', '.join(sorted(DATASETS))}")
    looked: list[str] = []
    root = data_dir(data_dir_)
    if root is not None:
        path = root / spec.local_name / f"{split}.jsonl"
        if path.is_file():
            return read_jsonl(path)
        looked.append(f"{path} (not found)")
    else:
        looked.append(f"no local data directory (${ENV_VAR} is not set)")
    hub_split = spec.hub_splits.get(split)
    if hub_split is None:
        raise E3Error(
            f"dataset '{name}' has no split '{split}' on the hub; looked in: {'; '.join(looked)}",
            f"provide {spec.local_name}/{split}.jsonl in a directory named by {ENV_VAR}",
        )
    hub_id = f"{spec.hub_path}" + (f" ({spec.hub_name})" if spec.hub_name else "")
    try:
        import datasets as hf_datasets
    except ImportError:
        looked.append(f"Hugging Face hub {hub_id}: the 'datasets' package is not installed")
        raise _not_found(name, split, spec, looked) from None
    try:
        ds = hf_datasets.load_dataset(spec.hub_path, spec.hub_name, split=hub_split)
    except Exception as exc:  # noqa: BLE001 - hub/network/cache errors come in many types
        why = "offline mode (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE) and not cached" if _offline() else (
            f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        )
        looked.append(f"Hugging Face hub {hub_id} split {hub_split}: {why}")
        raise _not_found(name, split, spec, looked) from None
    rows = [spec.mapper(dict(doc)) for doc in ds]
    for i, row in enumerate(rows):
        row["_line"] = i + 1
    return rows


def _not_found(name: str, split: str, spec: DatasetSpec, looked: list[str]) -> E3Error:
    return E3Error(
        f"could not find data for '{name}' (split {split}); looked in: " + "; ".join(looked),
        f"point {ENV_VAR} at a local copy laid out as <dir>/{spec.local_name}/{split}.jsonl "
        f"(e.g. {ENV_VAR}=/path/to/data), or connect to the Hugging Face hub once so "
        f"'{spec.hub_path}' is cached",
    )


def read_text(path: str | os.PathLike) -> str:
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
