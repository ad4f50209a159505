"""The causal half of :mod:`e3bench.backends.hf_scorer`: log-likelihoods of decoder-only Hugging
Face models, shared work computed once, batches sorted so padding stays small.

* **Groups**: requests with the same prefix (input tokens whose logits are not needed: the
  choices of one question) form a group; identical suffixes (MMLU's " A".." D") run once.
* **Stems**: prefixes in token order that share a long start (few-shot examples; at least
  :data:`MIN_STEM_TOKENS`, where it saves :data:`MIN_STEM_SAVED` tokens) form a cluster whose
  stem runs once. A :class:`StemMemo` (one per backend) keeps the last stem, or the last long
  single context, across calls, so a task handing its items over in pieces (the first item
  alone, for the progress ETA) still computes each shared stem once.
* **Two passes, each batched by its own length**: the *trunk* of each group (its prefix after the
  stem, plus the common start of its suffixes — PIQA's solutions often share one; a one-suffix
  group's whole input) runs in trunk-length-sorted batches, the LM head only at the positions
  that are scored. Every distinct rest of a suffix (a *branch*) then runs over a key/value cache
  gathered from its trunk's pass, in batches sorted by branch length: trunks and branches vary
  independently (PIQA: short goals, solutions of 3–100 tokens), and one sort for both left
  batches of one or two groups.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from e3bench.backends.hfcache import cache_from_layers, cache_kw, cache_layers, cache_of
from e3bench.core.api import LogLik

log = logging.getLogger(__name__)

#: Contexts that share at least this many leading tokens share one computation of them (few-shot
#: examples, a long task description). Below it, copying the cache costs more than it saves.
MIN_STEM_TOKENS = 16
#: ... and a stem is computed once only where that saves this many tokens: a cluster's units
#: batch only with each other, so small savings (a 2-way shared sentence start) cost more in
#: smaller batches than they save.
MIN_STEM_SAVED = 256
#: branch rows per pass: at most this many times the scoring batch size (contexts per pass)
BRANCH_ROWS_PER_CONTEXT = 4
#: branches wait for their pass until the trunks they need hold this many scoring token budgets
PENDING_BUDGETS = 2


@dataclass
class Req:
    """One request, split (:func:`~e3bench.backends.tokenization.split_causal`): ``index`` in the
    call, ``prefix`` (no logits needed), ``suffix`` (its logits score ``targets``)."""

    index: int
    prefix: tuple[int, ...]
    suffix: tuple[int, ...]
    targets: list[int]


def loglik(logits, targets: Sequence[int]) -> LogLik:
    """The one log_softmax → gather → sum → argmax: ``logits`` [len(targets), vocab] (torch)."""
    import torch
    import torch.nn.functional as F

    lp = F.log_softmax(logits.float(), dim=-1)
    tgt = torch.tensor(list(targets), dtype=torch.long, device=lp.device)
    tok_lp = lp.gather(1, tgt.unsqueeze(1)).squeeze(1)
    return LogLik(float(tok_lp.sum()), bool((lp.argmax(dim=-1) == tgt).all()), len(tgt))


#: padding always allowed in a pass, tokens: every forward pass reads all the weights once (on
#: the CPU, SmolLM2-135M fp32: ~100 ms a pass, ~2.6 ms a token), so merging short rows pays
#: (PIQA, 40 items: 10 % + 32 tokens gave 13 passes over 2,493 tokens for 2,054 real ones;
#: 25 % + 0, 15 over 2,479; 25 % + 32, 11 over 2,676; 50 % + 16, 10 over 2,889)
PASS_SLACK_TOKENS = 32


def batches(groups: list, padded, real, batch_size: int, token_budget: int, max_waste: float = 0.1) -> list[list]:
    """Consecutive runs of (already length-sorted) groups: at most ``batch_size`` groups, at most
    ``token_budget`` padded tokens, and padding at most ``max_waste`` of the real tokens (plus
    :data:`PASS_SLACK_TOKENS`)."""
    out: list[list] = []
    cur: list = []
    for g in groups:
        if cur:
            cand = cur + [g]
            p = padded(cand)
            if len(cur) >= batch_size or p > token_budget or p > (1 + max_waste) * real(cand) + PASS_SLACK_TOKENS:
                out.append(cur)
                cur = []
        cur.append(g)
    if cur:
        out.append(cur)
    return out


@dataclass
class StemMemo:
    """The key/value cache of one context computed alone (a stem, or a long context scored by
    itself), kept across calls of one backend: ``tokens`` and per layer ``(keys, values)`` of
    batch 1. A later stem starting with (part of) ``tokens`` reuses it, cropped."""

    tokens: tuple[int, ...] = ()
    layers: list = field(default_factory=list)

    def keep(self, tokens: tuple[int, ...], layers: list) -> None:
        """Remember ``layers`` (row 0 of each) as the keys/values of ``tokens``."""
        self.tokens, self.layers = tokens, [(k[:1], v[:1]) for k, v in layers]


def score_causal(model, reqs: list[Req], results, device, batch_size, token_budget, keep_ok: bool,
                 memo: StemMemo | None = None) -> None:  # fmt: skip
    """Group requests by prefix, cluster groups by a shared stem, run each cluster's trunks in
    trunk-length-sorted batches over the stem's cache, then its branches in branch-length-sorted
    batches over caches gathered from their trunks."""
    groups: dict[tuple[int, ...], dict[tuple[int, ...], list[Req]]] = {}
    for r in reqs:
        groups.setdefault(r.prefix, {}).setdefault(r.suffix, []).append(r)
    clusters = _stem_clusters(groups)
    for stem, members in clusters:
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
        units.sort(key=lambda u: (-len(u.trunk), u.trunk))
        stem_layers = _stem_layers(model, stem, device, memo) if stem else None
        # a call of one long context alone (a task's first item): keep its cache for the next call's stem
        remember = memo if len(clusters) == 1 and len(units) == 1 and len(stem + units[0].trunk) >= MIN_STEM_SAVED else None
        pending: list[_Branch] = []
        held = 0
        for batch in batches(units, _Unit.padded, _Unit.real, batch_size, token_budget):
            got = _run_trunks(model, batch, results, device, stem, stem_layers, keep_ok, remember)
            pending += got
            held += sum(len(u.trunk) for u in batch if u.branch_len)
            if held >= PENDING_BUDGETS * token_budget:
                _run_branches(model, pending, results, device, stem_layers, batch_size, token_budget)
                pending, held = [], 0
        if pending:
            _run_branches(model, pending, results, device, stem_layers, batch_size, token_budget)


@dataclass
class _Unit:
    """Work after a stem: ``trunk`` tokens run in the first pass; ``branches`` maps each suffix
    (after the ``shared`` start of all of them, which ends the trunk) to its requests; the single
    key ``()`` when the trunk itself ends with the scored tokens."""

    trunk: tuple[int, ...]
    branches: dict[tuple[int, ...], list[Req]]
    #: trailing trunk tokens that begin every branch's suffix (scored from the trunk pass)
    shared: int = 0

    @property
    def branch_len(self) -> int:
        return max(len(s) for s in self.branches)

    @staticmethod
    def padded(batch: list[_Unit]) -> int:
        return len(batch) * max(len(u.trunk) for u in batch)

    @staticmethod
    def real(batch: list[_Unit]) -> int:
        return sum(len(u.trunk) for u in batch)


@dataclass
class _Branch:
    """A suffix rest waiting for its pass: the trunk's keys/values are row ``row`` of ``kv`` (per
    layer, after the stem, right-padded), ``length`` of them real; ``partial``: per request, the
    part of its score taken from the trunk's shared positions."""

    tokens: tuple[int, ...]
    reqs: list[Req]
    kv: list
    row: int
    length: int
    partial: dict[int, LogLik]

    @staticmethod
    def padded(batch: list[_Branch]) -> int:
        return len(batch) * max(len(b.tokens) for b in batch)

    @staticmethod
    def real(batch: list[_Branch]) -> int:
        return sum(len(b.tokens) for b in batch)


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


