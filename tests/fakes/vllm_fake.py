"""A faithful stand-in for the slice of vLLM's API that :mod:`e3bench.backends.vllm` uses, for
tests on machines without a GPU.

It is *not* a mock that returns canned values: :class:`LLMEngine` runs a real transformers
model on the CPU, step by step, with vLLM V1's request life cycle — ``add_request`` queues; each
``step()`` schedules up to ``max_num_seqs`` unfinished requests (oldest first) and runs them as
**one batch** (new requests are prefilled and emit their first token in the same forward as the
running ones decode, as V1's mixed prefill/decode batches do); it returns **cumulative**
``RequestOutput`` objects (``outputs[0].token_ids`` grows, ``finished`` flips on the last one)
for the requests it ran. The batch is computed without a KV cache: every row is its whole
sequence, left-padded with an attention mask and position ids, so padding and batch
composition are exercised as in any batched engine. ``engine.batch_sizes`` records the rows of
each forward.

Stopping follows V1 (``v1/core/sched/utils.check_stop`` then the output processor's
detokenizer): ``max_tokens`` reached → ``finish_reason="length"``, checked first; else EOS (not
``ignore_eos``) → ``"stop"`` with ``stop_reason=None``, its token kept in ``token_ids`` and left
out of ``text``; EOS (and sampling of it) is masked until ``min_tokens`` tokens are out
(``MinTokensLogitsProcessor``). Stop strings are searched only once more than ``min_tokens``
tokens are out, and only in text that the tokens after ``min_tokens`` produced (a match must end
in the new text: vLLM's ``check_stop_strings`` window); the first string of ``stop`` (in list
order) that matches wins, the text is cut before it, ``finish_reason="stop"`` and
``stop_reason`` is the string — even on the ``max_tokens``-th token. ``SamplingParams``
validates like vLLM's (``max_tokens >= 1``, ``temperature >= 0``, ...) and
``prompt_logprobs`` come as vLLM's ``Logprob(logprob, rank, decoded_token)`` entries
(position 0 is ``None``).

``install()`` puts it in ``sys.modules`` as ``vllm`` and ``vllm.inputs``.
"""

from __future__ import annotations

import importlib.machinery
import sys
import types
from dataclasses import dataclass, field
from typing import Any

__version__ = "0.0.0+e3bench-fake"


@dataclass
class EngineArgs:
    model: str
    dtype: str = "auto"
    seed: int = 0
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None
    enforce_eager: bool = False
    disable_log_stats: bool = False
    quantization: str | None = None
    trust_remote_code: bool = False
    max_num_seqs: int = 256  # V1's default for the LLM class on a GPU: requests per batch


@dataclass
class SamplingParams:
    max_tokens: int | None = 16
    min_tokens: int = 0
    ignore_eos: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] | None = None
    detokenize: bool = True
    logprobs: int | None = None
    prompt_logprobs: int | None = None

    def __post_init__(self) -> None:  # vLLM's _verify_args, the parts we touch
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}.")
        if self.min_tokens < 0 or (self.max_tokens is not None and self.min_tokens > self.max_tokens):
            raise ValueError(f"min_tokens must be in [0, max_tokens], got {self.min_tokens}.")
        if self.temperature < 0:
            raise ValueError(f"temperature must be non-negative, got {self.temperature}.")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}.")


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: Any
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    prompt_logprobs: list[dict[int, Logprob] | None] | None
    outputs: list[CompletionOutput]
    finished: bool


@dataclass
class _ModelConfig:
    hf_config: Any
    max_model_len: int


@dataclass
class _Req:
    rid: str
    prompt: list[int]
    sp: SamplingParams
    out: list[int] = field(default_factory=list)
    prompt_logprobs: list | None = None
    text: str = ""
    check_from: int = 0  # stop strings must end after this character (vLLM's search window)
    finished: bool = False
    finish_reason: str | None = None
    stop_reason: int | str | None = None


class _Core:
    def __init__(self) -> None:
        self.alive = True

    def shutdown(self) -> None:
        self.alive = False


