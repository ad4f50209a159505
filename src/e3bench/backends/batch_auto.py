"""``--score-batch-size auto`` (lm-eval's ``--batch_size auto``): the largest scoring batch that
fits, for the longest input about to be scored.

* **CUDA** — try and halve, as lm-eval (accelerate's ``find_executable_batch_size``): a forward
  pass of ``b`` rows of the longest input's length, from :data:`MAX_AUTO` down, halving on
  out-of-memory until one fits (1 always "fits": a real OOM at 1 is the run's own error).
* **CPU** — no out-of-memory signal to catch (the OS swaps or kills), so an estimate against a
  stated budget (:data:`CPU_BUDGET_BYTES`): per row of ``L`` tokens, the key/value cache
  (2 × layers × L × KV width), the widest hidden activation (L × max(FFN width, 4 × hidden) × 2),
  one layer's attention scores (heads × L² × 4 bytes, fp32) and the log-softmax over the
  vocabulary (L × vocab × 4 bytes); the batch is the budget over that, between 1 and
  :data:`MAX_AUTO`.

Found once per length bucket (the next power of two of the longest input), so a run's batches
do not depend on the order tasks run in. Scores do not depend on the batch beyond float
rounding (~1e-5 of a log-likelihood in fp32; tests/test_score_batch.py).
"""

from __future__ import annotations

from collections.abc import Callable

#: the largest batch auto tries (lm-eval's default max_batch_size)
MAX_AUTO = 64
#: the memory auto may plan for on the CPU (stated in the record)
CPU_BUDGET_BYTES = 1 << 30


def bucket(length: int) -> int:
    """The power of two at or above ``length`` (≥ 16): auto's batch is found once per bucket."""
    n = 16
    while n < length:
        n *= 2
    return n


def halve_until_fits(fits: Callable[[int], bool], start: int = MAX_AUTO) -> tuple[int, list[int]]:
    """The first of ``start``, ``start/2``, ... for which ``fits(b)`` is true (1 if none), and
    the sizes that did not fit."""
    b, failed = start, []
    while b > 1 and not fits(b):
        failed.append(b)
        b //= 2
    return max(b, 1), failed


def cpu_row_bytes(config, length: int, element_bytes: int) -> int:
    """Estimated peak bytes of one scored row of ``length`` tokens for a transformers ``config``
    (see the module doc for the terms)."""
    hidden = int(getattr(config, "hidden_size", 0) or getattr(config, "d_model", 0) or 768)
    layers = int(getattr(config, "num_hidden_layers", 0) or getattr(config, "num_layers", 0) or 12)
    heads = int(getattr(config, "num_attention_heads", 0) or getattr(config, "num_heads", 0) or 12)
    kv_heads = int(getattr(config, "num_key_value_heads", 0) or heads)
    head_dim = int(getattr(config, "head_dim", 0) or hidden // max(heads, 1))
    ffn = int(getattr(config, "intermediate_size", 0) or getattr(config, "d_ff", 0) or 4 * hidden)
    vocab = int(getattr(config, "vocab_size", 0) or 32000)
    kv = 2 * layers * length * kv_heads * head_dim * element_bytes
    act = 2 * length * max(ffn, 4 * hidden) * element_bytes
    attn = heads * length * length * 4
    logits = length * vocab * 4
    return kv + act + attn + logits


def cpu_batch(config, length: int, element_bytes: int, budget: int = CPU_BUDGET_BYTES) -> tuple[int, str]:
    """The CPU batch for rows of ``length`` tokens, and how it was found (for the record)."""
    row = cpu_row_bytes(config, length, element_bytes)
    b = max(1, min(MAX_AUTO, budget // max(row, 1)))
    return b, (f"auto: {b} for inputs ≤ {length} tokens = the {budget / 2**30:g} GiB CPU budget over an estimated "
               f"{row / 2**20:.1f} MiB per row (KV cache, activations, attention scores, log-softmax), at most {MAX_AUTO}")  # fmt: skip


def cuda_batch(probe: Callable[[int], bool], length: int) -> tuple[int, str]:
    """The CUDA batch for rows of ``length`` tokens (``probe(b)``: a forward of ``b`` rows fit),
    and how it was found."""
    b, failed = halve_until_fits(probe)
    tried = f" ({', '.join(map(str, failed))} ran out of memory)" if failed else ""
    return b, f"auto: {b} for inputs ≤ {length} tokens = the largest of {MAX_AUTO}, {MAX_AUTO // 2}, ... whose forward fit in GPU memory{tried}"


def torch_probe(model, length: int, device) -> Callable[[int], bool]:
    """``probe(b)`` for :func:`cuda_batch`: one forward of ``b`` × ``length`` tokens on ``model``
    (no cache kept; CUDA out-of-memory → False, the cache emptied)."""
    import torch

    def probe(b: int) -> bool:
        try:
            with torch.inference_mode():
                ids = torch.ones((b, length), dtype=torch.long, device=device)
                extra = {"decoder_input_ids": ids[:, :1]} if getattr(model.config, "is_encoder_decoder", False) else {}
                model(input_ids=ids, use_cache=False, **extra)
            return True
        except torch.cuda.OutOfMemoryError:
            return False
        finally:
            if str(device).startswith("cuda"):
                torch.cuda.empty_cache()

    return probe
