"""Prompt sources for speed runs: synthetic of an exact token length (default), a text file
(one prompt per line), or a dataset field (``gsm8k:question``) so input lengths are real."""

from __future__ import annotations

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
    """One prompt per non-empty line of a UTF-8 text file; :class:`E3Error` when missing or not UTF-8."""
    if not path.is_file():
        raise E3Error(f"prompt file not found: {path}", "pass a text file with one prompt per line")
    try:
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError as exc:
        raise E3Error(f"prompt file {path} is not UTF-8 text ({exc.reason})", "save it as UTF-8") from None
    lines = [ln for ln in lines if ln]
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
