"""llama.cpp backend (llama-cpp-python): GGUF models on the CPU (or CUDA with a CUDA build).

* **Precisions are GGUF quant types** — ``q4_1``, ``q8_0``, ``f16``, ``q4_k_m``, ... — plus the
  generic names the rest of e3bench uses: ``native`` (the file as shipped), ``fp32``→F32,
  ``fp16``→F16, ``bf16``→BF16, ``int8``→Q8_0, ``int4``→the file as shipped when it is already a
  4-bit type, else Q4_K_M. A type other than the file's is made once with llama.cpp's own
  quantizer (``llama_model_quantize``) and cached under ``cache_root/gguf-quantized/``.
  Re-quantizing an already quantized file needs ``allow_requantize`` and inherits its error: the
  record says so.
* **Own decode loop on the low-level API** — one ``llama_decode`` per step for the whole batch
  (one KV-cache sequence per prompt), the next token chosen on the host from the step's logits
  (the same greedy/sampling code as the ONNX backend, with EOS masked below ``min_new_tokens``
  as transformers does), then ``on_token``. Prompts of a batch are prefilled one after another
  (each in ``n_batch`` chunks); decode steps are batched.
* **Log-likelihood** — lm-eval's tokenization and truncation (:mod:`.tokenization`, through
  :class:`.base.BaseBackend`) over an adapter of llama.cpp's tokenizer; the shared context of a
  question is evaluated once, each choice reuses its KV cache. The maximum scored length is
  ``min(n_ctx, the model's training context)``: raise ``n_ctx`` to score (and roll perplexity
  windows over) as many tokens as the PyTorch backend does.
* ``llama_perf_context`` (the library's own timing) is exposed by :meth:`perf` so benchmarks can
  compare our decode tok/s with llama.cpp's.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from e3bench.backends.base import BaseBackend
from e3bench.backends.decoding import finish, still_running, take_step
from e3bench.core.api import Capabilities, Generation, GenParams, LoadInfo, ModelSpec, OnToken, PeakMemory
from e3bench.backends.gguf_types import GGUF_TYPES, captured_stderr, file_type, quantized, target_type
from e3bench.core.devices import canonical, device_index
from e3bench.core.errors import E3Error

class _Tokenizer:
    """The slice of a Hugging Face tokenizer that :mod:`.tokenization` uses, over llama.cpp's."""

    def __init__(self, llm) -> None:
        import llama_cpp

        self.llm = llm
        vocab = llama_cpp.llama_model_get_vocab(llm._model.model)
        self.bos_token_id = int(llm.token_bos()) if llm.token_bos() >= 0 else None
        self.eos_token_id = int(llm.token_eos()) if llm.token_eos() >= 0 else None
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab))

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=add_special_tokens and self.add_bos, special=False))

    def decode(self, ids) -> str:
        if isinstance(ids, int):
            ids = [ids]
        return self.llm.detokenize(list(ids)).decode("utf-8", "replace")


