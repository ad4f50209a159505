"""The PyTorch backend's batched log-likelihood scorer for Hugging Face causal LMs and
encoder-decoder models: what lm-evaluation-harness computes, computed faster.

Requests arrive tokenized and validated (:class:`e3bench.backends.base.BaseBackend` does that with
:mod:`e3bench.backends.tokenization`, lm-eval's rules); this module only runs the model.

* **Truncation is lm-eval's** (:func:`~e3bench.backends.tokenization.split_causal`): a causal input
  is ``(ctx + cont)[-(max_length + 1):][:-1]``.
* **Causal models** (:mod:`e3bench.backends.hf_causal`): every request is split into a *prefix*
  (input tokens whose logits are not needed) and a *suffix* (the last ``len(cont)`` input tokens,
  whose logits score the continuation); shared prefixes, few-shot stems and the common start of
  suffixes run once, the LM head only at scored positions, trunks and suffix rests each in
  batches sorted by their own length (see :data:`~e3bench.backends.base.SCORE_BATCH_SIZE`).
* Encoder-decoder models run the encoder once per distinct context and the decoder on every
  continuation of that context in one batch.

Numbers agree with a naive one-request-at-a-time full forward pass to ~1e-5 (fp32); see
``tests/test_scoring.py``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence

from e3bench.backends.base import default_score_batch_size
from e3bench.backends.hf_causal import StemMemo, Req, batches, loglik, score_causal
from e3bench.backends.tokenization import Encoded, split_causal, truncate_seq2seq
from e3bench.core.api import LogLik

log = logging.getLogger(__name__)

#: Upper bound on padded tokens per forward pass (keeps memory flat for long contexts).
DEFAULT_TOKEN_BUDGET = 2048


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
    memo: StemMemo | None = None,
) -> list[LogLik]:
    """Score tokenized, validated ``(context ids, continuation ids)`` pairs; results in order.

    ``architecture``: "decoder-only" or "encoder-decoder". ``strategy``: "shared-prefix"
    (default; one pass per distinct context) or "full" (every request is its own full sequence,
    as lm-eval does it; kept as a reference). ``batch_size`` None:
    :func:`~e3bench.backends.base.default_score_batch_size`. ``memo``: the caller's
    :class:`~e3bench.backends.hf_causal.StemMemo` (one per loaded model), so a few-shot stem
    shared by several calls is computed once.
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
            splits = split_causal(requests, max_length)
            window = _sliding_window(model)
            if window is not None and any(len(sp.prefix) + len(sp.suffix) > window for sp in splits):
                # keys/values copied from a shared trunk into a branch lose the sliding window's
                # masking of the trunk's early tokens (Mistral/Qwen2/Gemma 3 fixtures with window
                # 16: 2-4 nats off the plain forward): score whole sequences instead
                strategy, memo = "full", None
            for i, sp in enumerate(splits):
                if strategy == "shared-prefix":
                    reqs.append(Req(i, sp.prefix, sp.suffix, list(sp.targets)))
                else:
                    reqs.append(Req(i, (), sp.prefix + sp.suffix, list(sp.targets)))
            keep_ok = "logits_to_keep" in _forward_kwargs(model)
            score_causal(model, reqs, results, device, batch_size, token_budget, keep_ok, memo)
        else:
            raise ValueError(f"cannot score architecture '{architecture}'")
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]


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
    for batch in batches(order, padded, real, batch_size, token_budget):
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
            ll = loglik(logits[i, : len(d)], d)
            for j in idxs:
                results[j] = ll


def _sliding_window(model) -> int | None:
    """The model's sliding-window length when any of its layers uses one, else None."""
    cfg = getattr(model, "config", None)
    cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    window = getattr(cfg, "sliding_window", None)
    if not isinstance(window, int) or getattr(cfg, "use_sliding_window", True) is False:
        return None
    types = getattr(cfg, "layer_types", None)
    if types is not None and "sliding_attention" not in types:
        return None
    return window

