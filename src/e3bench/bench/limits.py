"""What must fit before a run measures anything: the model's context and the KV cache in memory.

Checked by the runner **before the model loads**, from the model's ``config.json`` when it is
on disk (a local folder, the hub cache, the GGUF conversion cache), so a hopeless configuration
costs nothing; and the context again **after the load**, against the backend's own
``context_length`` (llama.cpp: ``n_ctx``; vLLM: ``max_model_len``) and the real prompts'
lengths. Out-of-memory errors that still happen while measuring are recognised by
:func:`out_of_memory` (Python ``MemoryError``, torch's CPU and CUDA allocators, ONNX Runtime,
llama.cpp), so the runner keeps the batch sizes already measured and records the one that failed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from e3bench.core.api import ModelSpec
from e3bench.core.errors import E3Error

#: config.json keys holding a model's trained context, first found wins (lm-eval's list + max_seq_len)
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "n_ctx", "seq_length")
_ENCODER_ONLY_TYPES = frozenset(
    {"bert", "roberta", "distilbert", "albert", "electra", "deberta", "deberta-v2", "xlm-roberta", "modernbert"}
)
#: fragments of allocator messages that mean "out of memory" (lower case)
_OOM_TEXT = (
    "out of memory", "not enough memory", "can't allocate memory", "cannot allocate memory",
    "failed to allocate memory", "bad_alloc", "outofmemory", "insufficient memory",
    "failed to allocate", "kv cache is full", "llama_decode returned -3",
)  # fmt: skip


# ----------------------------------------------------------------------------- model config
def peek_config(spec: ModelSpec, cache_dir: str | None = None) -> dict[str, Any] | None:
    """The model's ``config.json`` if it is on disk without loading anything: a local folder, the
    Hugging Face cache of a hub id, or the GGUF conversion cache; None otherwise (or unreadable)."""
    path: Path | None = None
    if spec.source == "local-dir":
        path = Path(spec.path) / "config.json"
    elif spec.source == "gguf":
        from e3bench.backends.models import gguf_cache_dir

        path = gguf_cache_dir(spec, cache_dir) / "config.json"
    elif spec.source in ("hub", "alias"):
        try:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(spec.path, "config.json", revision=spec.revision)
        except Exception:  # noqa: BLE001 - a cache lookup must never fail a run
            return None
        path = Path(found) if isinstance(found, str) else None
    if path is None or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _text(config: Mapping[str, Any]) -> Mapping[str, Any]:
    inner = config.get("text_config")
    return inner if isinstance(inner, Mapping) else config


def config_context(config: Mapping[str, Any]) -> tuple[int, str] | None:
    """``(tokens, key)``: the trained context from ``config.json``; None when it has none or the
    model has relative positions (T5: no hard limit)."""
    cfg = _text(config)
    if "relative_attention_num_buckets" in cfg:
        return None
    for key in CONTEXT_KEYS:
        value = cfg.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value, key
    return None


def config_architecture(config: Mapping[str, Any]) -> str | None:
    """decoder-only | encoder-decoder | encoder-only as far as ``config.json`` tells; None if unsure."""
    if config.get("is_encoder_decoder"):
        return "encoder-decoder"
    names = [str(a) for a in config.get("architectures") or []]
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in names):
        return "decoder-only"
    if config.get("model_type") in _ENCODER_ONLY_TYPES or any(a.endswith("ForMaskedLM") for a in names):
        return "encoder-only"
    return None


#: GGUF ``general.architecture`` values of models that are not decoder-only (llama.cpp's names)
_GGUF_ARCHITECTURES = {
    **dict.fromkeys(("bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "jina-bert-v3", "modern-bert",
                     "neo-bert", "t5encoder"), "encoder-only"),  # fmt: skip
    "t5": "encoder-decoder",
}


def model_architecture(spec: ModelSpec, config: Mapping[str, Any] | None) -> tuple[str | None, str]:
    """``(architecture, where it was read)`` without loading weights: a GGUF file's header
    (``general.architecture``), else ``config`` (the model's config.json, :func:`peek_config`);
    ``(None, ...)`` when neither tells."""
    if spec.source == "gguf" and spec.gguf_file:
        from e3bench.backends.gguf_types import file_type

        try:
            name, _ = file_type(Path(spec.path) / spec.gguf_file)
        except E3Error:
            name = None  # a damaged file: the backend's load says so
        if name:
            return _GGUF_ARCHITECTURES.get(name, "decoder-only"), f"GGUF header general.architecture '{name}'"
    if config:
        arch = config_architecture(config)
        if arch is not None:
            return arch, "the model's config.json"
    return None, "unknown before the load"


def capability_problems(cls: Any, *, spec: ModelSpec, config: Mapping[str, Any] | None, device: str,
                        precision: str) -> list[E3Error]:  # fmt: skip
    """What backend class ``cls`` cannot run, checked before any meter, idle window or load:
    the model's architecture (:func:`model_architecture`) against ``capabilities.architectures``,
    and ``device`` × ``precision`` against ``capabilities.check``."""
    caps = getattr(cls, "capabilities", None)
    name = getattr(cls, "name", str(cls))
    if caps is None:
        return []
    found = []
    arch, where = model_architecture(spec, config)
    if arch is not None and arch not in caps.architectures:
        runs = ", ".join(sorted(caps.architectures))
        found.append(E3Error(
            f"the {name} backend runs {runs} models; {spec.name} is {arch} ({where})",
            "use --backend pytorch (it runs decoder-only, encoder-decoder and encoder-only models)",
        ))  # fmt: skip
    reason = caps.check(device=device, precision=precision)
    if reason:
        found.append(E3Error(f"{name} backend: {reason}", getattr(cls, "capability_fix", "choose a supported "
                                                                  "--dtype / --device")))  # fmt: skip
    return found


# ----------------------------------------------------------------------------------- context
def context_problem(
    *, prompt_tokens: int, max_new_tokens: int, architecture: str | None, context: int, source: str,
    prompt_what: str = "--prompt-tokens", llamacpp: bool = False,
) -> E3Error | None:  # fmt: skip
    """The error when the prompts (``prompt_tokens``, the longest) and the generated tokens do not
    fit in ``context`` tokens; ``source`` says where the context comes from. Decoder-only models
    hold prompt + output in one sequence; an encoder-decoder's encoder holds the prompt and its
    decoder the output; an encoder-only model only the prompt. ``architecture`` None: the prompt
    alone is checked (the rest once the backend knows)."""
    fix_ctx = " (or raise -O n_ctx)" if llamacpp else ""
    if architecture == "decoder-only":
        need = prompt_tokens + max_new_tokens
        if need > context:
            return E3Error(
                f"{prompt_what} {prompt_tokens} + --max-new-tokens {max_new_tokens} = {need} tokens exceed the "
                f"context of {context} tokens ({source}): the model would run past its positions",
                f"lower --prompt-tokens / --max-new-tokens to sum to at most {context}{fix_ctx}",
            )
        return None
    if prompt_tokens > context:
        return E3Error(
            f"{prompt_what} {prompt_tokens} exceeds the context of {context} tokens ({source})",
            f"lower --prompt-tokens to at most {context}{fix_ctx}",
        )
    if architecture == "encoder-decoder" and max_new_tokens > context:
        return E3Error(
            f"--max-new-tokens {max_new_tokens} exceeds the decoder's context of {context} tokens ({source})",
            f"lower --max-new-tokens to at most {context}",
        )
    return None


# ------------------------------------------------------------------------------------ memory
def kv_bytes_per_token(config: Mapping[str, Any], dtype: str, backend: str) -> tuple[int, str] | None:
    """``(bytes, how)``: the KV cache of one token of one sequence (keys and values of every
    layer), from ``config.json``; None when the config does not say enough. Elements are 4 bytes
    for fp32 on PyTorch/ONNX, else 2 (fp16/bf16 caches; llama.cpp's default f16 cache)."""
    cfg = _text(config)

    def first(*keys: str) -> int | None:
        for k in keys:
            v = cfg.get(k)
            if isinstance(v, int) and not isinstance(v, bool) and v > 0:
                return v
        return None

    layers = first("num_hidden_layers", "n_layer", "num_layers")
    heads = first("num_attention_heads", "n_head", "num_heads")
    hidden = first("hidden_size", "n_embd", "d_model")
    if layers is None or heads is None or hidden is None:
        return None
    kv_heads = first("num_key_value_heads", "n_head_kv") or heads
    head_dim = first("head_dim") or hidden // heads
    elem = 4 if dtype == "fp32" and backend != "llamacpp" else 2
    per_token = 2 * layers * kv_heads * head_dim * elem
    how = f"2 (K,V) × {layers} layers × {kv_heads} KV heads × {head_dim} dims × {elem} bytes"
    return per_token, how


def available_memory(device: str, nvml=None) -> tuple[int, str] | None:
    """``(bytes, what)`` free for the run on ``device``: CPU = MemAvailable + SwapFree from
    /proc/meminfo; ``cuda[:N]`` = free memory of that GPU (NVML, its index mapped through
    ``CUDA_VISIBLE_DEVICES`` by :func:`e3bench.energy.meters.nvml.resolve_gpus`); None when
    unknown. ``nvml``: the pynvml module (tests pass a fake)."""
    if device.startswith("cuda"):
        from e3bench.energy.meters.nvml import resolve_gpus

        try:
            if nvml is None:
                import pynvml as nvml  # type: ignore[import-not-found,no-redef]

            (gpu,) = resolve_gpus(device)
            nvml.nvmlInit()
            try:
                handle = (nvml.nvmlDeviceGetHandleByUUID(gpu) if isinstance(gpu, str)
                          else nvml.nvmlDeviceGetHandleByIndex(gpu))  # fmt: skip
                free = int(nvml.nvmlDeviceGetMemoryInfo(handle).free)
            finally:
                nvml.nvmlShutdown()
        except Exception:  # noqa: BLE001 - no NVML: no early check, the runtime catch remains
            return None
        return free, f"free memory of GPU {device} (NVML)"
    info: dict[str, int] = {}
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                key, _, rest = line.partition(":")
                info[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    if "MemAvailable" not in info:
        return None
    return info["MemAvailable"] + info.get("SwapFree", 0), "MemAvailable + SwapFree (/proc/meminfo)"


def memory_problem(
    config: Mapping[str, Any], *, architecture: str | None, batch_sizes: tuple[int, ...], tokens: int, dtype: str,
    backend: str, device: str, available: tuple[int, str] | None = None,
) -> E3Error | None:  # fmt: skip
    """The error when the KV cache alone of the largest batch (``tokens`` per sequence) of a
    decoder-only model cannot fit in the memory available on ``device`` (a lower bound: weights
    and activations come on top). None when it may fit or cannot be estimated."""
    per = kv_bytes_per_token(config, dtype, backend)
    if per is None or architecture != "decoder-only":
        return None
    free = available if available is not None else available_memory(device)
    if free is None:
        return None
    per_token, how = per
    too_big = [b for b in batch_sizes if b * tokens * per_token > free[0]]
    if not too_big:
        return None
    batch = max(too_big)
    need = batch * tokens * per_token
    fits = max(free[0] // max(tokens * per_token, 1), 0)
    return E3Error(
        f"batch size {batch} does not fit in memory: its KV cache alone needs {need / 1e9:.1f} GB "
        f"({batch} sequences × {tokens} tokens × {per_token} bytes = {how}), and {device} has "
        f"{free[0] / 1e9:.1f} GB ({free[1]})",
        f"use batch sizes of at most ~{fits} (the KV cache is only a lower bound), or fewer tokens",
    )


# ------------------------------------------------------------------------------ at run time
def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says the machine ran out of memory: ``MemoryError``, torch's
    ``OutOfMemoryError`` (CUDA), torch's CPU allocator (``RuntimeError: ... can't allocate
    memory``), ONNX Runtime's ``Failed to allocate memory``, llama.cpp's KV cache full."""
    if isinstance(exc, MemoryError):
        return True
    if type(exc).__name__ in ("OutOfMemoryError", "OutOfMemory"):
        return True
    if isinstance(exc, (RuntimeError, OSError, ValueError)) or "onnxruntime" in type(exc).__module__:
        text = str(exc).lower()
        return any(t in text for t in _OOM_TEXT)
    return False


def oom_reason(exc: BaseException, batch: int, device: str) -> str:
    """One line for the record: batch size ``batch`` did not fit, and the allocator's words."""
    first = (str(exc).strip().splitlines() or [""])[0]
    if first.startswith("[enforce fail at ") and "] " in first:  # torch's CPU allocator
        first = first.split("] ", 1)[1].removeprefix("err == 0. ").removeprefix("data. ")
    detail = f"{type(exc).__name__}: {first[:200]}" if first else type(exc).__name__
    return f"batch size {batch} did not fit in {'GPU' if device.startswith('cuda') else 'host'} memory ({detail})"


def free_memory() -> None:
    """Hand what a failed batch allocated back (garbage, glibc heap, torch's CUDA cache)."""
    import sys

    from e3bench.core.host import release_free_memory

    release_free_memory()
    torch = sys.modules.get("torch")
    if torch is not None and os.environ.get("CUDA_VISIBLE_DEVICES") != "":
        try:
            if torch.cuda.is_initialized():
                torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001 - best effort
            pass
