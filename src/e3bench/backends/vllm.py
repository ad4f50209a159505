"""vLLM backend: the offline engine on NVIDIA GPUs.

* **Engine** — ``vllm.LLMEngine.from_engine_args(EngineArgs(...))``; requests go in with
  ``add_request(request_id, TokensPrompt(prompt_token_ids=...), SamplingParams(...))`` and we
  drive ``engine.step()`` ourselves. Each step returns the requests' cumulative outputs; when
  every sequence of the batch has one more token, ``on_token(k)`` fires — so TTFT/TPOT are the
  time tokens reach *this* process, as a client of the engine sees them.
* **Precisions** — fp16 / bf16 (``dtype``); int8 / int4 use a pre-quantized checkpoint (GPTQ,
  AWQ, compressed-tensors W8A8 / W4A16 …; vLLM reads ``quantization_config`` from the
  checkpoint). Asking int8/int4 of an unquantized checkpoint quantizes it once with
  llm-compressor (GPTQ W8A8 / W4A16, calibration on local text) into
  ``cache_root/llmcompressor/<source>/<scheme>/``.
* **Log-likelihood** — ``SamplingParams(max_tokens=1, prompt_logprobs=1)`` on context +
  continuation (lm-eval's tokenization); the continuation's prompt logprobs are summed, and
  ``is_greedy`` is ``rank == 1`` for every continuation token.
* CUDA only (vLLM's CPU build is a different install); on a CPU machine sweeps skip it with
  the capability reason.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from e3bench.core.api import Capabilities, Generation, GenParams, LoadInfo, LogLik, ModelSpec, OnToken
from e3bench.backends._common import min_new
from e3bench.core.errors import E3Error

_DTYPE = {"fp16": "float16", "bf16": "bfloat16", "int8": "auto", "int4": "auto"}
#: quantization methods of pre-quantized checkpoints → the precision they give
_QUANT_BITS = {"gptq": None, "awq": 4, "compressed-tensors": None, "fp8": 8, "bitsandbytes": 4, "gptq_marlin": None, "awq_marlin": 4}


def _checkpoint_quant(path: Path) -> tuple[str | None, int | None]:
    """(method, weight bits) from a checkpoint's ``config.json`` quantization_config."""
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        return None, None
    q = json.loads(cfg_file.read_text()).get("quantization_config") or {}
    method = q.get("quant_method")
    if not method:
        return None, None
    bits = q.get("bits") or q.get("w_bit")
    if bits is None and method == "compressed-tensors":
        for group in (q.get("config_groups") or {}).values():
            bits = (group.get("weights") or {}).get("num_bits")
            if bits:
                break
    return method, int(bits) if bits else _QUANT_BITS.get(method)


