"""Prompt sources for speed runs: synthetic of an exact token length (default), a text file
(one prompt per line), or a dataset field (``gsm8k:question``) so input lengths are real."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from e3bench.core.errors import E3Error

# Real English prose (public-domain, Darwin's "On the Origin of Species", ch. 1) so the
# tokenizer sees ordinary text; repeated and cut to exactly N tokens.
_SEED_TEXT = (
    "When we look to the individuals of the same variety or sub-variety of our older cultivated "
    "plants and animals, one of the first points which strikes us, is, that they generally differ "
    "much more from each other, than do the individuals of any one species or variety in a state "
    "of nature. When we reflect on the vast diversity of the plants and animals which have been "
    "cultivated, and which have varied during all ages under the most different climates and "
    "treatment, I think we are driven to conclude that this greater variability is simply due to "
    "our domestic productions having been raised under conditions of life not so uniform as, and "
    "somewhat different from, those to which the parent-species have been exposed under nature. "
)
_SPLITS = ("test", "validation", "val", "train", "dev")


class PromptSet:
    """Token-id prompts plus where they came from (recorded in the result)."""

    def __init__(self, token_ids: list[list[int]], source: str) -> None:
        if not token_ids:
            raise E3Error(f"no prompts found in {source}", "give a non-empty prompt source")
        self.token_ids = token_ids
        self.source = source

    def batch(self, size: int, offset: int = 0) -> list[list[int]]:
        n = len(self.token_ids)
        return [self.token_ids[(offset + i) % n] for i in range(size)]

    @property
    def lengths(self) -> list[int]:
        return [len(t) for t in self.token_ids]


def synthetic(encode: Callable[[str], list[int]], n_tokens: int, count: int = 8) -> PromptSet:
    """``count`` distinct prompts of exactly ``n_tokens`` tokens (deterministic)."""
    base = encode(_SEED_TEXT)
    if not base:
        raise E3Error("the tokenizer produced no tokens for the synthetic prompt", "check the model's tokenizer")
    prompts = []
    for k in range(count):
        start = (k * 17) % len(base)  # distinct but deterministic starting points
        ids: list[int] = []
        while len(ids) < n_tokens:
            ids.extend(base[start:] + base[:start])
        prompts.append(ids[:n_tokens])
    return PromptSet(prompts, f"synthetic: {n_tokens} tokens of English prose, {count} offsets")


def from_file(encode: Callable[[str], list[int]], path: Path) -> PromptSet:
    if not path.is_file():
        raise E3Error(f"prompt file not found: {path}", "pass a text file with one prompt per line")
    try:
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError as exc:
        raise E3Error(f"prompt file {path} is not UTF-8 text ({exc.reason})", "save it as UTF-8") from None
    lines = [ln for ln in lines if ln]
    return PromptSet([encode(ln) for ln in lines], f"file: {path} ({len(lines)} prompts)")


def _local_rows(name: str, data_dir: Path) -> tuple[Path, list[dict]] | None:
    folder = data_dir / name
    for split in _SPLITS:
        f = folder / f"{split}.jsonl"
        if f.is_file():
            rows = []
            for i, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise E3Error(f"{f}:{i}: malformed JSON line ({exc.msg})", "fix or remove that line") from None
            return f, rows
    return None


def from_dataset(encode: Callable[[str], list[int]], spec: str, limit: int = 64) -> PromptSet:
    """``name:field`` — local ``$E3BENCH_DATA_DIR/name/<split>.jsonl`` first, then the hub."""
    name, _, field = spec.partition(":")
    if not field:
        raise E3Error(f"dataset prompt source '{spec}' has no field", "use name:field, e.g. gsm8k:question")
    data_dir = os.environ.get("E3BENCH_DATA_DIR")
    rows: list[dict] | None = None
    where = ""
    if data_dir:
        found = _local_rows(name, Path(data_dir))
        if found:
            f, rows = found
            where = str(f)
    if rows is None:
        try:
            import datasets
        except ImportError:
            raise E3Error(
                f"dataset '{name}' not found locally"
                + (f" under {data_dir}" if data_dir else " (E3BENCH_DATA_DIR is not set)"),
                "set E3BENCH_DATA_DIR to a folder with <name>/test.jsonl, or pip install 'e3bench[data]'",
            ) from None
        try:
            ds = datasets.load_dataset(name, split="test")
        except Exception as exc:  # noqa: BLE001 - hub errors come in many types
            raise E3Error(
                f"could not load dataset '{name}' from the Hugging Face hub ({type(exc).__name__})",
                "set E3BENCH_DATA_DIR to a local copy (folder with <name>/test.jsonl)",
            ) from None
        rows = [dict(r) for r in ds.select(range(min(limit, len(ds))))]
        where = f"hub:{name}"
    if rows and field not in rows[0]:
        raise E3Error(
            f"dataset '{name}' has no field '{field}'",
            f"fields are: {', '.join(sorted(rows[0]))}",
        )
    texts = [str(r[field]) for r in rows[:limit] if r.get(field)]
    return PromptSet([encode(t) for t in texts], f"dataset: {where} field '{field}' ({len(texts)} prompts)")


def load_prompts(encode: Callable[[str], list[int]], source: str | None, n_tokens: int) -> PromptSet:
    if source is None or source == "synthetic":
        return synthetic(encode, n_tokens)
    p = Path(source).expanduser()
    if p.suffix in (".txt", ".text") or p.exists():
        return from_file(encode, p)
    if ":" in source:
        return from_dataset(encode, source)
    raise E3Error(
        f"prompt source '{source}' is neither a file nor dataset:field",
        "use --prompts prompts.txt or --prompts gsm8k:question",
    )
