"""A faithful stand-in for the slice of vLLM's API that :mod:`e3bench.backends.vllm` uses, for
tests on machines without a GPU.

It is *not* a mock that returns canned values: :class:`LLMEngine` runs a real transformers
model on the CPU, step by step, with vLLM's request life cycle — ``add_request`` queues,
each ``step()`` prefills new requests (emitting their first token, as vLLM V1 does) and decodes
one token for every running one, and returns **cumulative** ``RequestOutput`` objects
(``outputs[0].token_ids`` grows, ``finished`` flips on the last one). ``SamplingParams``
validates like vLLM's (``max_tokens >= 1``, ``temperature >= 0``, ...) and honours
``min_tokens`` / ``ignore_eos`` / ``prompt_logprobs`` with vLLM's ``Logprob(logprob, rank,
decoded_token)`` entries (position 0 is ``None``). As in vLLM, a finished output's ``token_ids``
include the EOS that ended it (its ``text`` does not), ``stop_reason`` is the matched stop string
(``None`` for EOS), and stop strings are only checked once ``min_tokens`` tokens are out.

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
    past: Any = None
    next_logits: Any = None
    prompt_logprobs: list | None = None
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
        self.steps = 0

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
        return any(not r.finished for r in self.requests.values())

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

    def step(self) -> list[RequestOutput]:
        import torch

        self.steps += 1
        outs = []
        with torch.inference_mode():
            for r in [r for r in self.requests.values() if not r.finished]:
                if r.past is None:  # prefill: the whole prompt, first token comes with it
                    res = self.model(input_ids=torch.tensor([r.prompt]), use_cache=True)
                    logits = res.logits[0].float()
                    if r.sp.prompt_logprobs is not None:
                        lp = torch.log_softmax(logits, -1)
                        r.prompt_logprobs = [None]
                        for pos in range(1, len(r.prompt)):
                            row = lp[pos - 1]
                            tok = r.prompt[pos]
                            rank = int((row > row[tok]).sum()) + 1
                            entry = {tok: Logprob(float(row[tok]), rank)}
                            top = int(row.argmax())
                            entry.setdefault(top, Logprob(float(row[top]), 1))
                            r.prompt_logprobs.append(entry)
                    r.past, last = res.past_key_values, logits[-1]
                else:
                    pos = len(r.prompt) + len(r.out) - 1
                    res = self.model(
                        input_ids=torch.tensor([[r.out[-1]]]),
                        past_key_values=r.past,
                        position_ids=torch.tensor([[pos]]),
                        use_cache=True,
                    )
                    r.past, last = res.past_key_values, res.logits[0, -1].float()
                tok = self._choose(r, last)
                r.out.append(tok)
                eos = self.tokenizer.eos_token_id
                if not r.sp.ignore_eos and tok == eos and len(r.out) >= r.sp.min_tokens:
                    r.finished, r.finish_reason = True, "stop"
                elif len(r.out) >= (r.sp.max_tokens or 16):
                    r.finished, r.finish_reason = True, "length"
                text = self.tokenizer.decode(r.out, skip_special_tokens=True) if r.sp.detokenize else ""
                # vLLM's StopChecker: stop strings only count once min_tokens are out; the text is
                # cut before the match, stop_reason names the string (it stays None for EOS)
                if len(r.out) >= r.sp.min_tokens:
                    for s in r.sp.stop or []:
                        if s in text:
                            text = text[: text.index(s)]
                            r.finished, r.finish_reason, r.stop_reason = True, "stop", s
                            break
                comp = CompletionOutput(0, text, list(r.out), None, None, r.finish_reason, r.stop_reason)
                outs.append(RequestOutput(r.rid, None, r.prompt, r.prompt_logprobs, [comp], r.finished))
                if r.finished:
                    r.past = None
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
