"""The PyTorch backend's batched log-likelihood scorer for Hugging Face causal LMs and
encoder-decoder models: what lm-evaluation-harness computes, computed faster.

Requests arrive tokenized and validated (:class:`e3bench.backends.base.BaseBackend` does that with
:mod:`e3bench.backends.tokenization`, lm-eval's rules); this module only runs the model.

* **Truncation is lm-eval's** (:func:`~e3bench.backends.tokenization.split_causal`): a causal input
  is ``(ctx + cont)[-(max_length + 1):][:-1]``.
* **Shared context is computed once** (causal): every request is split into a *prefix* (input
  tokens whose logits are not needed) and a *suffix* (the last ``len(cont)`` input tokens, whose
  logits score the continuation). Requests with the same prefix — the choices of one question —
  form a group: the prefix runs once per group (only one position through the LM head), its
  key/value cache is gathered for each distinct suffix, and the suffixes run as one batch. Identical
  suffixes (MMLU's single-token " A".." D") run once.
* **Batches are sorted by length** (longest first, as lm-eval) so padding stays small, and the LM
  head + log-softmax run only over the positions that are scored.
* Encoder-decoder models run the encoder once per distinct context and the decoder on every
  continuation of that context in one batch.

Numbers agree with a naive one-request-at-a-time full forward pass to ~1e-5 (fp32); see
``tests/test_scoring.py``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from e3bench.backends.base import default_batch_size
from e3bench.backends.hfcache import cache_kw, cache_of
from e3bench.backends.tokenization import Encoded, split_causal, truncate_seq2seq
from e3bench.core.api import LogLik

log = logging.getLogger(__name__)

#: Upper bound on padded tokens per forward pass (keeps memory flat for long contexts).
DEFAULT_TOKEN_BUDGET = 2048


# ----------------------------------------------------------------------------- token level
@dataclass
class _Req:
    index: int
    prefix: tuple[int, ...]
    suffix: tuple[int, ...]
    targets: list[int]


def hf_loglikelihood_tokens(
    model,
    requests: Sequence[Encoded],
    *,
    device,
    architecture: str,
    max_length: int,
    batch_size: int | None = None,
    strategy: str = "shared-prefix",
    token_budget: int = DEFAULT_TOKEN_BUDGET,
) -> list[LogLik]:
    """Score tokenized, validated ``(context ids, continuation ids)`` pairs; results in order.

    ``architecture``: "decoder-only" or "encoder-decoder". ``strategy``: "shared-prefix"
    (default; one pass per distinct context) or "full" (every request is its own full sequence,
    as lm-eval does it; kept as a reference). ``batch_size`` None: 1 on CPU, 16 on accelerators.
    """
    import torch

    if strategy not in ("shared-prefix", "full"):
        raise ValueError(f"unknown scoring strategy '{strategy}' (use 'shared-prefix' or 'full')")
    if batch_size is None:
        batch_size = default_batch_size(str(device))
    results: list[LogLik | None] = [None] * len(requests)
    with torch.inference_mode(), _no_cudnn_attention(device):
        if architecture == "encoder-decoder":
            _score_seq2seq(model, requests, results, device, batch_size, max_length, token_budget)
        elif architecture == "decoder-only":
            reqs = []
            for i, sp in enumerate(split_causal(requests, max_length)):
                if strategy == "shared-prefix":
                    reqs.append(_Req(i, sp.prefix, sp.suffix, list(sp.targets)))
                else:
                    reqs.append(_Req(i, (), sp.prefix + sp.suffix, list(sp.targets)))
            _score_causal(model, reqs, results, device, batch_size, token_budget)
        else:
            raise ValueError(f"cannot score architecture '{architecture}'")
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]


def _loglik(logits, targets: Sequence[int]) -> LogLik:
    """The one log_softmax → gather → sum → argmax: ``logits`` [len(targets), vocab] (torch)."""
    import torch
    import torch.nn.functional as F

    lp = F.log_softmax(logits.float(), dim=-1)
    tgt = torch.tensor(list(targets), dtype=torch.long, device=lp.device)
    tok_lp = lp.gather(1, tgt.unsqueeze(1)).squeeze(1)
    return LogLik(float(tok_lp.sum()), bool((lp.argmax(dim=-1) == tgt).all()), len(tgt))


def _no_cudnn_attention(device):
    """On CUDA, keep SDPA off its cuDNN backend while scoring.

    cuDNN attention builds a graph for every new (batch, query, key) shape. Scoring sees hundreds
    of shapes, and on an H100 (torch 2.11, bf16, SmolLM2-shaped model, 200 HellaSwag-like items) a
    first pass took 21.3 s with cuDNN against 9.3 s without (16.3 vs 5.6 s in another run). Warm,
    over shapes already seen, cuDNN is faster (6.1 vs 8.3 s), but an evaluation is one pass.
    fp32 never used cuDNN, so it is unaffected. Generation is untouched.
    """
    import contextlib

    if not str(device).startswith("cuda"):
        return contextlib.nullcontext()
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # torch < 2.3
        return contextlib.nullcontext()
    keep = [b for b in ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "MATH") if hasattr(SDPBackend, b)]
    return sdpa_kernel([getattr(SDPBackend, b) for b in keep])


def _forward_kwargs(model) -> set[str]:
    try:
        return set(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):  # pragma: no cover
        return set()


def _batches(groups: list, padded, real, batch_size: int, token_budget: int, max_waste: float = 0.25) -> list[list]:
    """Consecutive runs of (already length-sorted) groups: at most ``batch_size`` groups, at most
    ``token_budget`` padded tokens, and padding at most ``max_waste`` of the real tokens."""
    out: list[list] = []
    cur: list = []
    for g in groups:
        if cur:
            cand = cur + [g]
            p = padded(cand)
            if len(cur) >= batch_size or p > token_budget or p > (1 + max_waste) * real(cand):
                out.append(cur)
                cur = []
        cur.append(g)
    if cur:
        out.append(cur)
    return out


def _score_causal(model, reqs: list[_Req], results, device, batch_size, token_budget) -> None:
    accepts = _forward_kwargs(model)
    keep_ok = "logits_to_keep" in accepts

    # group by prefix; inside a group, distinct suffixes are the rows to run
    groups: dict[tuple[int, ...], dict[tuple[int, ...], list[_Req]]] = {}
    for r in reqs:
        groups.setdefault(r.prefix, {}).setdefault(r.suffix, []).append(r)
    if batch_size <= 1 and keep_ok:
        _score_causal_sequential(model, groups, results, device)
        return
    # longest first (prefix, then longest suffix), deterministic tie-break
    order = sorted(
        groups.items(),
        key=lambda kv: (-len(kv[0]), -max(len(s) for s in kv[1]), kv[0]),
    )
    # A group with one distinct suffix (MMLU's " A".." D" all score the logits after the same
    # input) needs no cache: one pass over prefix + suffix, LM head on the last len(suffix) only.
    single = [g for g in order if len(g[1]) == 1]
    multi = [g for g in order if len(g[1]) > 1]
    if not keep_ok:  # cannot restrict the LM head: run singles through the generic path
        multi, single = order, []
    with_prefix = [g for g in multi if len(g[0]) > 0]
    flat = [((), {pfx + sfx: rows}) for pfx, sub in single + [g for g in multi if not g[0]] for sfx, rows in sub.items()]
    flat.sort(key=lambda g: (-len(next(iter(g[1]))), next(iter(g[1]))))

    def padded(batch) -> int:
        p = max(len(pfx) for pfx, _ in batch)
        s = max(len(sfx) for _, rows in batch for sfx in rows)
        n_rows = sum(len(rows) for _, rows in batch)
        return len(batch) * p + n_rows * s

    def real(batch) -> int:
        return sum(len(pfx) + sum(len(sfx) for sfx in rows) for pfx, rows in batch)

    for batch in _batches(with_prefix, padded, real, batch_size, token_budget):
        _run_prefix_batch(model, batch, results, device, {"logits_to_keep": 1} if keep_ok else {})
    for batch in _batches(flat, padded, real, max(batch_size, 1), token_budget):
        _run_rows(model, batch, results, device, None, None, None, keep_ok=keep_ok)


#: Contexts that share at least this many leading tokens with the previous one reuse its cache
#: (few-shot examples, MMLU's subject line). Below it, copying the cache costs more than it saves.
MIN_STEM_TOKENS = 16


def _common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _cropped_copy(cache, n_tokens: int):
    """A copy of ``cache`` holding its first ``n_tokens`` positions, or None if this cache type
    cannot be cut back (sliding-window / recurrent layers): the caller then recomputes."""
    import copy

    try:
        out = copy.deepcopy(cache)
        remove = out.get_seq_length() - n_tokens
        if remove > 0:
            out.crop(-remove)  # transformers ≥ 5: negative = number of tokens to drop
        if out.get_seq_length() != n_tokens:
            return None
        return out
    except (RuntimeError, ValueError, TypeError, AttributeError):
        return None


def _score_causal_sequential(model, groups, results, device) -> None:
    """One context at a time (no padding, no masks: the fastest path on CPU), visiting contexts in
    token order so that consecutive ones sharing a stem — few-shot examples, a task description —
    compute it once: the stem's cache is copied and cropped instead of recomputed."""
    import copy

    import torch

    items = sorted(groups.items(), key=lambda kv: kv[0])
    stem: tuple[int, ...] = ()
    stem_cache = None
    for idx, (prefix, sub) in enumerate(items):
        nxt = items[idx + 1][0] if idx + 1 < len(items) else ()
        c = _common_prefix_len(prefix, stem) if stem_cache is not None else 0
        cache = None
        if c >= MIN_STEM_TOKENS:
            cache = _cropped_copy(stem_cache, c)
        if cache is None:
            c = 0
        keep_next = len(prefix) > 0 and _common_prefix_len(prefix, nxt) >= MIN_STEM_TOKENS
        if len(prefix) == 0:
            _run_rows(model, [((), sub)], results, device, None, None, None, keep_ok=True)
            continue
        if len(sub) == 1 and not keep_next:
            # all requests need the logits after the same input: one pass, LM head on the tail
            sfx, reqs = next(iter(sub.items()))
            seq = list(prefix[c:]) + list(sfx)
            kmax = max(len(r.targets) for r in reqs)
            ids = torch.tensor([seq], dtype=torch.long, device=device)
            out = model(input_ids=ids, **cache_kw(model, cache), use_cache=cache is not None, logits_to_keep=kmax)
            logits = out.logits[0]
            for r in reqs:
                results[r.index] = _loglik(logits[kmax - len(r.targets) :], r.targets)
            continue
        rest = list(prefix[c:])
        ids = torch.tensor([rest], dtype=torch.long, device=device)
        out = model(input_ids=ids, **cache_kw(model, cache), use_cache=True, logits_to_keep=1)
        cache = cache_of(model, out)
        if keep_next:
            stem, stem_cache = prefix, copy.deepcopy(cache)
        _run_rows(model, [(prefix, sub)], results, device, cache, None, [len(prefix)])


