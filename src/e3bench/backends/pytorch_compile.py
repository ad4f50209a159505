"""The ``pytorch-compile`` backend: PyTorch + transformers with a static KV cache and the decode
step under ``torch.compile``, the way transformers documents fast generation
(``generate(cache_implementation="static", compile_config=CompileConfig(...))``).

What it changes against the ``pytorch`` backend, and nothing else (loading, tokenization,
batching, scoring are the ``pytorch`` backend's):

* generation runs with transformers' ``StaticCache`` (preallocated to prompt + new tokens, reused
  while a later request fits in it) and transformers compiles the model's call for the decode
  steps (one new token per sequence; shapes fixed by the static cache). The prefill stays eager,
  as transformers does it.
* on the CPU transformers does not auto-compile unless told to (``_compile_all_devices``); this
  backend tells it, so the path is the same on CPU and CUDA.
* log-likelihood scoring and encoder forward passes run eager (they do not go through
  ``generate``): task scores are the ``pytorch`` backend's.

Compilation happens on the first ``generate`` that meets a new shape (batch size, cache length):
the runner's priming request and warm-up iterations, which it times apart from TTFT/TPOT
(``Efficiency.priming_s``, ``BatchResult.warmup_s``). Greedy outputs equal the eager path's
(tests/test_pytorch_compile.py); on a 2-core CPU compiled decode is not necessarily faster
(docs/backends.md has the measurement).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from e3bench.backends.pytorch import PyTorchBackend
from e3bench.core.api import Capabilities, LoadInfo, ModelSpec
from e3bench.core.devices import device_kind
from e3bench.core.errors import E3Error

#: torch.compile modes; None picks "reduce-overhead" (CUDA graphs) on CUDA, "default" on the CPU
#: (CUDA graphs do not exist there)
Mode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]


class PyTorchCompileOptions(BaseModel):
    """Options of the ``pytorch-compile`` backend (``backend_options``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Mode | None = Field(
        None, description="torch.compile mode; default: reduce-overhead (CUDA graphs) on CUDA, default on the CPU"
    )
    fullgraph: bool = Field(True, description="compile the decode step as one graph (an error on a graph break)")


class PyTorchCompileBackend(PyTorchBackend):
    """Decoder-only transformers models with a static KV cache and a compiled decode step."""

    name: ClassVar[str] = "pytorch-compile"
    Options: ClassVar[type[BaseModel]] = PyTorchCompileOptions
    capabilities: ClassVar[Capabilities] = Capabilities(
        devices=frozenset({"cpu", "cuda"}),
        # torchao-quantized weights under a compiled static-cache decode are not tested here
        precisions=frozenset({"fp32", "bf16", "fp16"}),
        # the static cache and transformers' auto-compile are for causal LMs
        architectures=frozenset({"decoder-only"}),
        streaming=True,
        loglikelihood=True,
        precisions_by_device=(("cpu", frozenset({"fp32", "bf16"})),),
    )
    capability_fix: ClassVar[str] = "choose fp32/bf16 (fp16 on CUDA) and a decoder-only model, or -b pytorch"
    #: generation always through generate (its static cache and compiled decode step)
    shrinking_batches: ClassVar[bool] = False

    def _load(self, model: ModelSpec, precision: str, device: str) -> LoadInfo:
        import dataclasses

        import torch
        from transformers.generation.configuration_utils import CompileConfig

        info = super()._load(model, precision, device)
        if self.architecture != "decoder-only":  # capabilities refuse it first; guards direct use
            raise E3Error(f"pytorch-compile runs decoder-only models, not {self.architecture}", "use -b pytorch")
        mode = self.options.mode or ("reduce-overhead" if device_kind(device) == "cuda" else "default")
        compile_config = CompileConfig(fullgraph=self.options.fullgraph, mode=mode)
        # transformers auto-compiles only on accelerators; the flag makes it compile on the CPU too
        compile_config._compile_all_devices = True
        gen = self.model.generation_config
        gen.cache_implementation = "static"
        gen.compile_config = compile_config
        note = (
            f"static KV cache + torch.compile(mode={mode!r}, fullgraph={self.options.fullgraph}) of the decode step "
            f"(transformers' generate auto-compile; torch {torch.__version__}); prefill and scoring eager; "
            "compilation is in the priming/warm-up times (priming_s, warmup_s), not in TTFT/TPOT"
        )
        return dataclasses.replace(info, notes=(*info.notes, note))
