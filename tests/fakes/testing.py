"""Test helpers: tiny locally-built models (no download) and a deterministic fake backend.

``build_tiny_models(root)`` trains a small BPE tokenizer with ``tokenizers`` on a built-in text
and writes three randomly initialised Hugging Face models from configs — a Llama-style decoder,
a T5 encoder-decoder and a BERT encoder — each a normal model directory that every code path
(model resolution, architecture detection, the PyTorch backend) treats like a real checkpoint,
marked as a random-weights fixture by ``e3bench-fixture.json`` (reports label its numbers so).
The whole build takes a few seconds on two cores.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from e3bench.results.architectures import FIXTURE_MARKER
from e3bench.core.api import (
    Capabilities,
    GenParams,
    Generation,
    LoadInfo,
    LogLik,
    ModelSpec,
    OnToken,
)

_CORPUS = (
    "The quick brown fox jumps over the lazy dog. A small language model reads text and "
    "predicts the next token. Energy is measured in joules and power in watts. Latency is "
    "the time a request takes; throughput is how many tokens per second come out. "
    "Question: what is two plus two? Answer: four. The answer is 4.\n"
)
_SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<mask>", "[CLS]", "[SEP]"]
_FIXTURE_VERSION = "2"  # 2: each model folder holds the fixture marker


def _train_tokenizer(vocab_size: int = 512):
    from transformers import PreTrainedTokenizerFast

    from e3bench.train.bpe import train_byte_bpe

    tok = train_byte_bpe([_CORPUS] * 50, vocab_size, _SPECIALS)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        mask_token="<mask>",
        cls_token="[CLS]",
        sep_token="[SEP]",
    )


def build_tiny_models(root: Path, *, seed: int = 0) -> dict[str, Path]:
    """Build (or reuse) tiny decoder / encoder-decoder / encoder models under ``root``.

    Returns ``{"decoder": dir, "encoder-decoder": dir, "encoder": dir}``.
    """
    import torch
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        LlamaConfig,
        LlamaForCausalLM,
        T5Config,
        T5ForConditionalGeneration,
    )

    root = Path(root)
    out = {
        "decoder": root / "tiny-llama",
        "encoder-decoder": root / "tiny-t5",
        "encoder": root / "tiny-bert",
    }
    stamp = root / ".fixtures.json"
    if stamp.exists() and json.loads(stamp.read_text()).get("version") == _FIXTURE_VERSION:
        if all((p / "config.json").exists() for p in out.values()):
            return out
    root.mkdir(parents=True, exist_ok=True)
    tok = _train_tokenizer()
    vocab = len(tok)
    ids = tok.convert_tokens_to_ids
    torch.manual_seed(seed)

    llama = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=vocab,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            bos_token_id=ids("<s>"),
            eos_token_id=ids("</s>"),
            pad_token_id=ids("<pad>"),
            tie_word_embeddings=True,
        )
    )
    t5 = T5ForConditionalGeneration(
        T5Config(
            vocab_size=vocab,
            d_model=64,
            d_ff=128,
            d_kv=16,
            num_layers=2,
            num_decoder_layers=2,
            num_heads=4,
            pad_token_id=ids("<pad>"),
            eos_token_id=ids("</s>"),
            decoder_start_token_id=ids("<pad>"),
        )
    )
    bert = BertForSequenceClassification(
        BertConfig(
            vocab_size=vocab,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=512,
            pad_token_id=ids("<pad>"),
            num_labels=2,
        )
    )
    for key, model in (("decoder", llama), ("encoder-decoder", t5), ("encoder", bert)):
        model.eval()
        model.save_pretrained(out[key])
        tok.save_pretrained(out[key])
        (out[key] / FIXTURE_MARKER).write_text(json.dumps({"fixture": "random weights", "built_by": "tests/fakes/testing.py"}))
    stamp.write_text(json.dumps({"version": _FIXTURE_VERSION}))
    return out


class FakeOptions(BaseModel):
    """The fake's timing knobs (seconds) and vocabulary size."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    step_s: float = Field(0.001, description="sleep per decode step")
    prefill_s: float = Field(0.002, description="sleep per prefill / forward")
    vocab: int = Field(100, description="vocabulary size")