def _run_prefix_batch(model, batch, results, device, logits_kw) -> None:
    import torch

    prefixes = [list(p) for p, _ in batch]
    plen = max(len(p) for p in prefixes)
    if len(batch) == 1:
        # one context: no padding anywhere that a real token could see, so no masks at all
        # (lets SDPA take its causal fast path); suffix rows' right padding only follows them.
        ids = torch.tensor(prefixes, dtype=torch.long, device=device)
        out = model(input_ids=ids, use_cache=True, **logits_kw)
        _run_rows(model, batch, results, device, cache_of(model, out), None, [plen])
        return
    ids = torch.zeros((len(batch), plen), dtype=torch.long)
    mask = torch.zeros((len(batch), plen), dtype=torch.long)
    for i, p in enumerate(prefixes):
        ids[i, : len(p)] = torch.tensor(p, dtype=torch.long)
        mask[i, : len(p)] = 1
    ids, mask = ids.to(device), mask.to(device)
    pos = torch.arange(plen, device=device).unsqueeze(0).expand(len(batch), -1)
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **logits_kw)
    cache = cache_of(model, out)
    if cache is None:
        raise RuntimeError("model returned no key/value cache")
    _run_rows(model, batch, results, device, cache, mask, [len(p) for p in prefixes])


def _run_rows(model, batch, results, device, cache, prefix_mask, prefix_lens, keep_ok=False) -> None:
    """Run every distinct suffix of the batch's groups as one right-padded batch and score."""
    import torch

    rows: list[tuple[int, tuple[int, ...], list[_Req]]] = []
    for g, (_, sub) in enumerate(batch):
        for sfx, reqs in sub.items():
            rows.append((g, sfx, reqs))
    slen = max(len(s) for _, s, _ in rows)
    n = len(rows)
    ids = torch.zeros((n, slen), dtype=torch.long)
    smask = torch.zeros((n, slen), dtype=torch.long)
    for i, (_, s, _) in enumerate(rows):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        smask[i, : len(s)] = 1
    ids, smask = ids.to(device), smask.to(device)
    offset = 0  # position in the returned logits of row position 0
    if cache is not None:
        gidx = torch.tensor([g for g, _, _ in rows], dtype=torch.long, device=device)
        if n != len(batch) or len(batch) > 1:
            cache.batch_select_indices(gidx)
        if prefix_mask is None:  # one context, no padding before any real token
            out = model(input_ids=ids, **cache_kw(model, cache), use_cache=True)
        else:
            mask = torch.cat([prefix_mask.index_select(0, gidx), smask], dim=1)
            offs = torch.tensor([prefix_lens[g] for g, _, _ in rows], device=device)
            pos = offs.unsqueeze(1) + torch.arange(slen, device=device).unsqueeze(0)
            out = model(
                input_ids=ids, attention_mask=mask, position_ids=pos, **cache_kw(model, cache), use_cache=True
            )
    else:
        # full sequences; the LM head only over the last max-continuation positions when possible
        kmax = max(len(r.targets) for _, _, reqs in rows for r in reqs)
        kw = {}
        if keep_ok and n == 1:
            kw["logits_to_keep"] = kmax
            offset = slen - kmax
        if n == 1:
            out = model(input_ids=ids, use_cache=False, **kw)
        else:
            pos = torch.arange(slen, device=device).unsqueeze(0).expand(n, -1)
            out = model(input_ids=ids, attention_mask=smask, position_ids=pos, use_cache=False)
    logits = out.logits
    for i, (_, sfx, reqs) in enumerate(rows):
        for r in reqs:
            k = len(r.targets)
            results[r.index] = _loglik(logits[i, len(sfx) - k - offset : len(sfx) - offset], r.targets)


