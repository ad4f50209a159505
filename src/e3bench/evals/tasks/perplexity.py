"""Perplexity of a plain-text file: word perplexity, byte perplexity, bits per byte (lm-eval's
wikitext metrics) and token perplexity, from rolling-window log-likelihoods.

The file is cut into documents at blank lines, consecutive paragraphs merged until a document has
at least ``doc_chars`` characters (``doc_chars=0``: the whole file is one document). Each document
is scored with the backend's ``loglikelihood_rolling`` (lm-eval's: disjoint windows of the
backend's maximum length, or ``max_length`` tokens, the first conditioned on BOS/EOS; the same
windows on every backend). ``limit`` = the first N documents.

Aggregates are ratios of sums over documents (as lm-eval's ``weighted_perplexity`` and
``bits_per_byte``); their standard errors use the linearised ratio estimator over documents.
"""

from __future__ import annotations

import math
import os
import re
from typing import ClassVar

from e3bench.core.api import Backend, TaskScore
from e3bench.core.progress import Stage
from e3bench.evals.data import apply_limit, read_text, resolve_local_file
from e3bench.core.errors import E3Error
from e3bench.evals.tasks.base import check_backend, in_pieces, ratio_stderr


def split_documents(text: str, doc_chars: int) -> list[str]:
    """Paragraphs (blank-line separated) merged until each document has ``doc_chars`` characters;
    ``doc_chars <= 0``: the whole text as one document."""
    if doc_chars <= 0:
        return [text] if text.strip() else []
    docs: list[str] = []
    cur = ""
    for para in re.split(r"\n\s*\n", text):
        if not para.strip():
            continue
        cur = f"{cur}\n\n{para}" if cur else para
        if len(cur) >= doc_chars:
            docs.append(cur)
            cur = ""
    if cur:
        docs.append(cur)
    return docs


def count_words(doc: str) -> int:
    """lm-eval's wikitext word count."""
    return len(re.split(r"\s+", doc))


class Perplexity:
    """Perplexity of a text file (see the module docstring); needs ``loglikelihood``."""

    name: ClassVar[str] = "perplexity"
    requires: ClassVar[frozenset[str]] = frozenset({"loglikelihood"})

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        *,
        doc_chars: int = 2000,
        max_length: int | None = None,
        data_dir: str | os.PathLike | None = None,
        sample: bool = False,
    ) -> None:
        if path is None:
            raise E3Error(
                "task 'perplexity' needs a text file",
                "pass path=FILE.txt (e.g. text/tinyshakespeare.txt under $E3BENCH_DATA_DIR)",
            )
        self.path = resolve_local_file(path, data_dir_=data_dir)
        self.doc_chars = int(doc_chars)
        self.max_length = int(max_length) if max_length else None
        self.sample = sample

    def evaluate(self, backend: Backend, *, limit: int | None = None, seed: int = 0,
                 progress: Stage | None = None) -> TaskScore:  # fmt: skip
        """Word/byte/token perplexity and bits per byte of the first ``limit`` documents, from
        ``backend.loglikelihood_rolling``; per-document samples."""
        check_backend(backend, self.name, self.requires)
        docs = split_documents(read_text(self.path), self.doc_chars)
        docs = apply_limit(docs, limit, what=f"text file {self.path}", seed=seed, sample=self.sample)
        scored = in_pieces(backend, [[d] for d in docs],
                           lambda part: backend.loglikelihood_rolling(part, max_length=self.max_length), progress)
        nll = [-ll.logprob for ll in scored]
        toks = [ll.n_tokens for ll in scored]
        nbytes = [len(d.encode("utf-8")) for d in docs]
        words = [count_words(d) for d in docs]
        total = sum(nll)
        bpb = total / sum(nbytes) / math.log(2)
        per_word, per_byte = total / sum(words), total / sum(nbytes)
        metrics = {
            "word_perplexity": math.exp(per_word),
            "byte_perplexity": math.exp(per_byte),
            "bits_per_byte": bpb,
        }
        stderr = {
            "word_perplexity": metrics["word_perplexity"] * ratio_stderr(nll, words),
            "byte_perplexity": metrics["byte_perplexity"] * ratio_stderr(nll, nbytes),
            "bits_per_byte": ratio_stderr(nll, nbytes) / math.log(2),
        }
        if all(toks):
            metrics["token_perplexity"] = math.exp(total / sum(toks))
            stderr["token_perplexity"] = metrics["token_perplexity"] * ratio_stderr(nll, toks)
        samples = [
            {"doc_id": i, "chars": len(d), "bytes": b, "words": w, "tokens": t, "loglikelihood": -x}
            for i, (d, b, w, t, x) in enumerate(zip(docs, nbytes, words, toks, nll, strict=True))
        ]
        return TaskScore(
            task=self.name,
            metrics=metrics,
            stderr=stderr,
            n_items=len(docs),
            samples=samples,
            details={
                "scoring": "loglikelihood_rolling",
                "path": str(self.path),
                "doc_chars": self.doc_chars,
                "max_length": self.max_length,
                "limit": limit,
                "limit_unit": "documents",
                "total_tokens": sum(toks),
                "total_bytes": sum(nbytes),
            },
        )