def _ids(rows: list[Sequence[int]], device, pad: int = 0):
    """Right-padded ``[len(rows), longest]`` long tensor on ``device``."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(list(r), dtype=torch.long)
    return ids.to(device)


def _mask(lengths: list[int], width: int, device):
    """``[len(lengths), width]`` attention mask: ones over each row's first ``length`` tokens."""
    import torch

    return (torch.arange(width).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)).long().to(device)


def _stem_layers(model, stem: tuple[int, ...], device, memo: StemMemo | None) -> list:
    """Per layer ``(keys, values)`` of ``stem`` (batch 1): from ``memo`` where it starts with the
    stem (cropped), else computed (over the part of the memo it shares, when that is long)."""
    c = _common_prefix_len(memo.tokens, stem) if memo is not None else 0
    if memo is not None and c == len(stem):
        return [(k[:, :, :c], v[:, :, :c]) for k, v in memo.layers]
    kw: dict = {}
    if c >= MIN_STEM_TOKENS:  # one row, no padding: positions follow the cache
        kw = cache_kw(model, cache_from_layers(model, [(k[:, :, :c], v[:, :, :c]) for k, v in memo.layers]))
    else:
        c = 0
    keep = {"logits_to_keep": 1} if "logits_to_keep" in _forward_params(model) else {}
    out = model(input_ids=_ids([stem[c:]], device), use_cache=True, **kw, **keep)
    layers = cache_layers(cache_of(model, out))
    if memo is not None:
        memo.keep(stem, layers)
    return layers