class VllmBackend:
    name: ClassVar[str] = "vllm"
    capabilities: ClassVar[Capabilities] = Capabilities(
        devices=frozenset({"cuda"}),
        precisions=frozenset({"fp16", "bf16", "int8", "int4"}),
        architectures=frozenset({"decoder-only"}),
        streaming=True,
        loglikelihood=True,
        batching=True,
    )

    def __init__(
        self,
        *,
        cache_dir: str | None = None,
        threads: int | None = None,
        gpu_memory_utilization: float = 0.85,
        max_model_len: int | None = 4096,
        enforce_eager: bool = False,
    ) -> None:
        self.cache_dir = cache_dir
        self.threads = threads
        self.gpu_memory_utilization = gpu_memory_utilization
        self.max_model_len = max_model_len
        self.enforce_eager = enforce_eager
        self.engine = None
        self.tokenizer = None
        self.notes: list[str] = []
        self._ids = itertools.count()

    @staticmethod
    def _cuda_available() -> bool:
        try:
            import torch

            return bool(torch.cuda.is_available())
        except ImportError:  # pragma: no cover - vllm depends on torch
            return False

    # ----------------------------------------------------------------------- loading
    def _model_path(self, spec: ModelSpec) -> str:
        if spec.source == "gguf":
            raise E3Error(
                "the vllm backend runs Hugging Face checkpoints (safetensors, GPTQ/AWQ/compressed-tensors); "
                f"'{spec.name}' is a GGUF file",
                "use --backend llamacpp for GGUF, or pass a Hugging Face id / directory",
            )
        if spec.source == "hub":
            try:
                from huggingface_hub import snapshot_download

                return snapshot_download(spec.path, revision=spec.revision)
            except Exception as exc:  # noqa: BLE001 - hub errors come in many types
                from e3bench.backends.models import hub_error

                raise hub_error(spec.path, exc) from None
        return spec.path

    def _compressed(self, src: Path, precision: str) -> Path:
        """Quantize an unquantized checkpoint with llm-compressor once (cached)."""
        from e3bench.backends._common import atomic_dir, commit_dir, dir_key
        from e3bench.backends.models import cache_root

        scheme = {"int8": "W8A8", "int4": "W4A16"}[precision]
        target = cache_root(self.cache_dir) / "llmcompressor" / dir_key(src) / scheme
        if (target / "config.json").is_file():
            self.notes.append(f"{scheme} checkpoint reused from cache: {target}")
            return target
        try:
            from llmcompressor import oneshot
            from llmcompressor.modifiers.quantization import GPTQModifier
        except ImportError:
            raise E3Error(
                f"--dtype {precision} on vllm needs a pre-quantized checkpoint (GPTQ/AWQ/compressed-tensors); "
                f"{src} is not quantized, and llm-compressor (to make one) is not installed",
                "pip install llmcompressor, or pass a pre-quantized model (e.g. an -AWQ / -GPTQ / -W8A8 repo)",
            ) from None
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(str(src), dtype="auto")
        tok = AutoTokenizer.from_pretrained(str(src))
        recipe = [GPTQModifier(targets="Linear", scheme=scheme, ignore=["lm_head"])]
        tmp = atomic_dir(target)
        oneshot(
            model=model,
            tokenizer=tok,
            dataset=_calibration_dataset(tok),
            recipe=recipe,
            max_seq_length=512,
            num_calibration_samples=128,
        )
        model.save_pretrained(str(tmp), save_compressed=True)
        tok.save_pretrained(str(tmp))
        commit_dir(tmp, target)
        self.notes.append(f"quantized to {scheme} with llm-compressor GPTQ (128 calibration texts): {target}")
        return target

    def load(self, model: ModelSpec, precision: str, device: str) -> LoadInfo:
        reason = self.capabilities.check(device=device, precision=precision)
        if reason:
            raise E3Error(f"vllm backend: {reason}", "vLLM runs on NVIDIA GPUs: use --device cuda, or another backend on CPU")
        if not self._cuda_available():
            raise E3Error(
                "the vllm backend needs an NVIDIA GPU, and PyTorch sees none here",
                "run on a machine with a CUDA GPU, or use --backend pytorch / onnxrt / llamacpp on CPU",
            )
        import vllm
        from vllm import EngineArgs, LLMEngine

        self.notes = []
        path = Path(self._model_path(model))
        method, bits = _checkpoint_quant(path)
        if precision in ("int8", "int4"):
            want = 8 if precision == "int8" else 4
            if method is None:
                path = self._compressed(path, precision)
                method, bits = _checkpoint_quant(path)
            elif bits is not None and bits != want:
                raise E3Error(
                    f"{model.name} is a {bits}-bit {method} checkpoint, not {precision}",
                    f"use --dtype int{bits}, or a {precision} checkpoint",
                )
            self.notes.append(f"pre-quantized checkpoint: {method} ({bits or '?'}-bit weights)")
        elif method is not None:
            raise E3Error(
                f"{model.name} is a {method} quantized checkpoint; it cannot run as {precision}",
                f"use --dtype int{bits or 4}, or the unquantized model",
            )
        args = EngineArgs(
            model=str(path),
            dtype=_DTYPE[precision],
            seed=0,
            gpu_memory_utilization=self.gpu_memory_utilization,
            max_model_len=self.max_model_len,
            enforce_eager=self.enforce_eager,
            disable_log_stats=True,
        )
        self.engine = LLMEngine.from_engine_args(args)
        self.tokenizer = self.engine.get_tokenizer()
        tok = self.tokenizer
        mc = self.engine.model_config if hasattr(self.engine, "model_config") else self.engine.get_model_config()
        hf = mc.hf_config
        params, weights = _param_counts(path)
        self.notes.append(f"vllm {vllm.__version__}; gpu_memory_utilization {self.gpu_memory_utilization}")
        return LoadInfo(
            architecture="decoder-only",
            model_type=str(getattr(hf, "model_type", "?")),
            parameters=params,
            weights_bytes=weights,
            dtype=precision,
            device="cuda",
            vocab_size=int(getattr(hf, "vocab_size", 0) or len(tok)),
            max_positions=int(mc.max_model_len) if getattr(mc, "max_model_len", None) else None,
            notes=tuple(self.notes),
        )

    # ---------------------------------------------------------------------- tokens
    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True)

    # ------------------------------------------------------------------- inference
    def _sampling(self, params: GenParams, **extra):
        from vllm import SamplingParams

        kw = {
            "max_tokens": params.max_new_tokens,
            "min_tokens": min_new(params),
            "ignore_eos": params.ignore_eos,
            "temperature": params.temperature if params.do_sample else 0.0,
            "top_p": params.top_p if params.do_sample else 1.0,
            "seed": params.seed if params.do_sample else None,
            "stop": list(params.stop) or None,
            "detokenize": True,
        }
        kw.update(extra)
        return SamplingParams(**kw)

    def _run(self, prompts: Sequence[Sequence[int]], sp, on_token: OnToken | None = None) -> list:
        from vllm.inputs import TokensPrompt

        ids = [f"e3b-{next(self._ids)}" for _ in prompts]
        for rid, p in zip(ids, prompts, strict=True):
            self.engine.add_request(rid, TokensPrompt(prompt_token_ids=list(p)), sp)
        latest: dict[str, object] = {}
        reported = 0
        while self.engine.has_unfinished_requests():
            for out in self.engine.step():
                if out.request_id in latest or out.request_id in ids:
                    latest[out.request_id] = out
            if on_token is not None and len(latest) == len(ids):
                # a sequence that finished early (EOS/stop) no longer holds the batch back
                counts = [len(o.outputs[0].token_ids) for o in latest.values() if not o.finished]
                ready = min(counts) if counts else max(len(o.outputs[0].token_ids) for o in latest.values())
                while reported < ready:
                    reported += 1
                    on_token(reported)
        return [latest[rid] for rid in ids]

    def generate(
        self, prompts: Sequence[Sequence[int]], params: GenParams, on_token: OnToken | None = None
    ) -> list[Generation]:
        outs = self._run(prompts, self._sampling(params), on_token)
        gens = []
        for o in outs:
            c = o.outputs[0]
            reason = {"stop": "eos", "length": "length"}.get(c.finish_reason or "length", "length")
            if c.finish_reason == "stop" and getattr(c, "stop_reason", None) is not None and isinstance(c.stop_reason, str):
                reason = "stop"
            gens.append(Generation(token_ids=list(c.token_ids), text=c.text, finish_reason=reason))
        return gens

    def forward(self, prompts: Sequence[Sequence[int]]) -> None:
        self._run(prompts, self._sampling(GenParams(max_new_tokens=1)))

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[LogLik]:
        from e3bench.backends.hf_scorer import encode_pair

        encoded = [encode_pair(self.tokenizer, c, x) for c, x in requests]
        return self.loglikelihood_tokens(encoded)

    def loglikelihood_tokens(self, encoded: Sequence[tuple[Sequence[int], Sequence[int]]]) -> list[LogLik]:
        from vllm import SamplingParams

        sp = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1, detokenize=False)
        max_len = self.max_model_len or 4096
        prompts, conts = [], []
        for ctx, cont in encoded:
            whole = (list(ctx) + list(cont))[-max_len:]
            prompts.append(whole)
            conts.append(list(cont))
        outs = self._run(prompts, sp)
        results = []
        for o, whole, cont in zip(outs, prompts, conts, strict=True):
            plp = o.prompt_logprobs
            n = len(cont)
            total, greedy = 0.0, True
            for pos in range(len(whole) - n, len(whole)):
                entry = plp[pos][whole[pos]]
                total += float(entry.logprob)
                greedy = greedy and getattr(entry, "rank", 1) == 1
            results.append(LogLik(logprob=total, is_greedy=greedy, n_tokens=n))
        return results

    # ---------------------------------------------------------------------- device
    def synchronize(self) -> None:
        return None  # step() hands back outputs that are already on the host

    def reset_peak_memory(self) -> None:
        return None  # the engine reserves its memory up front; there is no peak to reset

    def peak_memory_bytes(self) -> int | None:
        # vLLM pre-allocates gpu_memory_utilization × total memory for weights + KV cache, and
        # with V1 multiprocessing the model lives in another process, so this process's
        # torch.cuda counters would say ~0. Report the engine's reservation: what the GPU holds.
        try:
            import torch

            total = torch.cuda.get_device_properties(0).total_memory
        except Exception:  # noqa: BLE001 - no CUDA runtime: no figure
            return None
        return int(self.gpu_memory_utilization * total)

    def close(self) -> None:
        import gc

        engine, self.engine = self.engine, None
        if engine is not None:
            core = getattr(engine, "engine_core", None)
            shutdown = getattr(core, "shutdown", None)
            if callable(shutdown):
                shutdown()
        del engine
        gc.collect()
        if self._cuda_available():
            import torch

            torch.cuda.empty_cache()


