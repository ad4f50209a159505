"""Name → implementation, resolved lazily so `e3bench --help` imports nothing heavy.

Built-ins are ``"module:Class"`` strings; plugins add entries through the entry-point groups
``e3bench.backends`` (and friends) in their own package metadata. Each backend names the extra
that provides its dependencies so a missing one gives the exact ``pip install`` line.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
from dataclasses import dataclass
from importlib import metadata

from e3bench.core.errors import E3Error


@dataclass(frozen=True)
class Entry:
    target: str  # "package.module:Attr"
    extra: str | None  # pip extra providing its dependencies
    requires: tuple[str, ...] = ()  # top-level modules that must import
    description: str = ""


BACKENDS: dict[str, Entry] = {
    "pytorch": Entry(
        "e3bench.backends.pytorch:PyTorchBackend",
        None,
        ("torch", "transformers"),
        "PyTorch + transformers; CPU and CUDA; fp32/bf16/fp16, int8/int4 weights (torchao)",
    ),
    "pytorch-compile": Entry(
        "e3bench.backends.pytorch:PyTorchCompiledBackend",
        None,
        ("torch", "transformers"),
        "the pytorch backend under torch.compile (warm-up pays the compilation)",
    ),
    "onnxrt": Entry(
        "e3bench.backends.onnxrt:OnnxRuntimeBackend",
        "onnx",
        ("onnxruntime", "onnx", "transformers"),
        "ONNX Runtime (own KV-cache export); CPU fp32/dynamic int8, CUDA fp32/fp16",
    ),
    "llamacpp": Entry(
        "e3bench.backends.llamacpp:LlamaCppBackend",
        "llamacpp",
        ("llama_cpp", "gguf"),
        "llama.cpp via llama-cpp-python; GGUF quant types (Q4_K_M, Q8_0, F16, ...)",
    ),
    "vllm": Entry(
        "e3bench.backends.vllm:VllmBackend",
        "vllm",
        ("vllm",),
        "vLLM offline engine; CUDA only; fp16/bf16, GPTQ/AWQ/W8A8 checkpoints",
    ),
}
_GROUPS = {"backend": ("e3bench.backends", BACKENDS)}


def _plugins(group: str) -> dict[str, Entry]:
    try:
        eps = metadata.entry_points(group=group)
    except TypeError:  # pragma: no cover - very old importlib.metadata
        eps = []
    return {ep.name: Entry(ep.value, None) for ep in eps}


def entries(kind: str) -> dict[str, Entry]:
    group, builtins = _GROUPS[kind]
    return {**_plugins(group), **builtins}


def get(kind: str, name: str):
    """Import and return the class registered as ``name``."""
    table = entries(kind)
    if name not in table:
        near = difflib.get_close_matches(name, list(table), n=1)
        hint = f"did you mean '{near[0]}'?" if near else f"available: {', '.join(sorted(table))}"
        raise E3Error(f"unknown {kind} '{name}'", hint)
    entry = table[name]
    for mod in entry.requires:
        if importlib.util.find_spec(mod) is None:
            extra = entry.extra or name
            raise E3Error(
                f"the {name} {kind} needs the Python package '{mod}', which is not installed",
                f"pip install 'e3bench[{extra}]'",
            )
    module, _, attr = entry.target.partition(":")
    return getattr(importlib.import_module(module), attr)


def register(kind: str, name: str, target: str, extra: str | None = None) -> None:
    """Register an implementation at run time (tests, notebooks)."""
    _GROUPS[kind][1][name] = Entry(target, extra)


def installed(kind: str) -> dict[str, bool]:
    out = {}
    for name, entry in entries(kind).items():
        out[name] = all(importlib.util.find_spec(m) is not None for m in entry.requires)
    return out
