"""The PyTorch backend's batched log-likelihood scorer for Hugging Face causal LMs and
encoder-decoder models: what lm-evaluation-harness computes, computed faster.

Requests arrive tokenized and validated (:class:`e3bench.backends.base.BaseBackend` does that with
:mod:`e3bench.backends.tokenization`, lm-eval's rules); this module only runs the model.

* **Truncation is lm-eval's** (:func:`~e3bench.backends.tokenization.split_causal`): a causal input
  is ``(ctx + cont)[-(max_length + 1):][:-1]``.
* **Shared context is computed once** (causal): every request is split into a *prefix* (input
  tokens whose logits are not needed) and a *suffix* (the last ``len(cont)`` input tokens, whose
  logits score the continuation). Requests with the same prefix — the choices of one question —
  form a group; identical suffixes (MMLU's single-token " A".." D") run once.
* **Stems** (causal): prefixes in token order that share a long start (few-shot examples; at least
  :data:`MIN_STEM_TOKENS`, where it saves :data:`MIN_STEM_SAVED` tokens) form a cluster whose
  stem runs once; its key/value cache is repeated for every row of the cluster's batches.
* **Two passes per batch** (causal): the *trunk* of each group (its prefix after the stem, plus
  the common start of its suffixes — PIQA's solutions often share one; a one-suffix group's whole
  input) runs as one right-padded pass over the stem's cache, the LM head only at the positions
  that are scored; then every distinct rest of a suffix runs as one pass over its trunk's cache.
* **Batches are sorted by length** (longest first, as lm-eval) so padding stays small; on the CPU
  too (a pass over 16 short contexts costs less per token than 16 passes), see
  :data:`~e3bench.backends.base.SCORE_BATCH_SIZE`.
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

from e3bench.backends.base import default_score_batch_size
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
    as lm-eval does it; kept as a reference). ``batch_size`` None:
    :func:`~e3bench.backends.base.default_score_batch_size`.
    """
    import torch

    if strategy not in ("shared-prefix", "full"):
        raise ValueError(f"unknown scoring strategy '{strategy}' (use 'shared-prefix' or 'full')")
    if batch_size is None:
        batch_size = default_score_batch_size(str(device))
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
    """Group requests by prefix (the choices of one question), cluster groups by a shared stem
    (few-shot examples), and run each cluster's groups in length-sorted batches: the stem once,
    each batch's trunks (prefix after the stem; a one-suffix group's whole input) as one padded
    pass over the stem's cache, then every distinct suffix of the multi-suffix groups as one pass
    over the trunk's cache."""
    keep_ok = "logits_to_keep" in _forward_kwargs(model)
    groups: dict[tuple[int, ...], dict[tuple[int, ...], list[_Req]]] = {}
    for r in reqs:
        groups.setdefault(r.prefix, {}).setdefault(r.suffix, []).append(r)
    for stem, members in _stem_clusters(groups):
        units: list[_Unit] = []
        for prefix in members:
            sub = groups[prefix]
            rest = prefix[len(stem) :]
            if len(sub) == 1 or not rest:  # each distinct suffix is a whole row, scored at its tail
                units += [_Unit(rest + sfx, {(): rows}) for sfx, rows in sub.items()]
            else:  # the suffixes' common start (PIQA's two solutions often share one) runs once
                c = min(_common_prefix_len(next(iter(sub)), sfx) for sfx in sub)
                c = min(c, min(len(sfx) for sfx in sub) - 1)
                units.append(_Unit(rest + next(iter(sub))[:c], {sfx[c:]: rows for sfx, rows in sub.items()}, c))
        units.sort(key=lambda u: (-len(u.trunk), -u.branch_len, u.trunk))
        stem_cache = None
        if stem:
            ids = _ids([list(stem)], device)
            out = model(input_ids=ids, use_cache=True, **({"logits_to_keep": 1} if keep_ok else {}))
            stem_cache = cache_of(model, out)
        for batch in _batches(units, _Unit.padded, _Unit.real, batch_size, token_budget):
            _run_units(model, batch, results, device, stem, stem_cache, keep_ok)


#: Contexts that share at least this many leading tokens share one computation of them (few-shot
#: examples, a long task description). Below it, copying the cache costs more than it saves.
MIN_STEM_TOKENS = 16
#: ... and a stem is computed once only where that saves this many tokens: a cluster's units
#: batch only with each other, so small savings (a 2-way shared sentence start) cost more in
#: smaller batches than they save.
MIN_STEM_SAVED = 256


@dataclass
class _Unit:
    """Work after a stem: ``trunk`` tokens run in the first pass; ``branches`` maps each suffix
    (after the ``shared`` start of all of them, which ends the trunk) to its requests; the single
    key ``()`` when the trunk itself ends with the scored tokens."""

    trunk: tuple[int, ...]
    branches: dict[tuple[int, ...], list[_Req]]
    #: trailing trunk tokens that begin every branch's suffix (scored from the trunk pass)
    shared: int = 0

    @property
    def branch_len(self) -> int:
        return max(len(s) for s in self.branches)

    @staticmethod
    def padded(batch: list[_Unit]) -> int:
        t = max(len(u.trunk) for u in batch)
        b = max(u.branch_len for u in batch)
        return len(batch) * t + sum(len(u.branches) for u in batch if u.branch_len) * b

    @staticmethod
    def real(batch: list[_Unit]) -> int:
        return sum(len(u.trunk) + sum(len(s) for s in u.branches) for u in batch)