class LLMEngine:
    def __init__(self, args: EngineArgs) -> None:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        if args.dtype not in ("float16", "bfloat16", "float32", "auto"):
            raise ValueError(f"Unknown dtype: {args.dtype}")
        trust = args.trust_remote_code  # as vLLM: passed to every transformers call
        cfg = AutoConfig.from_pretrained(args.model, trust_remote_code=trust)
        if hasattr(cfg, "quantization_config"):  # the fake computes dequantized, in fp32
            del cfg.quantization_config
        self.model = AutoModelForCausalLM.from_pretrained(
            args.model, config=cfg, dtype=torch.float32, trust_remote_code=trust
        ).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(args.model, trust_remote_code=trust)
        cfg = self.model.config
        self.model_config = _ModelConfig(cfg, args.max_model_len or cfg.max_position_embeddings)
        self.engine_core = _Core()
        self.requests: dict[str, _Req] = {}
        self.max_num_seqs = args.max_num_seqs
        self.steps = 0
        self.batch_sizes: list[int] = []  # rows of each step's forward

    @classmethod
    def from_engine_args(cls, engine_args: EngineArgs) -> LLMEngine:
        return cls(engine_args)

    def get_tokenizer(self):
        return self.tokenizer

    def get_model_config(self):
        return self.model_config

    def add_request(self, request_id: str, prompt: dict, params: SamplingParams) -> None:
        if request_id in self.requests:
            raise ValueError(f"Request id {request_id} already running.")
        ids = list(prompt["prompt_token_ids"])
        if len(ids) + (params.max_tokens or 0) > self.model_config.max_model_len:
            raise ValueError("prompt + max_tokens exceed max_model_len")
        self.requests[request_id] = _Req(request_id, ids, params)

    def has_unfinished_requests(self) -> bool:
        return bool(self.requests)

    def _choose(self, r: _Req, logits) -> int:
        import torch

        x = logits.clone()
        eos = self.tokenizer.eos_token_id
        if eos is not None and (r.sp.ignore_eos or len(r.out) < r.sp.min_tokens):
            x[eos] = -float("inf")
        if r.sp.temperature == 0:
            return int(x.argmax())
        g = torch.Generator().manual_seed((r.sp.seed or 0) + len(r.out))
        return int(torch.multinomial(torch.softmax(x / r.sp.temperature, -1), 1, generator=g))

    def _forward(self, batch: list[_Req]):
        """One forward over the batch: rows left-padded to the longest sequence, with an
        attention mask and position ids. Returns the logits [rows, length, vocab] and the pads."""
        import torch

        seqs = [r.prompt + r.out for r in batch]
        width = max(map(len, seqs))
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        pads = [width - len(q) for q in seqs]
        ids = torch.tensor([[pad_id] * p + q for p, q in zip(pads, seqs, strict=True)])
        mask = torch.tensor([[0] * p + [1] * len(q) for p, q in zip(pads, seqs, strict=True)])
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).logits.float()
        return logits, pads

    def _prompt_logprobs(self, r: _Req, logits, pad: int) -> None:
        import torch

        lp = torch.log_softmax(logits[pad : pad + len(r.prompt)], -1)
        r.prompt_logprobs = [None]
        for pos in range(1, len(r.prompt)):
            row = lp[pos - 1]
            tok = r.prompt[pos]
            rank = int((row > row[tok]).sum()) + 1
            entry = {tok: Logprob(float(row[tok]), rank)}
            top = int(row.argmax())
            entry.setdefault(top, Logprob(float(row[top]), 1))
            r.prompt_logprobs.append(entry)

    def _finish(self, r: _Req) -> None:
        """V1's check_stop (length, then EOS), then the detokenizer's stop strings."""
        eos = self.tokenizer.eos_token_id
        tok = r.out[-1]
        eos_stop = False
        if len(r.out) >= (r.sp.max_tokens or 16):
            r.finished, r.finish_reason = True, "length"
        elif not r.sp.ignore_eos and tok == eos:
            r.finished, r.finish_reason, eos_stop = True, "stop", True
        if not r.sp.detokenize:
            return
        r.text = self.tokenizer.decode(r.out[:-1] if eos_stop else r.out, skip_special_tokens=True)
        if eos_stop or not r.sp.stop:
            return
        if len(r.out) <= r.sp.min_tokens:
            r.check_from = len(r.text)  # text of the first min_tokens tokens is never searched
            return
        for s in r.sp.stop:
            i = r.text.find(s, max(0, r.check_from - len(s) + 1))
            if i != -1:
                r.text = r.text[:i]
                r.finished, r.finish_reason, r.stop_reason = True, "stop", s
                return
        r.check_from = len(r.text)

    def step(self) -> list[RequestOutput]:
        import torch

        self.steps += 1
        batch = [r for r in self.requests.values() if not r.finished][: self.max_num_seqs]
        if not batch:
            return []
        self.batch_sizes.append(len(batch))
        with torch.inference_mode():
            logits, pads = self._forward(batch)
        outs = []
        for row, (r, pad) in enumerate(zip(batch, pads, strict=True)):
            if not r.out and r.sp.prompt_logprobs is not None:
                self._prompt_logprobs(r, logits[row], pad)
            r.out.append(self._choose(r, logits[row, -1]))
            self._finish(r)
            comp = CompletionOutput(0, r.text, list(r.out), None, None, r.finish_reason, r.stop_reason)
            outs.append(RequestOutput(r.rid, None, r.prompt, r.prompt_logprobs, [comp], r.finished))
            if r.finished:  # freed, as in vLLM: its id may be used again
                del self.requests[r.rid]
        return outs


def TokensPrompt(prompt_token_ids: list[int]) -> dict:
    return {"prompt_token_ids": prompt_token_ids}


def install() -> types.ModuleType:
    """Register this module as ``vllm`` (and ``vllm.inputs``) in ``sys.modules``."""
    mod = types.ModuleType("vllm")
    for name in ("EngineArgs", "LLMEngine", "SamplingParams", "RequestOutput", "CompletionOutput", "Logprob"):
        setattr(mod, name, globals()[name])
    mod.__version__ = __version__
    mod.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = TokensPrompt
    inputs.__spec__ = importlib.machinery.ModuleSpec("vllm.inputs", None)
    mod.inputs = inputs
    sys.modules["vllm"] = mod
    sys.modules["vllm.inputs"] = inputs
    return mod


def uninstall() -> None:
    for name in ("vllm", "vllm.inputs"):
        if getattr(sys.modules.get(name), "__version__", __version__) == __version__:
            sys.modules.pop(name, None)
