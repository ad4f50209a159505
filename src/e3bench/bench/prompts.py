"""Prompt sources for speed runs: synthetic of an exact token length (default), a text file
(one prompt per line), or a dataset field (``gsm8k:question``) so input lengths are real."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from e3bench.core.errors import E3Error
from e3bench.core.prose import SEED_TEXT, rotations, text_lines

class PromptSet:
    """Token-id prompts plus where they came from (recorded in the result)."""

    def __init__(self, token_ids: list[list[int]], source: str) -> None:
        if not token_ids:
            raise E3Error(f"no prompts found in {source}", "give a non-empty prompt source")
        self.token_ids = token_ids
        self.source = source

    def batch(self, size: int, offset: int = 0) -> list[list[int]]:
        """``size`` prompts starting at ``offset``, wrapping around the set."""
        n = len(self.token_ids)
        return [self.token_ids[(offset + i) % n] for i in range(size)]

    @property
    def lengths(self) -> list[int]:
        """Tokens per prompt."""
        return [len(t) for t in self.token_ids]


def synthetic(encode: Callable[[str], list[int]], n_tokens: int, count: int = 8) -> PromptSet:
    """``count`` distinct prompts of exactly ``n_tokens`` tokens (deterministic)."""
    prompts = rotations(encode(SEED_TEXT), n_tokens, count)
    return PromptSet(prompts, f"synthetic: {n_tokens} tokens of English prose, {count} offsets")


def from_file(encode: Callable[[str], list[int]], path: Path) -> PromptSet:
    """One prompt per non-empty line of a UTF-8 text file; :class:`E3Error` when missing or not UTF-8."""
    lines = text_lines(path)
    return PromptSet([encode(ln) for ln in lines], f"file: {path} ({len(lines)} prompts)")


def from_dataset(encode: Callable[[str], list[int]], spec: str, limit: int = 64) -> PromptSet:
    """``name:field``: the ``field`` of the first ``limit`` rows of dataset ``name``'s default split,
    found as the tasks find it (:func:`e3bench.evals.data.resolve`: ``$E3BENCH_DATA_DIR`` first,
    then the hub, built-in names such as ``openbookqa`` or ``gsm8k`` with their folder and hub
    config). Empty values are skipped. :class:`E3Error` for a missing field or dataset."""
    from e3bench.evals.data import LINE_KEY, resolve

    name, _, field = spec.partition(":")
    if not field:
        raise E3Error(f"dataset prompt source '{spec}' has no field", "use name:field, e.g. gsm8k:question")
    ds = resolve(name, max_rows=limit)
    if ds.rows and field not in ds.rows[0]:
        raise E3Error(
            f"dataset '{name}' has no field '{field}'",
            f"fields are: {', '.join(sorted(k for k in ds.rows[0] if k != LINE_KEY))}",
        )
    texts = [str(r[field]) for r in ds.rows if r.get(field)]
    return PromptSet([encode(t) for t in texts], f"dataset: {ds.source} field '{field}' ({len(texts)} prompts)")


def load_prompts(encode: Callable[[str], list[int]], source: str | None, n_tokens: int) -> PromptSet:
    """The prompts of ``--prompts``: None/``synthetic`` (``n_tokens`` tokens each), a text file, or
    ``name:field`` of a dataset; :class:`E3Error` for anything else."""
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
