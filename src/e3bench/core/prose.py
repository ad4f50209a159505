"""Synthetic English prose of an exact token length — what speed runs prompt with by default
and what ONNX static-int8 calibration runs on — and reading one text per line from a file.

Both live here (not in ``bench.prompts``) because the backends' ONNX exporter needs them too and
backends import only the core.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from e3bench.core.errors import E3Error

# Real English prose (public-domain, Darwin's "On the Origin of Species", ch. 1) so the
# tokenizer sees ordinary text; repeated and cut to exactly N tokens.
SEED_TEXT = (
    "When we look to the individuals of the same variety or sub-variety of our older cultivated "
    "plants and animals, one of the first points which strikes us, is, that they generally differ "
    "much more from each other, than do the individuals of any one species or variety in a state "
    "of nature. When we reflect on the vast diversity of the plants and animals which have been "
    "cultivated, and which have varied during all ages under the most different climates and "
    "treatment, I think we are driven to conclude that this greater variability is simply due to "
    "our domestic productions having been raised under conditions of life not so uniform as, and "
    "somewhat different from, those to which the parent-species have been exposed under nature. "
)


def rotations(base: Sequence[int], n_tokens: int, count: int) -> list[list[int]]:
    """``count`` distinct, deterministic token sequences of exactly ``n_tokens``: ``base``
    (e.g. the tokens of :data:`SEED_TEXT`) rotated to start at ``k * 17`` and repeated.

    Raises E3Error when ``base`` is empty."""
    if not base:
        raise E3Error("the tokenizer produced no tokens for the synthetic prompt", "check the model's tokenizer")
    out = []
    for k in range(count):
        start = (k * 17) % len(base)  # distinct but deterministic starting points
        ids: list[int] = []
        while len(ids) < n_tokens:
            ids.extend(list(base[start:]) + list(base[:start]))
        out.append(ids[:n_tokens])
    return out


def text_lines(path: str | os.PathLike) -> list[str]:
    """The non-empty, stripped lines of a UTF-8 text file.

    Raises E3Error when the file is missing or not UTF-8."""
    path = Path(path)
    if not path.is_file():
        raise E3Error(f"prompt file not found: {path}", "pass a text file with one prompt per line")
    try:
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError as exc:
        raise E3Error(f"prompt file {path} is not UTF-8 text ({exc.reason})", "save it as UTF-8") from None
    return [ln for ln in lines if ln]