def _common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _stem_clusters(groups: dict) -> list[tuple[tuple[int, ...], list[tuple[int, ...]]]]:
    """``(stem, prefixes)``: runs of prefixes (in token order) sharing at least
    :data:`MIN_STEM_TOKENS` leading tokens (at most each one's length - 1, so every member keeps a
    trunk) become a cluster with that stem when it saves at least :data:`MIN_STEM_SAVED` tokens;
    all other prefixes form one cluster with no stem (so they batch together)."""
    runs: list[list] = []  # [members, common length]
    for p in sorted(groups):
        if runs:
            members, common = runs[-1]
            c = min(common, _common_prefix_len(members[-1], p), len(p) - 1)
            if c >= MIN_STEM_TOKENS:
                members.append(p)
                runs[-1][1] = c
                continue
        runs.append([[p], len(p) - 1])
    out: list[tuple[tuple[int, ...], list[tuple[int, ...]]]] = []
    loose: list[tuple[int, ...]] = []
    for members, c in runs:
        if len(members) > 1 and c * (len(members) - 1) >= MIN_STEM_SAVED:
            out.append((members[0][:c], members))
        else:
            loose += members
    if loose:
        out.append(((), loose))
    return out


def _ids(rows: list[list[int]], device, pad: int = 0):
    """Right-padded ``[len(rows), longest]`` long tensor on ``device``."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return ids.to(device)


def _mask(rows: list[Sequence[int]], device):
    import torch

    width = max(len(r) for r in rows)
    m = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        m[i, : len(r)] = 1
    return m.to(device)


def _run_units(model, batch: list[_Unit], results, device, stem, stem_cache, keep_ok: bool) -> None:
    """Trunk pass (over a copy of the stem's cache, one row per unit), then the branch pass."""
    import copy

    import torch

    n, s0 = len(batch), len(stem)
    trunks = [list(u.trunk) for u in batch]
    width = max(len(t) for t in trunks)
    ids = _ids(trunks, device)
    tmask = _mask(trunks, device)
    branched = any(u.branch_len for u in batch)
    # positions of the trunk whose logits score something: the tail of each one-row unit
    need: dict[int, tuple[int, int]] = {}
    for i, u in enumerate(batch):
        k = u.shared if u.branch_len else max(len(r.targets) for r in u.branches[()])
        if k:
            need[i] = (len(u.trunk) - k, len(u.trunk))
    kw: dict = {}
    cache = None
    if stem_cache is not None:
        cache = copy.deepcopy(stem_cache)
        if n > 1:
            cache.batch_repeat_interleave(n)
        kw.update(cache_kw(model, cache))
    one = n == 1  # one row: no padding anywhere, positions follow the cache (SDPA's causal fast path)
    full_mask = torch.cat([torch.ones((n, s0), dtype=torch.long, device=device), tmask], dim=1)
    if not one:
        kw["attention_mask"] = full_mask
        kw["position_ids"] = (s0 + torch.arange(width, device=device)).unsqueeze(0).expand(n, -1)
    positions = None
    if keep_ok:
        if need:
            positions = sorted({p for a, b in need.values() for p in range(a, b)})
            kw["logits_to_keep"] = torch.tensor(positions, dtype=torch.long, device=device)
        else:
            kw["logits_to_keep"] = 1
    out = model(input_ids=ids, use_cache=branched or cache is not None, **kw)
    logits = out.logits
    col = {p: j for j, p in enumerate(positions)} if positions is not None else None

    def tail(i: int, k: int):  # the trunk logits of row i's last k positions
        b = len(batch[i].trunk)
        return logits[i, b - k : b] if col is None else logits[i, col[b - k] : col[b - k] + k]  # contiguous

    for i, u in enumerate(batch):
        if not u.branch_len:
            for r in u.branches[()]:
                results[r.index] = _loglik(tail(i, len(r.targets)), r.targets)
    if not branched:
        return
    cache = cache_of(model, out)
    if cache is None:
        raise RuntimeError("model returned no key/value cache")
    rows_: list[tuple[int, tuple[int, ...], list[_Req]]] = [
        (g, sfx, reqs) for g, u in enumerate(batch) if u.branch_len for sfx, reqs in u.branches.items()
    ]
    sfx_rows = [list(s) for _, s, _ in rows_]
    sids = _ids(sfx_rows, device)
    smask = _mask(sfx_rows, device)
    gidx = torch.tensor([g for g, _, _ in rows_], dtype=torch.long, device=device)
    if len(rows_) != n or n > 1:
        cache.batch_select_indices(gidx)
    bkw = dict(cache_kw(model, cache))
    if not one:  # (one context: suffix padding only follows real tokens, which never see it)
        bkw["attention_mask"] = torch.cat([full_mask.index_select(0, gidx), smask], dim=1)
        offs = torch.tensor([s0 + len(batch[g].trunk) for g, _, _ in rows_], device=device)
        bkw["position_ids"] = offs.unsqueeze(1) + torch.arange(sids.shape[1], device=device).unsqueeze(0)
    shared = {g: tail(g, batch[g].shared) for g, _, _ in rows_ if batch[g].shared}
    blogits = model(input_ids=sids, use_cache=True, **bkw).logits
    for i, (g, sfx, reqs) in enumerate(rows_):
        rows = blogits[i, : len(sfx)]
        if g in shared:
            rows = torch.cat([shared[g], rows], dim=0)
        for r in reqs:
            results[r.index] = _loglik(rows[len(rows) - len(r.targets) :], r.targets)


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