class LlamaCppOptions(BaseModel):
    """Options of the ``llamacpp`` backend (``backend_options``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_ctx: int = Field(2048, ge=16, description="context length in tokens (KV cache size per sequence)")
    n_batch: int = Field(512, ge=1, description="tokens per llama_decode call while prefilling")


class LlamaCppBackend(BaseBackend):
    """GGUF files on llama.cpp (llama-cpp-python), with our own batched decode loop."""

    name: ClassVar[str] = "llamacpp"
    Options: ClassVar[type[BaseModel]] = LlamaCppOptions
    capability_fix: ClassVar[str] = "pass a GGUF quant type such as q4_k_m, q8_0, f16, or native"
    capabilities: ClassVar[Capabilities] = Capabilities(
        devices=frozenset({"cpu", "cuda"}),
        precisions=frozenset({"native", "fp32", "fp16", "bf16", "int8", "int4", *GGUF_TYPES}),
        architectures=frozenset({"decoder-only"}),
        streaming=True,
        loglikelihood=True,
        batching=True,
    )

    def _setup(self) -> None:
        self.n_ctx = self.options.n_ctx
        self.n_batch = self.options.n_batch
        self.llm = None
        self._ctxs: dict[int, object] = {}
        self.notes: list[str] = []
        self.gguf_path: Path | None = None

    def precision_key(self, precision: str) -> str:
        """GGUF type names are case-insensitive (Q4_K_M = q4_k_m)."""
        return precision.lower()

    # ----------------------------------------------------------------------- loading
    def _load(self, model: ModelSpec, precision: str, device: str) -> LoadInfo:
        if model.source != "gguf":
            raise E3Error(
                f"the llamacpp backend runs GGUF files; '{model.name}' is a {model.source} model",
                "convert it with llama.cpp's convert_hf_to_gguf.py and pass the .gguf file "
                "(or use the bundled smollm2-135m)",
            )
        import llama_cpp

        gpu = device_index(device)  # None on the CPU; cuda → 0, cuda:N → N
        if gpu is not None and not llama_cpp.llama_supports_gpu_offload():
            raise E3Error(
                f"--device {device} needs a llama-cpp-python built with CUDA; this build offloads nothing to a GPU",
                "CMAKE_ARGS='-DGGML_CUDA=on' pip install --force-reinstall --no-binary llama-cpp-python llama-cpp-python, "
                "or use --device cpu",
            )
        from e3bench.backends.modelfiles import check_gguf

        self.notes = []
        src = Path(model.path) / (model.gguf_file or "")
        check_gguf(src)  # the magic bytes, then the header: one line for a foreign or damaged file
        arch, shipped = file_type(src)
        target = target_type(shipped, precision)
        if target:
            path, note = quantized(src, shipped, target, cache_dir=self.cache_dir, threads=self.threads)
            self.notes.append(note)
        else:
            path = src
        self.gguf_path = path
        running = target or shipped or "native"
        with captured_stderr() as err:
            try:
                self.llm = llama_cpp.Llama(
                    model_path=str(path),
                    n_ctx=self.n_ctx,
                    n_batch=self.n_batch,
                    n_ubatch=self.n_batch,
                    n_threads=self.threads,
                    n_threads_batch=self.threads,
                    n_gpu_layers=-1 if gpu is not None else 0,
                    # one GPU, the one asked for (llama.cpp would otherwise split layers over all)
                    **({} if gpu is None else {"split_mode": llama_cpp.LLAMA_SPLIT_MODE_NONE, "main_gpu": gpu}),
                    logits_all=False,
                    # verbose=True so llama.cpp's load errors reach the captured stderr (with
                    # False, llama-cpp-python sends them to /dev/null); quiet again below
                    verbose=True,
                )
            except Exception as exc:  # noqa: BLE001 - explained from llama.cpp's log below
                failure = exc
            else:
                failure = None
            from llama_cpp._logger import set_verbose

            set_verbose(False)
        if self.llm is not None:
            self.llm.verbose = False
        if failure is not None:
            log = err.text()
            m = re.search(r"unknown model architecture: '([^']+)'", log)
            if m or "unknown model architecture" in log:
                raise E3Error(
                    f"llama.cpp (llama-cpp-python {llama_cpp.__version__}) does not know the architecture "
                    f"'{m.group(1) if m else arch}' of {src.name}",
                    "upgrade llama-cpp-python (newer llama.cpp knows more architectures) or use the pytorch backend",
                ) from None
            tail = " ".join(log.strip().splitlines()[-3:])
            raise E3Error(f"llama.cpp could not load {path.name}: {failure} {tail}".strip(), "check the GGUF file") from None
        self._ctxs = {}
        self.tokenizer = _Tokenizer(self.llm)
        self.max_length = min(self.n_ctx, int(self.llm._model.n_ctx_train()) or self.n_ctx)
        md = self.llm.metadata
        from e3bench.backends.weightbytes import gguf_weights
        from e3bench.core.decodebytes import decode_step_bytes

        n_params = int(llama_cpp.llama_model_n_params(self.llm._model.model))
        self.notes.append(
            f"llama-cpp-python {llama_cpp.__version__}; GGUF type {running.upper()}; threads "
            f"{self.llm.n_threads}; n_ctx {self.n_ctx}; n_batch {self.n_batch}; batch>1: one KV sequence per "
            "prompt, prompts prefilled one after another, decode steps batched"
        )
        return LoadInfo(
            architecture="decoder-only",
            model_type=str(md.get("general.architecture", arch or "gguf")),
            parameters=n_params,
            weights_bytes=decode_step_bytes(gguf_weights(path)),  # see core.decodebytes
            dtype=running,
            device=canonical(device),
            vocab_size=int(self.llm.n_vocab()),
            max_positions=int(self.llm._model.n_ctx_train()),
            notes=tuple(self.notes),
        )

    def threads_in_use(self) -> dict[str, int]:
        """llama.cpp's decode (``n_threads``) and prompt (``n_threads_batch``) thread counts, as
        the loaded context holds them."""
        if self.llm is None:
            return {}
        p = self.llm.context_params
        return {"n_threads": int(p.n_threads), "n_threads_batch": int(p.n_threads_batch)}

    @property
    def context_length(self) -> int | None:
        """``n_ctx``: the KV cache of one sequence (see :attr:`e3bench.core.api.Backend.context_length`)."""
        return None if self.load_info is None else self.n_ctx

    # ---------------------------------------------------------------------- tokens
    def decode(self, token_ids: Sequence[int]) -> str:
        """Text of ``token_ids`` without BOS/EOS."""
        ids = [t for t in token_ids if t not in (self.tokenizer.bos_token_id, self.tokenizer.eos_token_id)]
        return self.tokenizer.decode(ids)

    # ---------------------------------------------------------------------- engine
    def _context(self, n_seq: int, n_ctx: int):
        """Llama's own context for one sequence; a multi-sequence context for batches."""
        from llama_cpp import _internals as internals

        if n_seq == 1 and n_ctx <= self.llm.n_ctx():
            return self.llm._ctx
        key = n_seq
        ctx = self._ctxs.get(key)
        if ctx is None or ctx.n_ctx() < n_ctx:
            old = self.llm.context_params
            params = type(old).from_buffer_copy(old)  # a byte copy of the ctypes struct
            params.n_seq_max = n_seq
            params.n_ctx = max(n_ctx, 256)
            params.kv_unified = True
            ctx = internals.LlamaContext(model=self.llm._model, params=params, verbose=False)
            self._ctxs[key] = ctx
        return ctx

    def _decode(self, ctx, tokens: Sequence[int], pos: Sequence[int], seq: Sequence[int], want: Sequence[bool]):
        """One llama_decode; returns logits rows for the positions flagged in ``want``."""
        import llama_cpp
        from llama_cpp import _internals as internals

        n = len(tokens)
        batch = internals.LlamaBatch(n_tokens=n, embd=0, n_seq_max=1, verbose=False)
        try:
            b = batch.batch
            for i in range(n):
                b.token[i] = tokens[i]
                b.pos[i] = pos[i]
                b.seq_id[i][0] = seq[i]
                b.n_seq_id[i] = 1
                b.logits[i] = want[i]
            b.n_tokens = n
            rc = llama_cpp.llama_decode(ctx.ctx, b)
            if rc != 0:
                raise E3Error(f"llama_decode failed (code {rc}): the KV cache is probably full", "use shorter prompts")
            nv = self.llm.n_vocab()
            rows = []
            for i in range(n):
                if want[i]:
                    ptr = llama_cpp.llama_get_logits_ith(ctx.ctx, i)
                    rows.append(np.ctypeslib.as_array(ptr, shape=(nv,)).copy())
            return np.stack(rows) if rows else np.empty((0, nv), np.float32)
        finally:
            batch.close()

    def _prefill(self, ctx, tokens: Sequence[int], seq: int, start: int, want_all: bool) -> np.ndarray:
        rows = []
        for i in range(0, len(tokens), self.n_batch):
            chunk = tokens[i : i + self.n_batch]
            last = i + len(chunk) == len(tokens)
            want = [want_all or (last and j == len(chunk) - 1) for j in range(len(chunk))]
            rows.append(self._decode(ctx, chunk, range(start + i, start + i + len(chunk)), [seq] * len(chunk), want))
        return np.concatenate(rows)

    # ------------------------------------------------------------------- inference
    def _generate(
        self, prompts: Sequence[Sequence[int]], params: GenParams, on_token: OnToken | None = None
    ) -> list[Generation]:
        n = len(prompts)
        need = max(len(p) for p in prompts) + params.max_new_tokens
        ctx = self._context(n, n * need if n > 1 else need)
        ctx.kv_cache_clear()
        eos = self.tokenizer.eos_token_id
        rng = np.random.default_rng(params.seed)
        last = np.stack([self._prefill(ctx, list(p), i, 0, False)[-1] for i, p in enumerate(prompts)])
        rows: list[list[int]] = [[] for _ in prompts]
        done = np.zeros(n, dtype=bool)
        lens = [len(p) for p in prompts]
        active = list(range(n))  # the sequences still decoding (a finished one is no longer sent)
        for step in range(params.max_new_tokens):
            nxt = take_step(last, params, rng, eos=eos, step=step, rows=rows, done=done, active=active,
                            decode=self.decode)  # fmt: skip
            if on_token is not None:
                on_token(step + 1)
            if done.all() or step + 1 == params.max_new_tokens:
                break
            sel, active = still_running(active, done)
            tokens = nxt.tolist()
            last = self._decode(ctx, [tokens[j] for j in sel], [lens[i] + step for i in active], active,
                                [True] * len(active))  # fmt: skip
        return finish(rows, params, eos, None, self.decode)

    def _forward(self, prompts: Sequence[Sequence[int]]) -> None:
        ctx = self._context(len(prompts), sum(len(p) for p in prompts))
        ctx.kv_cache_clear()
        for i, p in enumerate(prompts):
            self._prefill(ctx, list(p), i, 0, False)

    def _prefix_state(self, prefix: tuple[int, ...]):
        ctx = self._context(1, self.n_ctx)
        ctx.kv_cache_clear()
        if prefix:
            self._prefill(ctx, list(prefix), 0, 0, False)
        return ctx

    def _suffix_logits(self, ctx, prefix: tuple[int, ...], suffix: tuple[int, ...]) -> np.ndarray:
        ctx.kv_cache_seq_rm(0, len(prefix), -1)  # drop the previous choice, keep the prefix
        return self._prefill(ctx, list(suffix), 0, len(prefix), True)

    def perf(self) -> dict[str, float]:
        """llama.cpp's own counters for its main context (``llama_perf_context``)."""
        import llama_cpp

        d = llama_cpp.llama_perf_context(self.llm._ctx.ctx)
        return {
            "prompt_eval_ms": d.t_p_eval_ms,
            "prompt_tokens": d.n_p_eval,
            "eval_ms": d.t_eval_ms,
            "eval_tokens": d.n_eval,
        }

    def perf_reset(self) -> None:
        """Zero llama.cpp's own counters for the main context."""
        import llama_cpp

        llama_cpp.llama_perf_context_reset(self.llm._ctx.ctx)

    # ---------------------------------------------------------------------- device
    def peak_memory(self) -> PeakMemory:
        """``(None, why)``: llama.cpp has no peak-allocation counter."""
        return None, "not available: llama.cpp has no peak-allocation counter (host RSS is recorded separately)"

    def close(self) -> None:
        """Free the extra contexts and the model."""
        for ctx in self._ctxs.values():
            with contextlib.suppress(Exception):
                ctx.close()
        self._ctxs = {}
        if self.llm is not None:
            with contextlib.suppress(Exception):
                self.llm.close()
        self.llm = None
        super().close()
