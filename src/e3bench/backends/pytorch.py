"""PyTorch / transformers backend: decoder-only, encoder-decoder and encoder-only models on CPU
or CUDA in fp32, bf16 or fp16, and int8 / int4 weight quantization with torchao
(see :data:`QUANT_RECIPES` and docs/backends.md for why torchao and which recipe), optionally
under ``torch.compile`` (option ``compile=true``: the whole forward, dynamic shapes; the backend
``pytorch-compile``, :mod:`e3bench.backends.pytorch_compile`, is the static-KV-cache path).

It never reads a clock. Per-token progress reaches the runner through a transformers
``BaseStreamer`` whose ``put`` is called once per decode step with the new tokens (already
copied to the host, so on CUDA the token is really available when the callback fires).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from e3bench.backends.base import BaseBackend
from e3bench.core.devices import canonical, check_visible, device_kind
from e3bench.core.api import Capabilities, Generation, GenParams, LoadInfo, LogLik, ModelSpec, OnToken, PeakMemory
from e3bench.core.errors import E3Error

_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
#: how the CUDA peak is obtained (the runner resets the counter right after load)
PEAK_METHOD = "torch.cuda.max_memory_allocated since after load"

#: (device, precision) → (compute dtype, torchao config class, kwargs, description).
#: Chosen by measuring speed *and* quality retained on SmolLM2-135M (benchmarks/backends.py,
#: docs/backends.md). Linear layers only; the LM head (tied to the embedding) stays unquantized.
QUANT_RECIPES: dict[tuple[str, str], tuple[str, str, dict, str]] = {
    ("cpu", "int8"): (
        "float32",
        "Int8WeightOnlyConfig",
        {},
        "torchao int8 weight-only (per-channel scales, fp32 activations)",
    ),
    ("cpu", "int4"): (
        "float32",
        "prototype.quantization.int4:PrototypeInt4WeightOnlyConfig",
        {"group_size": 32},
        "torchao int4 weight-only, group size 32, CPU tinygemm kernel (_weight_int4pack_mm_for_cpu); "
        "made for one-token decode: prefill and task scoring are ~100x slower than fp32 (25 s for a "
        "128-token prompt on SmolLM2-135M, 2 cores) - for 4-bit on a CPU use -b llamacpp",
    ),
    ("cuda", "int8"): ("bfloat16", "Int8WeightOnlyConfig", {}, "torchao int8 weight-only (bf16 activations)"),
    ("cuda", "int4"): (
        "bfloat16",
        "Int4WeightOnlyConfig",
        # "tile_packed_to_4d" is PyTorch's own tinygemm kernel (aten._weight_int4pack_mm); torchao's
        # default "plain" format needs the separate mslk package (measured on an H100, torchao 0.18).
        # Group size 64 divides SmolLM2's 576/1536 widths (128 does not divide 576).
        {"group_size": 64, "int4_packing_format": "tile_packed_to_4d"},
        "torchao int4 weight-only, group size 64 (tinygemm kernel, bf16 activations)",
    ),
}


def _quantize(model, device: str, precision: str) -> str:
    """Quantize the Linear layers in place; return a one-line description for the record."""
    import torch

    missing = PyTorchBackend.capabilities.missing_extra(precision)
    if missing is not None:  # config validation reports it first; this guards direct use
        raise missing
    import importlib

    _, cfg_name, kwargs, desc = QUANT_RECIPES[(device, precision)]
    module, _, cls = cfg_name.rpartition(":")
    config = getattr(importlib.import_module("torchao." + (module or "quantization")), cls)(**kwargs)
    tq = importlib.import_module("torchao.quantization")
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None

    def linear_but_head(module, fqn: str) -> bool:
        return isinstance(module, torch.nn.Linear) and module is not head

    try:
        tq.quantize_(model, config, filter_fn=linear_but_head)
    except ImportError as exc:  # torchao kernels that live in optional packages (mslk, fbgemm-gpu)
        from e3bench.core.quiet import captured

        kept = captured("torchao")  # its import-time kernel failures, kept out of the output until now
        raise E3Error(
            f"--dtype {precision} on {device}: torchao needs a package that is not installed ({exc})"
            + (f"; at import torchao said: {'; '.join(kept)}" if kept else ""),
            "install the package it names, or pick another --dtype (bf16, fp16, int8)",
        ) from None
    import torchao

    return f"{desc} (torchao {torchao.__version__}); LM head unquantized"


class _StepStreamer:
    """Adapts transformers' streamer calls to ``on_token(n_steps)``.

    ``generate`` first ``put``s the prompt (or the decoder start token); that call is skipped.
    """

    def __init__(self, on_token: OnToken) -> None:
        self.on_token = on_token
        self.steps = -1

    def put(self, value) -> None:
        self.steps += 1
        if self.steps:
            self.on_token(self.steps)

    def end(self) -> None:
        return None


class _GeneratedStop:
    """A ``generate`` stopping criterion: a row is done once the text of its generated tokens
    (from position ``start`` of ``input_ids``) holds one of ``stop``, as in
    :func:`e3bench.backends.decoding.finish`, the greedy loop and lm-eval's HF model.
    transformers' own ``stop_strings`` also matches a stop string that begins in the prompt, so a
    prompt ending in a stop string's first characters stopped after a token, its text uncut."""

    def __init__(self, stop: Sequence[str], start: int, decode) -> None:
        self.stop, self.start, self.decode = [s for s in stop if s], start, decode

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        from e3bench.backends.decoding import holds_stop

        done = [holds_stop(row, self.stop, self.decode) for row in input_ids[:, self.start :].tolist()]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class PyTorchOptions(BaseModel):
    """Options of the ``pytorch`` backend (``backend_options``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    compile: bool = Field(
        False, description="run the model's forward under torch.compile(dynamic=True); the warm-up pays the compilation"
    )


class PyTorchBackend(BaseBackend):
    """Hugging Face transformers models (all three architectures) on CPU or CUDA."""

    name: ClassVar[str] = "pytorch"
    Options: ClassVar[type[BaseModel]] = PyTorchOptions
    capabilities: ClassVar[Capabilities] = Capabilities(
        devices=frozenset({"cpu", "cuda"}),
        precisions=frozenset({"fp32", "bf16", "fp16", "int8", "int4"}),
        architectures=frozenset({"decoder-only", "encoder-decoder", "encoder-only"}),
        streaming=True,
        loglikelihood=True,
        # fp16 matmuls on CPU are emulated and far slower than fp32; refuse rather than mislead.
        precisions_by_device=(("cpu", frozenset({"fp32", "bf16", "int8", "int4"})),),
        # int8/int4 quantize with torchao: without it they are skipped up front, naming the extra
        precision_extras=(("int8", "torchao", "quant"), ("int4", "torchao", "quant")),
    )
    #: greedy batches of several prompts without a per-token callback (task generation) run
    #: :func:`e3bench.backends.greedy.greedy_rows`, whose finished rows leave the batch; False:
    #: always transformers' ``generate`` (pytorch-compile: its static cache and compiled step)
    shrinking_batches: ClassVar[bool] = True

    def _setup(self) -> None:
        self.model = None
        self._torch_device = None
        #: the last few-shot stem's keys/values, reused across scoring calls (reset by each load)
        self._stem_memo = None

    # ----------------------------------------------------------------------- loading
    def _load(self, model: ModelSpec, precision: str, device: str) -> LoadInfo:
        import torch

        from e3bench.backends.models import load_pretrained
        from e3bench.backends.tokenization import resolve_max_length
        from e3bench.backends.weightbytes import torch_weights
        from e3bench.core.decodebytes import decode_step_bytes

        kind = device_kind(device)
        if kind == "cuda" and not torch.cuda.is_available():
            raise E3Error(
                f"--device {device} was requested but PyTorch sees no CUDA GPU "
                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'})",
                "use --device cpu, or install a CUDA build of torch on a machine with an NVIDIA GPU",
            )
        check_visible(device, torch.cuda.device_count)
        torch.set_num_threads(self.threads)
        quant = precision in ("int8", "int4")
        dtype = getattr(torch, QUANT_RECIPES[(kind, precision)][0] if quant else _DTYPES[precision])
        loaded = load_pretrained(model, dtype=dtype, cache_dir=self.cache_dir)
        notes = list(loaded.notes)
        self.architecture = loaded.architecture
        self.tokenizer, self.model, config = loaded.tokenizer, loaded.model, loaded.config
        self._torch_device = torch.device(canonical(device))  # cuda → cuda:0, cuda:N → cuda:N
        self.model.to(self._torch_device).eval()
        self.max_length = resolve_max_length(config, self.tokenizer)
        from e3bench.backends.hf_causal import StemMemo

        self._stem_memo = StemMemo()
        if quant:
            notes.append(_quantize(self.model, kind, precision))
        if getattr(self.options, "compile", False):
            # dynamic=True: prompt and cache lengths change every step; the first generate()
            # (the runner's warm-up) pays the compilation.
            self.model.forward = torch.compile(self.model.forward, dynamic=True)
            notes.append(f"torch.compile(model.forward, dynamic=True) (torch {torch.__version__})")
        params = list({id(p): p for p in self.model.parameters()}.values())
        return LoadInfo(
            architecture=self.architecture,
            model_type=config.model_type,
            parameters=sum(p.numel() for p in params),
            weights_bytes=decode_step_bytes(torch_weights(self.model)),
            dtype=precision,
            device=str(self._torch_device),
            vocab_size=int(getattr(config, "vocab_size", len(self.tokenizer))),
            max_positions=getattr(config, "max_position_embeddings", None),
            notes=tuple(notes),
        )

    def _batch(self, prompts: Sequence[Sequence[int]], side: str):
        import torch

        pad = self.tokenizer.pad_token_id
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            n = len(p)
            sl = slice(width - n, width) if side == "left" else slice(0, n)
            ids[i, sl] = torch.tensor(list(p), dtype=torch.long)
            mask[i, sl] = 1
        return ids.to(self._torch_device), mask.to(self._torch_device)

    # ------------------------------------------------------------------- inference
    def _generate(
        self, prompts: Sequence[Sequence[int]], params: GenParams, on_token: OnToken | None = None
    ) -> list[Generation]:
        import torch

        from e3bench.backends import greedy
        from e3bench.backends.decoding import finish, min_new

        side = "left" if self.architecture == "decoder-only" else "right"
        ids, mask = self._batch(prompts, side)
        tok = self.tokenizer
        if (self.shrinking_batches and len(prompts) > 1 and on_token is None and self.architecture == "decoder-only"
                and not params.do_sample and min_new(params) == 0 and greedy.fits(self.model)):  # fmt: skip
            from e3bench.backends.greedy import eos_ids, greedy_rows

            rows = greedy_rows(self.model, ids, mask, max_new_tokens=params.max_new_tokens,
                               eos=eos_ids(self.model, tok), stop=params.stop, decode=self.decode)  # fmt: skip
            return finish(rows, params, tok.eos_token_id, tok.pad_token_id, self.decode)
        kwargs = dict(
            max_new_tokens=params.max_new_tokens,
            min_new_tokens=min_new(params),
            do_sample=params.do_sample,
            pad_token_id=tok.pad_token_id,
        )
        if params.do_sample:
            kwargs.update(temperature=params.temperature, top_p=params.top_p)
            torch.manual_seed(params.seed)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if params.stop:  # looked for in the generated text only (transformers' stop_strings match across the prompt)
            start = ids.shape[1] if self.architecture == "decoder-only" else 1
            kwargs["stopping_criteria"] = [_GeneratedStop(params.stop, start, self.decode)]
        if on_token is not None:
            kwargs["streamer"] = _StepStreamer(on_token)
        with torch.inference_mode():
            out = self.model.generate(input_ids=ids, attention_mask=mask, **kwargs)
        new = out[:, ids.shape[1] :] if self.architecture == "decoder-only" else out[:, 1:]
        return finish(new.tolist(), params, tok.eos_token_id, tok.pad_token_id, self.decode)

    def _forward(self, prompts: Sequence[Sequence[int]]) -> None:
        import torch

        ids, mask = self._batch(prompts, "right")
        with torch.inference_mode():
            if self.architecture == "encoder-decoder":
                start = self.model.config.decoder_start_token_id or 0
                dec = torch.full((ids.shape[0], 1), start, dtype=torch.long, device=self._torch_device)
                self.model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec)
            else:
                self.model(input_ids=ids, attention_mask=mask)

    def _score(self, encoded) -> list[LogLik]:
        from e3bench.backends.hf_scorer import DEFAULT_TOKEN_BUDGET, hf_loglikelihood_tokens

        longest = min(max(len(c) + len(x) for c, x in encoded), self.max_length)
        batch = self.score_batch(longest)
        # auto's batch was found for rows of the longest input: let it fill the forward pass
        budget = max(DEFAULT_TOKEN_BUDGET, batch * longest) if self.score_batch_size == "auto" else DEFAULT_TOKEN_BUDGET
        return hf_loglikelihood_tokens(
            self.model, encoded, device=self._torch_device, architecture=self.architecture, max_length=self.max_length,
            batch_size=batch, token_budget=budget, memo=self._stem_memo,
        )  # fmt: skip

    def _auto_score_batch(self, length: int) -> tuple[int, str]:
        """CUDA: try and halve; CPU: the memory budget (:mod:`e3bench.backends.batch_auto`)."""
        from e3bench.backends import batch_auto

        if self._on_cuda():
            return batch_auto.cuda_batch(batch_auto.torch_probe(self.model, length, self._torch_device), length)
        element = next(self.model.parameters()).element_size()
        return batch_auto.cpu_batch(self.model.config, length, element)

    # ---------------------------------------------------------------------- device
    def _on_cuda(self) -> bool:
        return self._torch_device is not None and self._torch_device.type == "cuda"

    def synchronize(self) -> None:
        """``torch.cuda.synchronize`` on CUDA; nothing on the CPU."""
        if self._on_cuda():
            import torch

            torch.cuda.synchronize(self._torch_device)

    def threads_in_use(self) -> dict[str, int]:
        """PyTorch's intra-op thread count (process-wide), read back from torch."""
        import torch

        return {"torch.get_num_threads()": torch.get_num_threads()} if self.model is not None else {}

    def reset_peak_memory(self) -> None:
        """``torch.cuda.reset_peak_memory_stats`` on CUDA."""
        if self._on_cuda():
            import torch

            torch.cuda.reset_peak_memory_stats(self._torch_device)

    def peak_memory(self) -> PeakMemory:
        """``torch.cuda.max_memory_allocated`` since the last reset (the runner resets after load)."""
        if self._on_cuda():
            import torch

            return int(torch.cuda.max_memory_allocated(self._torch_device)), PEAK_METHOD
        return None, "not measured: the model runs on the CPU (host RSS is recorded separately)"

    def close(self) -> None:
        """Drop the model and tokenizer; empty the CUDA cache."""
        self.model = None
        super().close()
        if self._on_cuda():
            import torch

            torch.cuda.empty_cache()