def _forward_scored(model, spans: dict[int, tuple[int, int]], keep_ok: bool, **kw):
    """``model(**kw)`` with the LM head only at row ``i``'s positions ``[a, b)`` for each
    ``i: (a, b)`` of ``spans`` (a pre-hook on the output embeddings gathers those hidden states,
    so padding and other rows' positions cost nothing); returns the output and, per row of
    ``spans``, its logits ``[b - a, vocab]``. No spans: the head at one position only."""
    import torch

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    # a compiled forward would recompile for every new hook: keep the positions any row needs
    compiled = hasattr(getattr(model, "forward", None), "_torchdynamo_orig_callable")
    if not spans or head is None or compiled:
        keep = None
        if keep_ok:
            keep = sorted({p for a, b in spans.values() for p in range(a, b)}) or None
            kw["logits_to_keep"] = 1 if keep is None else torch.tensor(keep, dtype=torch.long, device=kw["input_ids"].device)
        out = model(**kw)
        col = {p: j for j, p in enumerate(keep)} if keep is not None else None
        return out, {i: out.logits[i, a:b] if col is None else out.logits[i, col[a] : col[a] + b - a]
                     for i, (a, b) in spans.items()}  # fmt: skip
    rows = torch.tensor([i for i, (a, b) in spans.items() for _ in range(a, b)], dtype=torch.long)
    cols = torch.tensor([p for a, b in spans.values() for p in range(a, b)], dtype=torch.long)
    width = kw["input_ids"].shape

    def gather(_module, args):
        hidden = args[0]
        if tuple(hidden.shape[:2]) != tuple(width):  # pragma: no cover - a model slicing before its head
            raise RuntimeError(f"LM head input {tuple(hidden.shape)} does not match the input ids {tuple(width)}")
        return (hidden[rows.to(hidden.device), cols.to(hidden.device)].unsqueeze(0), *args[1:])

    handle = head.register_forward_pre_hook(gather)
    try:
        out = model(**kw)
    finally:
        handle.remove()
    flat = out.logits.reshape(-1, out.logits.shape[-1])
    got, j = {}, 0
    for i, (a, b) in spans.items():
        got[i] = flat[j : j + b - a]
        j += b - a
    return out, got


def _forward_params(model) -> set[str]:
    import inspect

    try:
        return set(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):  # pragma: no cover
        return set()


def _run_trunks(model, batch: list[_Unit], results, device, stem, stem_layers, keep_ok: bool,
                remember: StemMemo | None) -> list[_Branch]:  # fmt: skip
    """One right-padded pass over the trunks (over the stem's cache, one row per unit): scores the
    one-row units, and returns the branches of the others with their trunk's keys/values."""
    import torch

    n, s0 = len(batch), len(stem)
    lengths = [len(u.trunk) for u in batch]
    width = max(lengths)
    ids = _ids([u.trunk for u in batch], device)
    branched = any(u.branch_len for u in batch)
    # positions of the trunk whose logits score something: the tail of each one-row unit
    need: dict[int, tuple[int, int]] = {}
    for i, u in enumerate(batch):
        k = u.shared if u.branch_len else max(len(r.targets) for r in u.branches[()])
        if k:
            need[i] = (len(u.trunk) - k, len(u.trunk))
    kw: dict = {}
    if stem_layers is not None:
        kw.update(cache_kw(model, cache_from_layers(model, [(k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1))
                                                            for k, v in stem_layers])))  # fmt: skip
    if n > 1:  # one row: no padding anywhere, positions follow the cache (SDPA's causal fast path)
        ones = torch.ones((n, s0), dtype=torch.long, device=device)
        kw["attention_mask"] = torch.cat([ones, _mask(lengths, width, device)], dim=1)
        kw["position_ids"] = (s0 + torch.arange(width, device=device)).unsqueeze(0).expand(n, -1)
    use_cache = branched or remember is not None
    out, scored = _forward_scored(model, need, keep_ok, input_ids=ids, use_cache=use_cache, **kw)

    def tail(i: int, k: int):  # the trunk logits of row i's last k positions
        return scored[i][len(scored[i]) - k :]

    for i, u in enumerate(batch):
        if not u.branch_len:
            for r in u.branches[()]:
                results[r.index] = loglik(tail(i, len(r.targets)), r.targets)
    if not use_cache:
        return []
    cache = cache_of(model, out)
    if cache is None:
        raise RuntimeError("model returned no key/value cache")
    layers = cache_layers(cache)
    if remember is not None:
        remember.keep(tuple(stem) + batch[0].trunk, layers)
    if not branched:
        return []
    # the trunks' own keys/values (a copy without the stem, so the stem's rows are not held)
    kv = [(k[:, :, s0:].contiguous(), v[:, :, s0:].contiguous()) if s0 else (k, v) for k, v in layers]
    out_rows: list[_Branch] = []
    for i, u in enumerate(batch):
        if not u.branch_len:
            continue
        for sfx, reqs in u.branches.items():
            partial = {}
            for r in reqs:  # targets scored at the shared positions (the trunk's tail)
                k = len(r.targets) - len(sfx)
                if k > 0:
                    partial[r.index] = loglik(tail(i, u.shared)[u.shared - k :], r.targets[:k])
            out_rows.append(_Branch(sfx, reqs, kv, i, len(u.trunk), partial))
    return out_rows


