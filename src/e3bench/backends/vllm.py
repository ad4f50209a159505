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
  continuation, tokenized and truncated by lm-eval's rules like every backend
  (:mod:`.tokenization`): the prompt is the input ``(ctx + cont)[-(max_length + 1):][:-1]`` plus
  the last continuation token, and ``max_length = max_model_len - 2`` because vLLM needs room
  for that prompt plus the one token it must generate. The continuation's prompt logprobs are
  summed; ``is_greedy`` is ``rank == 1`` for every continuation token.
* **Generation contexts** — lm-eval's ``generate_until`` input like every backend
  (:meth:`~.base.BaseBackend.encode_context`), left-truncated to ``max_model_len -
  max_new_tokens`` (lm-eval's vLLM model generates within the whole ``max_model_len``).
* **Peak memory** — vLLM reserves ``gpu_memory_utilization × total`` up front (weights + KV
  cache, in its own process): that reservation is what :meth:`VllmBackend.peak_memory` reports,
  and its label says so.
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

from pydantic import BaseModel, ConfigDict, Field

from e3bench.backends.base import BaseBackend
from e3bench.backends.decoding import min_new
from e3bench.backends.tokenization import split_causal
from e3bench.core.api import Capabilities, Generation, GenParams, LoadInfo, LogLik, ModelSpec, OnToken, PeakMemory
from e3bench.core.devices import device_index
from e3bench.core.errors import E3Error

_DTYPE = {"fp16": "float16", "bf16": "bfloat16", "int8": "auto", "int4": "auto"}
#: quantization methods of pre-quantized checkpoints → the precision they give
_QUANT_BITS = {"gptq": None, "awq": 4, "compressed-tensors": None, "fp8": 8, "bitsandbytes": 4, "gptq_marlin": None, "awq_marlin": 4}


def _checkpoint_quant(path: Path) -> tuple[str | None, int | None]:
    """(method, weight bits) from a checkpoint's ``config.json`` quantization_config."""
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        return None, None
    try:
        cfg = json.loads(cfg_file.read_bytes())
    except (OSError, ValueError):
        raise E3Error(f"{cfg_file} is not valid JSON", "download or copy the model folder again") from None
    q = (cfg.get("quantization_config") if isinstance(cfg, dict) else None) or {}
    if not isinstance(q, dict):
        return None, None
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


class VllmOptions(BaseModel):
    """Options of the ``vllm`` backend (``backend_options``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gpu_memory_utilization: float = Field(
        0.85, gt=0, le=1, description="fraction of the GPU's memory vLLM reserves for weights + KV cache"
    )
    max_model_len: int | None = Field(4096, ge=8, description="longest sequence (prompt + output) in tokens")
    enforce_eager: bool = Field(False, description="no CUDA graphs (faster start, slower decode)")


class VllmBackend(BaseBackend):
    """The vLLM offline engine on an NVIDIA GPU, stepped by us for per-token timing."""

    name: ClassVar[str] = "vllm"
    Options: ClassVar[type[BaseModel]] = VllmOptions
    capability_fix: ClassVar[str] = "vLLM runs on NVIDIA GPUs: use --device cuda, or another backend on CPU"
    capabilities: ClassVar[Capabilities] = Capabilities(
        devices=frozenset({"cuda"}),
        precisions=frozenset({"fp16", "bf16", "int8", "int4"}),
        architectures=frozenset({"decoder-only"}),
        streaming=True,
        loglikelihood=True,
        batching=True,
    )

    def _setup(self) -> None:
        self.engine = None
        self.max_model_len = self.max_length + 2
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
        from e3bench.backends.models import local_dir

        path, notes = local_dir(spec, self.cache_dir)  # checked files; refuses unasked-for custom code
        self.notes.extend(notes)
        return str(path)

    def _compressed(self, src: Path, precision: str, trust_remote_code: bool) -> Path:
        """Quantize an unquantized checkpoint with llm-compressor once (cached)."""
        from e3bench.backends.models import cache_root
        from e3bench.core.fsutil import adopt_legacy_entry, atomic_dir, dir_key, legacy_dir_key

        scheme = {"int8": "W8A8", "int4": "W4A16"}[precision]
        target = cache_root(self.cache_dir) / "llmcompressor" / dir_key(src) / scheme
        adopt_legacy_entry(target.parent.parent, target.parent.name, legacy_dir_key(src))
        if (target / "config.json").is_file():
            from e3bench.backends.modelfiles import check_model_dir

            check_model_dir(target, trust_remote_code=trust_remote_code,
                            fix=f"delete the damaged cache entry {target} (it is quantized again)")  # fmt: skip
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

        model = AutoModelForCausalLM.from_pretrained(str(src), dtype="auto", trust_remote_code=trust_remote_code)
        tok = AutoTokenizer.from_pretrained(str(src), trust_remote_code=trust_remote_code)
        recipe = [GPTQModifier(targets="Linear", scheme=scheme, ignore=["lm_head"])]
        oneshot(
            model=model,
            tokenizer=tok,
            dataset=_calibration_dataset(tok),
            recipe=recipe,
            max_seq_length=512,
            num_calibration_samples=128,
        )
        with atomic_dir(target) as tmp:
            model.save_pretrained(str(tmp), save_compressed=True)
            tok.save_pretrained(str(tmp))
        self.notes.append(f"quantized to {scheme} with llm-compressor GPTQ (128 calibration texts): {target}")
        return target

    def _load(self, model: ModelSpec, precision: str, device: str) -> LoadInfo:
        if (device_index(device) or 0) > 0:
            raise E3Error(f"the vllm backend places the model on the first GPU it sees, not on --device {device}",
                          f"select the GPU with CUDA_VISIBLE_DEVICES={device_index(device)} and pass --device cuda")  # fmt: skip
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
                path = self._compressed(path, precision, model.trust_remote_code)
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
        opts = self.options
        args = EngineArgs(
            model=str(path),
            dtype=_DTYPE[precision],
            seed=0,
            gpu_memory_utilization=opts.gpu_memory_utilization,
            max_model_len=opts.max_model_len,
            enforce_eager=opts.enforce_eager,
            disable_log_stats=True,
            trust_remote_code=model.trust_remote_code,  # explicit: vLLM never runs a model's code unasked
        )
        self.engine = LLMEngine.from_engine_args(args)
        self.tokenizer = self.engine.get_tokenizer()
        tok = self.tokenizer
        mc = self.engine.model_config if hasattr(self.engine, "model_config") else self.engine.get_model_config()
        hf = mc.hf_config
        params, weights = _param_counts(path)
        max_model_len = int(getattr(mc, "max_model_len", None) or opts.max_model_len or 4096)
        self.max_length = max_model_len - 2  # prompt = max_length + 1 tokens, plus 1 generated
        self.max_model_len = max_model_len
        self.notes.append(f"vllm {vllm.__version__}; gpu_memory_utilization {opts.gpu_memory_utilization}")
        return LoadInfo(
            architecture="decoder-only",
            model_type=str(getattr(hf, "model_type", "?")),
            parameters=params,
            weights_bytes=weights,
            dtype=precision,
            device="cuda:0",
            vocab_size=int(getattr(hf, "vocab_size", 0) or len(tok)),
            max_positions=max_model_len,
            notes=tuple(self.notes),
        )

    def generation_max_length(self) -> int:
        """``max_model_len``: lm-eval's vLLM model generates within the whole context (scoring
        keeps two positions back, see ``max_length``)."""
        return self.max_model_len

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

    def _generate(
        self, prompts: Sequence[Sequence[int]], params: GenParams, on_token: OnToken | None = None
    ) -> list[Generation]:
        eos = self.tokenizer.eos_token_id
        gens = []
        for o in self._run(prompts, self._sampling(params), on_token):
            c = o.outputs[0]
            ids = list(c.token_ids)
            reason = "length"
            if c.finish_reason == "stop":
                # vLLM: stop_reason is the matched stop string, None for EOS (or a stop token id)
                reason = "stop" if isinstance(c.stop_reason, str) else "eos"
                if reason == "eos" and ids and ids[-1] == eos:
                    ids = ids[:-1]  # the contract: token_ids never hold the EOS that ended them
            gens.append(Generation(token_ids=ids, text=c.text, finish_reason=reason))
        return gens

    def _forward(self, prompts: Sequence[Sequence[int]]) -> None:
        self._run(prompts, self._sampling(GenParams(max_new_tokens=1)))

    def _score(self, encoded) -> list[LogLik]:
        from vllm import SamplingParams

        sp = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1, detokenize=False)
        splits = split_causal(encoded, self.max_length)
        # the scored input plus the last target: every target is then a prompt token
        prompts = [list(x.prefix + x.suffix) + [x.targets[-1]] for x in splits]
        results = []
        for o, whole, x in zip(self._run(prompts, sp), prompts, splits, strict=True):
            plp = o.prompt_logprobs
            total, greedy = 0.0, True
            for pos in range(len(whole) - len(x.targets), len(whole)):
                entry = plp[pos][whole[pos]]
                total += float(entry.logprob)
                greedy = greedy and getattr(entry, "rank", 1) == 1
            results.append(LogLik(logprob=total, is_greedy=greedy, n_tokens=len(x.targets)))
        return results

    # ---------------------------------------------------------------------- device
    def peak_memory(self) -> PeakMemory:
        """vLLM pre-allocates ``gpu_memory_utilization × total`` for weights + KV cache, and with V1
        multiprocessing the model lives in another process, so this process's torch.cuda
        counters would say ~0. Reported: that reservation, labelled as one."""
        try:
            import torch

            total = torch.cuda.get_device_properties(0).total_memory
        except Exception:  # noqa: BLE001 - no CUDA runtime: no figure
            return None, "not available: no CUDA runtime in this process"
        util = self.options.gpu_memory_utilization
        return int(util * total), f"reserved: gpu_memory_utilization ({util}) × total device memory"

    def close(self) -> None:
        """Shut the engine core down and free the GPU cache."""
        engine, self.engine = self.engine, None
        if engine is not None:
            core = getattr(engine, "engine_core", None)
            shutdown = getattr(core, "shutdown", None)
            if callable(shutdown):
                shutdown()
        del engine
        super().close()
        if self._cuda_available():
            import torch

            torch.cuda.empty_cache()


def _param_counts(path: Path) -> tuple[int, int]:
    """See :func:`e3bench.backends.weightbytes.safetensors_param_counts`."""
    from e3bench.backends.weightbytes import safetensors_param_counts

    return safetensors_param_counts(path)


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
