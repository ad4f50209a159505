"""Pieces shared by the backends that run their own decode loop (onnxrt, llamacpp).

Token choice, stop/EOS handling and log-likelihood bookkeeping live here once so that every
backend picks the same token from the same logits and scores the same tokens as the PyTorch
reference (``e3bench.backends.hf_scorer.encode_pair`` is lm-eval's tokenization).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from e3bench.core.api import Generation, GenParams, LogLik
from e3bench.core.errors import E3Error


def next_tokens(
    logits: np.ndarray,
    params: GenParams,
    rng: np.random.Generator,
    *,
    suppress: Sequence[int] = (),
) -> np.ndarray:
    """One token per row of ``logits`` [batch, vocab]: greedy argmax, or temperature/top-p
    sampling. ``suppress`` ids get -inf (EOS while ``min_new_tokens`` is not reached — what
    transformers' ``MinNewTokensLengthLogitsProcessor`` does)."""
    x = np.asarray(logits, dtype=np.float32)
    if suppress:
        x = x.copy()
        x[:, list(suppress)] = -np.inf
    if not params.do_sample:
        return x.argmax(axis=-1)
    x = x.astype(np.float64) / max(params.temperature, 1e-6)
    x -= x.max(axis=-1, keepdims=True)
    p = np.exp(x)
    p /= p.sum(axis=-1, keepdims=True)
    out = np.empty(len(p), dtype=np.int64)
    for i, row in enumerate(p):
        if params.top_p < 1.0:
            order = np.argsort(-row)
            keep = np.cumsum(row[order]) - row[order] < params.top_p
            mask = np.zeros_like(row, dtype=bool)
            mask[order[keep]] = True
            row = np.where(mask, row, 0.0)
            row /= row.sum()
        out[i] = rng.choice(len(row), p=row)
    return out


def take_step(
    last_logits: np.ndarray,
    params: GenParams,
    rng: np.random.Generator,
    *,
    eos: int | None,
    step: int,
    rows: list[list[int]],
    done: np.ndarray,
) -> np.ndarray:
    """One decode step for a batch: pick each sequence's next token (EOS suppressed until the
    minimum length), append it to the rows still running and mark those that emitted EOS."""
    suppress = [eos] if (eos is not None and step < min_new(params)) else []
    nxt = next_tokens(last_logits, params, rng, suppress=suppress)
    for i, t in enumerate(nxt.tolist()):
        if not done[i]:
            rows[i].append(int(t))
            if not params.ignore_eos and t == eos:
                done[i] = True
    return nxt


def min_new(params: GenParams) -> int:
    return params.max_new_tokens if params.ignore_eos else (params.min_new_tokens or 0)


def finish(
    rows: list[list[int]], params: GenParams, eos: int | None, pad: int | None, decode: Callable[[list[int]], str]
) -> list[Generation]:
    """Cut at EOS (unless ignored) and stop strings, like the PyTorch backend does."""
    gens = []
    for row in rows:
        reason = "length"
        if not params.ignore_eos and eos is not None and eos in row:
            row = row[: row.index(eos)]
            reason = "eos"
        while not params.ignore_eos and pad is not None and row and row[-1] == pad:
            row = row[:-1]  # padding after a sequence of the batch finished early
        text = decode(row)
        for s in params.stop:
            cut = text.find(s)
            if cut >= 0:
                text, reason = text[:cut], "stop"
        gens.append(Generation(token_ids=row, text=text, finish_reason=reason))
    return gens


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def split_requests(
    encoded: Sequence[tuple[Sequence[int], Sequence[int]]], max_length: int
) -> list[tuple[tuple[int, ...], tuple[int, ...], list[int]]]:
    """lm-eval's causal layout: input = (ctx + cont)[-(max_length+1):][:-1]; the last
    ``len(cont)`` input positions predict ``cont``. Returns (prefix, suffix, targets) where
    ``prefix`` is the input whose logits are not needed (shared by a question's choices)."""
    out = []
    for ctx, cont in encoded:
        if not ctx or not cont:
            raise E3Error(
                "a log-likelihood request has an empty context or continuation after tokenization",
                "check the task's prompt and choices (a choice must not be empty)",
            )
        if len(cont) > max_length:
            raise E3Error(
                f"a continuation of {len(cont)} tokens is longer than the model's maximum length {max_length}",
                "shorten the choices or use a model with a longer context",
            )
        inp = (list(ctx) + list(cont))[-(max_length + 1) :][:-1]
        n = len(cont)
        out.append((tuple(inp[:-n]), tuple(inp[-n:]), list(cont)))
    return out


def score_rows(logprob_rows: np.ndarray, targets: Sequence[int]) -> LogLik:
    """``logprob_rows`` [len(targets), vocab] log-softmax rows predicting ``targets``."""
    idx = np.arange(len(targets))
    tgt = np.asarray(targets)
    lp = float(logprob_rows[idx, tgt].sum())
    greedy = bool((logprob_rows.argmax(axis=-1) == tgt).all())
    return LogLik(logprob=lp, is_greedy=greedy, n_tokens=len(targets))


def file_key(path: Path) -> str:
    """A cache key that changes when the file changes (name, size, mtime)."""
    st = path.stat()
    return f"{path.stem}-{st.st_size}-{int(st.st_mtime)}"


def dir_key(path: Path) -> str:
    """A cache key for a model directory: config + weight files' names, sizes and mtimes."""
    h = hashlib.sha256()
    for f in sorted(path.iterdir()):
        if f.is_file() and (f.suffix in (".json", ".safetensors", ".bin", ".model", ".txt")):
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{int(st.st_mtime)};".encode())
    return f"{path.name}-{h.hexdigest()[:12]}"


def atomic_dir(target: Path) -> Path:
    """A fresh temporary sibling of ``target``; ``commit_dir`` renames it into place."""
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def commit_dir(tmp: Path, target: Path) -> None:
    import shutil

    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)


def rss_bytes() -> int | None:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:  # noqa: BLE001  # pragma: no cover - psutil is a core dependency
        return None


def encode_requests(tokenizer, requests) -> list[tuple[list[int], list[int]]]:
    """(context, continuation) strings → token ids exactly as lm-eval splits them."""
    from e3bench.backends.hf_scorer import encode_pair

    return [encode_pair(tokenizer, c, x) for c, x in requests]


def group_by_prefix(reqs) -> dict[tuple[int, ...], list[int]]:
    """Indices of split requests sharing a prefix, so the prefix is evaluated once."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (prefix, _, _) in enumerate(reqs):
        groups.setdefault(prefix, []).append(i)
    return groups