def _param_counts(path: Path) -> tuple[int, int]:
    """(parameters, bytes) from the safetensors headers, without loading weights."""
    import struct

    n = size = 0
    for f in sorted(path.glob("*.safetensors")):
        with open(f, "rb") as fh:
            (hlen,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(hlen))
        for k, v in header.items():
            if k == "__metadata__":
                continue
            count = 1
            for d in v["shape"]:
                count *= d
            n += count
            a, b = v["data_offsets"]
            size += b - a
    return n, size


def _calibration_dataset(tokenizer, n: int = 128, length: int = 512):
    """Calibration texts for llm-compressor: local text under E3BENCH_DATA_DIR if there, else
    the hub's ``open_platypus`` (what llm-compressor's examples use)."""
    data = os.environ.get("E3BENCH_DATA_DIR")
    text_file = Path(data) / "text" / "tinyshakespeare.txt" if data else None
    if text_file is None or not text_file.is_file():
        return "open_platypus"
    from datasets import Dataset

    ids = tokenizer(text_file.read_text(), add_special_tokens=False)["input_ids"]
    rows = [ids[i : i + length] for i in range(0, min(len(ids), n * length), length)]
    return Dataset.from_dict({"input_ids": rows, "attention_mask": [[1] * len(r) for r in rows]})
