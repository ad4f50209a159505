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

_registry.builtin(
    "pytorch",
    "e3bench.backends.pytorch:PyTorchBackend",
    requires=("torch", "transformers"),
    description="PyTorch + transformers; CPU and CUDA; fp32/bf16/fp16, int8/int4 weights (torchao)",
)
_registry.builtin(
    "pytorch-compile",
    "e3bench.backends.pytorch:PyTorchCompiledBackend",
    requires=("torch", "transformers"),
    description="the pytorch backend under torch.compile (warm-up pays the compilation)",
)
_registry.builtin(
    "onnxrt",
    "e3bench.backends.onnxrt:OnnxRuntimeBackend",
    extra="onnx",
    requires=("onnxruntime", "onnx", "transformers"),
    description="ONNX Runtime (own KV-cache export); CPU fp32/dynamic int8, CUDA fp32/fp16",
)
_registry.builtin(
    "llamacpp",
    "e3bench.backends.llamacpp:LlamaCppBackend",
    extra="llamacpp",
    requires=("llama_cpp", "gguf"),
    description="llama.cpp via llama-cpp-python; GGUF quant types (Q4_K_M, Q8_0, F16, ...)",
)
_registry.builtin(
    "vllm",
    "e3bench.backends.vllm:VllmBackend",
    extra="vllm",
    requires=("vllm",),
    description="vLLM offline engine; CUDA only; fp16/bf16, GPTQ/AWQ/W8A8 checkpoints",
)