class FakeBackend:
    """A deterministic in-memory backend for runner/CLI tests, written against the
    :class:`~e3bench.core.api.Backend` Protocol alone (no base class), as a plugin may be.

    Generation emits token ``(prompt_len + step) % vocab`` for every sequence and calls
    ``on_token`` each step. ``step_s`` makes each step take real time (busy-wait free: sleep),
    so timing code has something to measure. Not registered by default; tests register it.
    ``FakeBackend(step_s=0.01)`` is short for ``FakeBackend(FakeBackend.Options(step_s=0.01))``.
    """

    name: ClassVar[str] = "fake"
    Options: ClassVar[type[BaseModel]] = FakeOptions
    capabilities: ClassVar[Capabilities] = Capabilities(
        devices=frozenset({"cpu", "cuda"}),
        precisions=frozenset({"fp32", "bf16", "fp16"}),
        architectures=frozenset({"decoder-only", "encoder-decoder", "encoder-only"}),
        streaming=True,
        loglikelihood=True,
    )

    def __init__(self, options: BaseModel | None = None, *, cache_dir=None, threads=None, **overrides):
        opts = options if options is not None else FakeOptions(**overrides)
        self.step_s = opts.step_s
        self.prefill_s = opts.prefill_s
        self.vocab = opts.vocab
        self.architecture = ""
        self.device = ""
        self.load_info: LoadInfo | None = None
        self.loaded: ModelSpec | None = None
        self.closed = False
        self.sync_calls = 0

    def load(self, model: ModelSpec, precision: str, device: str) -> LoadInfo:
        self.loaded = model
        self.architecture, self.device = "decoder-only", device
        self.load_info = LoadInfo(
            architecture="decoder-only",
            model_type="fake",
            parameters=1000,
            weights_bytes=4000,
            dtype=precision,
            device=device,
            vocab_size=self.vocab,
        )
        return self.load_info

    def encode(self, text: str) -> list[int]:
        return [ord(c) % self.vocab for c in text]

    def encode_context(self, text: str, *, max_new_tokens: int) -> tuple[list[int], bool]:
        return self.encode(text), False

    def decode(self, token_ids: Sequence[int]) -> str:
        return "".join(chr(97 + (t % 26)) for t in token_ids)

    def generate(
        self, prompts: Sequence[Sequence[int]], params: GenParams, on_token: OnToken | None = None
    ) -> list[Generation]:
        import time

        time.sleep(self.prefill_s)
        outs: list[list[int]] = [[] for _ in prompts]
        for step in range(params.max_new_tokens):
            if step:
                time.sleep(self.step_s)
            for i, p in enumerate(prompts):
                outs[i].append((len(p) + step) % self.vocab)
            if on_token is not None:
                on_token(step + 1)
        return [Generation(token_ids=o, text=self.decode(o)) for o in outs]

    def forward(self, prompts: Sequence[Sequence[int]]) -> None:
        import time

        time.sleep(self.prefill_s)

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[LogLik]:
        return [LogLik(logprob=-float(len(c)), is_greedy=False, n_tokens=len(c)) for _, c in requests]

    def loglikelihood_rolling(self, texts: Sequence[str], *, max_length: int | None = None) -> list[LogLik]:
        return [LogLik(logprob=-float(len(t)), is_greedy=False, n_tokens=len(t)) for t in texts]

    def synchronize(self) -> None:
        self.sync_calls += 1

    def reset_peak_memory(self) -> None:
        return None

    def peak_memory(self) -> tuple[int | None, str]:
        return None, "not available: fake backend"

    def close(self) -> None:
        self.closed = True


#: the sliding window (tokens) of the sliding-window fixtures: prompts in the tests are longer
SLIDING_WINDOW = 16


def build_sliding_models(root: Path, tokenizer_dir: Path) -> dict[str, Path]:
    """Tiny decoders whose attention uses a ``SLIDING_WINDOW``-token sliding window, with the
    tokenizer in ``tokenizer_dir`` and weights at std 0.3 (varied greedy output):

    * ``mistral`` — every layer sliding (Mistral-style),
    * ``gemma3`` — hybrid: two sliding layers, then one global (Gemma 3's pattern); untied
      input/output embeddings,
    * ``qwen2`` — hybrid: one global layer, then one sliding (``use_sliding_window`` with
      ``max_window_layers=1``).
    """
    import torch
    from transformers import (
        AutoTokenizer,
        Gemma3ForCausalLM,
        Gemma3TextConfig,
        MistralConfig,
        MistralForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    ids = tok.convert_tokens_to_ids
    common = dict(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=512, bos_token_id=ids("<s>"), eos_token_id=ids("</s>"), pad_token_id=ids("<pad>"),
        initializer_range=0.3, tie_word_embeddings=True, sliding_window=SLIDING_WINDOW,
    )  # fmt: skip
    recipes = {
        "mistral": (MistralForCausalLM, MistralConfig(num_hidden_layers=2, **common)),
        "gemma3": (
            Gemma3ForCausalLM,
            Gemma3TextConfig(num_hidden_layers=3, head_dim=16,
                             layer_types=["sliding_attention", "sliding_attention", "full_attention"],
                             **{**common, "tie_word_embeddings": False}),
        ),  # fmt: skip  (tied, Gemma's sqrt(hidden)-scaled embeddings make greedy repeat the last token)
        "qwen2": (Qwen2ForCausalLM, Qwen2Config(num_hidden_layers=2, use_sliding_window=True, max_window_layers=1, **common)),
    }
    out = {}
    for name, (cls, cfg) in recipes.items():
        out[name] = Path(root) / f"tiny-{name}-sliding{SLIDING_WINDOW}"
        torch.manual_seed(0)
        cls(cfg).eval().save_pretrained(out[name])
        tok.save_pretrained(out[name])
    return out
