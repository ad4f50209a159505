"""Inference backends. Importing this package registers the built-in ones in
:data:`e3bench.core.registry.backends` (lazily: no backend module is imported here).

A registered backend is a class implementing :class:`e3bench.core.api.Backend`, constructed as
``cls(options, cache_dir=..., threads=...)`` where ``options`` is an instance of ``cls.Options`` (a
pydantic model with ``extra="forbid"`` typing its ``backend_options``);
:func:`e3bench.backends.factory.make_backend` does that from a dict. ``cls.capabilities`` says which
devices and precisions it runs, so a config is checked before anything loads. The built-ins share
:class:`e3bench.backends.base.BaseBackend`. Plugins register through the ``e3bench.backends``
entry-point group.
"""

from e3bench.core.registry import backends as _registry

_TORCH = ("torch", "transformers")
#: (name, "module:Class", extra providing its dependencies, modules that must import, description)
_BUILTINS = (
    ("pytorch", "e3bench.backends.pytorch:PyTorchBackend", None, _TORCH,
     "PyTorch + transformers; CPU and CUDA; fp32/bf16/fp16, int8/int4 weights (torchao)"),
    ("pytorch-compile", "e3bench.backends.pytorch_compile:PyTorchCompileBackend", None, _TORCH,
     "PyTorch with a static KV cache and torch.compile of the decode step; decoder-only, fp32/bf16 (fp16 CUDA)"),
    ("onnxrt", "e3bench.backends.onnxrt:OnnxRuntimeBackend", "onnx", ("onnxruntime", "onnx", "transformers"),
     "ONNX Runtime (own KV-cache export); CPU fp32/dynamic int8, CUDA fp32/fp16"),
    ("ortgenai", "e3bench.backends.ortgenai:OrtGenaiBackend", "onnx-genai", ("onnxruntime_genai", "onnx_ir", "transformers"),
     "ONNX Runtime GenAI (its model builder, og.Generator); CPU fp32/int4 (MatMulNBits), CUDA fp32/fp16/int4"),
    ("llamacpp", "e3bench.backends.llamacpp:LlamaCppBackend", "llamacpp", ("llama_cpp", "gguf"),
     "llama.cpp via llama-cpp-python; GGUF quant types (Q4_K_M, Q8_0, F16, ...)"),
    ("vllm", "e3bench.backends.vllm:VllmBackend", "vllm", ("vllm",),
     "vLLM offline engine; CUDA only; fp16/bf16, GPTQ/AWQ/W8A8 checkpoints"),
)  # fmt: skip
for _name, _target, _extra, _requires, _description in _BUILTINS:
    _registry.builtin(_name, _target, extra=_extra, requires=_requires, description=_description)