def _run_branches(model, rows: list[_Branch], results, device, stem_layers, batch_size, token_budget) -> None:
    """Every branch over its trunk's keys/values (gathered into one right-padded cache per
    pass, after the stem's), in batches sorted by branch length."""
    import torch

    rows = sorted(rows, key=lambda b: (-len(b.tokens), b.tokens))
    s0 = 0 if stem_layers is None else stem_layers[0][0].shape[2]
    for batch in batches(rows, _Branch.padded, _Branch.real, BRANCH_ROWS_PER_CONTEXT * batch_size, token_budget):
        n = len(batch)
        tw = max(b.length for b in batch)
        by_src: dict[int, list[tuple[int, int]]] = {}  # trunk pass → [(row here, row there)]
        for j, b in enumerate(batch):
            by_src.setdefault(id(b.kv), []).append((j, b.row))
        layers = []
        for li, (k0, v0) in enumerate(batch[0].kv):
            keys = k0.new_zeros((n, k0.shape[1], tw, k0.shape[3]))
            values = v0.new_zeros((n, v0.shape[1], tw, v0.shape[3]))
            for pairs in by_src.values():
                src_k, src_v = batch[pairs[0][0]].kv[li]
                w = min(tw, src_k.shape[2])
                dst = torch.tensor([j for j, _ in pairs], device=keys.device)
                sel = torch.tensor([r for _, r in pairs], device=keys.device)
                keys[dst, :, :w] = src_k.index_select(0, sel)[:, :, :w]
                values[dst, :, :w] = src_v.index_select(0, sel)[:, :, :w]
            if stem_layers is not None:
                sk, sv = stem_layers[li]
                keys = torch.cat([sk.expand(n, -1, -1, -1), keys], dim=2)
                values = torch.cat([sv.expand(n, -1, -1, -1), values], dim=2)
            layers.append((keys, values))
        ids = _ids([b.tokens for b in batch], device)
        kw = dict(cache_kw(model, cache_from_layers(model, layers)))
        trunk_mask = torch.cat([torch.ones((n, s0), dtype=torch.long, device=device),
                                _mask([b.length for b in batch], tw, device)], dim=1)  # fmt: skip
        kw["attention_mask"] = torch.cat([trunk_mask, _mask([len(b.tokens) for b in batch], ids.shape[1], device)], dim=1)
        offs = torch.tensor([s0 + b.length for b in batch], device=device)
        kw["position_ids"] = offs.unsqueeze(1) + torch.arange(ids.shape[1], device=device).unsqueeze(0)
        spans = {i: (len(b.tokens) - min(len(b.tokens), max(len(r.targets) for r in b.reqs)), len(b.tokens))
                 for i, b in enumerate(batch)}  # fmt: skip
        _, scored = _forward_scored(model, spans, True, input_ids=ids, use_cache=True, **kw)
        for i, b in enumerate(batch):
            for r in b.reqs:
                k = min(len(r.targets), len(b.tokens))
                got = loglik(scored[i][len(scored[i]) - k :], r.targets[len(r.targets) - k :])
                part = b.partial.get(r.index)
                if part is not None:
                    got = LogLik(part.logprob + got.logprob, part.is_greedy and got.is_greedy, part.n_tokens + got.n_tokens)
                results[r.index] = got
