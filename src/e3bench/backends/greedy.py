"""Greedy generation for a batch of prompts whose finished rows leave the batch.

transformers' ``generate`` keeps every row of a batch in every decode step until the last row
stops: a row that hit its stop string at token 20 is still computed (and discarded) at token 256
while one other row rambles on. On a CPU a decode step costs about the same for one row as for
a few (the step reads every weight once), so batching pays there, but only while the batch is
full; with GSM8K-like output lengths (most rows stop early, a few run to the limit) a batch of 8
under ``generate`` was slower than one prompt at a time (20 items: 248 s vs lm-eval's ~190 s at
batch 1, 2026-12-01). transformers' continuous batching (``generate_batch``) has no stop strings
and runs a paged cache in a background thread, so it cannot replace this either. This loop is
written by hand for that reason, and is kept to exactly what ``generate`` does for greedy
decoding of a decoder-only model:

* prefill of the left-padded batch with its attention mask and position ids ``cumsum(mask) − 1``
  (as ``generate`` derives them), the LM head at the last position only;
* each step, the argmax token of every running row; a row finishes at an end-of-sequence token
  (any of the generation config's, as ``generate``), when its decoded text holds a stop string
  (its generated text only, as :func:`~e3bench.backends.decoding.finish`), or at ``max_new_tokens``;
* finished rows are dropped from the key/value cache (``DynamicCache.batch_select_indices``),
  the mask and the next input, so each step computes the running rows only (a cache without
  that method keeps them, as ``generate`` does, and their tokens are ignored).

What it returns are token rows for :func:`e3bench.backends.decoding.finish`, which cuts them by
the contract's rules (EOS dropped, text cut before the stop string) exactly as for ``generate``'s
output; tests/test_generation_batch.py checks the texts equal one-prompt-at-a-time ``generate``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from e3bench.backends.decoding import holds_stop
from e3bench.backends.hfcache import cache_kw, cache_of


#: layer types (a config's ``layer_types``) whose cache is keys and values
ATTENTION_LAYERS = frozenset({"full_attention", "sliding_attention", "chunked_attention"})


def fits(model) -> bool:
    """Whether :func:`greedy_rows` can run ``model``: an attention model whose ``forward`` takes a
    key/value cache argument (``past_key_values`` / ``cache``). Stateful models (transformers'
    ``_is_stateful``: Mamba, RWKV, Jamba, Qwen3-Next, ...) keep ``generate``: their layers apply
    the whole attention mask to a one-token step (``generate`` prepares their inputs itself), so
    the loop's decode steps computed garbage (Mamba's tokens repeated)."""
    import inspect

    from e3bench.backends.hfcache import cache_name

    if getattr(model, "_is_stateful", False):
        return False
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    if any(t not in ATTENTION_LAYERS for t in getattr(config, "layer_types", None) or ()):
        return False  # hybrids (LFM2's conv layers): cache layers without batch_select_indices, masks of their own
    try:
        return cache_name(model) in inspect.signature(type(model).forward).parameters
    except (TypeError, ValueError):
        return False


def eos_ids(model, tokenizer) -> set[int]:
    """The token ids that end a sequence for ``generate``: the generation config's
    ``eos_token_id`` (an int or a list), else the tokenizer's."""
    got = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if got is None:
        got = tokenizer.eos_token_id
    if got is None:
        return set()
    return {int(x) for x in (got if isinstance(got, (list, tuple)) else [got])}


def greedy_rows(
    model,
    ids,
    mask,
    *,
    max_new_tokens: int,
    eos: set[int],
    stop: Sequence[str],
    decode: Callable[[list[int]], str],
) -> list[list[int]]:
    """Greedy continuations of the left-padded batch ``ids`` / ``mask`` ([batch, width] long
    tensors on the model's device): per row the generated token ids, ending with the token that
    finished it (an EOS or the token that completed a stop string) or at ``max_new_tokens``."""
    import torch

    n = ids.shape[0]
    rows: list[list[int]] = [[] for _ in range(n)]
    alive = list(range(n))  # batch position → row index
    finished: set[int] = set()
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
        cache = cache_of(model, out)
        for step in range(max_new_tokens):
            nxt = out.logits[:, -1, :].argmax(dim=-1)
            keep: list[int] = []
            for j, t in enumerate(nxt.tolist()):
                if alive[j] in finished:
                    continue
                row = rows[alive[j]]
                row.append(int(t))
                if int(t) in eos or (stop and holds_stop(row, stop, decode)):
                    finished.add(alive[j])
                    continue
                keep.append(j)
            if not keep or step + 1 == max_new_tokens:
                break
            if len(keep) < len(alive) and hasattr(cache, "batch_select_indices"):  # else finished rows ride along
                sel = torch.tensor(keep, dtype=torch.long, device=ids.device)
                cache.batch_select_indices(sel)
                mask, nxt = mask.index_select(0, sel), nxt.index_select(0, sel)
                alive = [alive[j] for j in keep]
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
            positions = mask.sum(dim=1, keepdim=True) - 1
            out = model(input_ids=nxt.unsqueeze(1), attention_mask=mask, position_ids=positions, use_cache=True,
                        **cache_kw(model, cache))  # fmt: skip
            cache = cache_of(model, out)
    return rows