def _score_seq2seq(model, requests, results, device, batch_size, max_length, token_budget) -> None:
    import torch

    groups: dict[tuple[int, ...], dict[tuple[int, ...], list[int]]] = {}
    for i, (ctx, cont) in enumerate(requests):
        enc, dec = truncate_seq2seq(ctx, cont, max_length)
        groups.setdefault(enc, {}).setdefault(dec, []).append(i)
    order = sorted(groups.items(), key=lambda kv: (-len(kv[0]), kv[0]))

    def padded(batch) -> int:
        p = max(len(e) for e, _ in batch)
        s = max(len(d) for _, sub in batch for d in sub)
        return len(batch) * p + sum(len(sub) for _, sub in batch) * s

    def real(batch) -> int:
        return sum(len(e) + sum(len(d) for d in sub) for e, sub in batch)

    encoder = model.get_encoder()
    prep = getattr(model, "prepare_decoder_input_ids_from_labels", None)
    for batch in _batches(order, padded, real, batch_size, token_budget):
        elen = max(len(e) for e, _ in batch)
        ids = torch.zeros((len(batch), elen), dtype=torch.long)
        emask = torch.zeros((len(batch), elen), dtype=torch.long)
        for i, (e, _) in enumerate(batch):
            ids[i, : len(e)] = torch.tensor(e, dtype=torch.long)
            emask[i, : len(e)] = 1
        ids, emask = ids.to(device), emask.to(device)
        hidden = encoder(input_ids=ids, attention_mask=emask).last_hidden_state
        rows = [(g, d, idx) for g, (_, sub) in enumerate(batch) for d, idx in sub.items()]
        dlen = max(len(d) for _, d, _ in rows)
        labels = torch.zeros((len(rows), dlen), dtype=torch.long)
        for i, (_, d, _) in enumerate(rows):
            labels[i, : len(d)] = torch.tensor(d, dtype=torch.long)
        labels = labels.to(device)
        gidx = torch.tensor([g for g, _, _ in rows], dtype=torch.long, device=device)
        from transformers.modeling_outputs import BaseModelOutput

        enc_out = BaseModelOutput(last_hidden_state=hidden.index_select(0, gidx))
        kwargs = {"encoder_outputs": enc_out, "attention_mask": emask.index_select(0, gidx)}
        if prep is not None:
            kwargs["decoder_input_ids"] = prep(labels=labels)
        else:
            kwargs["labels"] = labels
        logits = model(**kwargs, use_cache=False).logits
        for i, (_, d, idxs) in enumerate(rows):
            ll = _loglik(logits[i, : len(d)], d)
            for j in idxs:
                results[j] = ll
