"""Decoding shared by the backends: the one token choice (greedy / temperature + top-p, EOS
suppressed below ``min_new_tokens`` as transformers does) for the backends that run their own
decode loop (onnxrt, llamacpp), and the one way generated rows become :class:`Generation`
objects (EOS and padding dropped, text cut at stop strings) for all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from e3bench.core.api import Generation, GenParams


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


def holds_stop(row: list[int], stop: Sequence[str], decode: Callable[[list[int]], str]) -> bool:
    """Whether the text of generated tokens ``row`` holds one of ``stop`` (empty strings never
    match): the one stop test of :func:`finish`, :func:`take_step`, the PyTorch greedy loop and
    its ``generate`` stopping criterion."""
    return any(s and s in decode(row) for s in stop)


def take_step(
    last_logits: np.ndarray,
    params: GenParams,
    rng: np.random.Generator,
    *,
    eos: int | None,
    step: int,
    rows: list[list[int]],
    done: np.ndarray,
    active: Sequence[int] | None = None,
    decode: Callable[[list[int]], str] | None = None,
) -> np.ndarray:
    """One decode step for a batch: pick each sequence's next token (EOS suppressed until the
    minimum length), append it to the rows still running and mark those that emitted EOS or,
    given ``decode``, whose text now holds one of ``params.stop``. ``active``: the rows of
    ``rows`` / ``done`` that the logits' rows belong to, in order (default: all of them; a loop
    that drops finished rows from its batch passes the ones left, see :func:`still_running`)."""
    idx = range(len(rows)) if active is None else active
    suppress = [eos] if (eos is not None and step < min_new(params)) else []
    nxt = next_tokens(last_logits, params, rng, suppress=suppress)
    for i, t in zip(idx, nxt.tolist(), strict=True):
        if not done[i]:
            rows[i].append(int(t))
            if not params.ignore_eos and t == eos:
                done[i] = True
            elif decode is not None and params.stop and holds_stop(rows[i], params.stop, decode):
                done[i] = True
    return nxt


def still_running(active: Sequence[int], done: np.ndarray) -> tuple[list[int], list[int]]:
    """``(positions, rows)``: which positions of the current batch (whose rows are ``active``)
    have not finished, and their rows — what a loop keeps of its batch for the next step."""
    keep = [j for j, i in enumerate(active) if not done[i]]
    return keep, [active[j] for j in keep]


def min_new(params: GenParams) -> int:
    """Steps during which EOS is suppressed: all of them for fixed-length speed runs."""
    return params.max_new_tokens if params.ignore_eos else (params.min_new_tokens or 0)


def finish(
    rows: list[list[int]], params: GenParams, eos: int | None, pad: int | None, decode: Callable[[list[int]], str]
) -> list[Generation]:
    """:class:`Generation` objects from generated token rows, by the contract's rules: cut at the
    first EOS (unless ignored; the EOS itself is dropped), drop trailing padding, decode; when a
    stop string appears, keep the tokens up to the one that completed it and cut the text before
    it (``finish_reason`` "stop"). Backends whose loop runs past a stop string (a batch keeps
    going until every row stopped) thus return what one that stopped exactly would."""
    gens = []
    for row in rows:
        reason = "length"
        if not params.ignore_eos and eos is not None and eos in row:
            row = row[: row.index(eos)]
            reason = "eos"
        while not params.ignore_eos and pad is not None and row and row[-1] == pad:
            row = row[:-1]  # padding after a sequence of the batch finished early
        text = decode(row)
        hits = [text.find(s) for s in params.stop if s and s in text]
        if hits:
            reason = "stop"
            text = text[: min(hits)]
            k = next(k for k in range(1, len(row) + 1) if holds_stop(row[:k], params.stop, decode))
            row = row[:k]
        gens.append(Generation(token_ids=row, text=text, finish_reason=reason))
    return gens
