"""Generation tasks feed the model exactly what lm-eval's ``generate_until`` feeds it.

* BOS: a tokenizer that adds BOS by default (Llama, Gemma, Mistral) gets it on generation
  prompts too, as lm-eval's HF model (and e3bench's own scoring path) gives it.
* Length: a prompt longer than the context is cut on the left to ``max_length -
  max_new_tokens`` tokens, as lm-eval does, instead of crashing; the record counts such items.

lm-eval's ``HFLM.generate_until`` runs on the same model directory with its ``_model_generate``
replaced by a recorder, so the token ids it would generate from are compared with those that
reach ``model.generate`` through e3bench's tasks. Models and tokenizers are built locally.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from e3bench.core.api import GenParams
from e3bench.core.errors import E3Error

torch = pytest.importorskip("torch")

GSM8K_PROMPT = "Question: what is two plus two?\nAnswer:"


def _bos_tokenizer_dir(src: Path, dst: Path) -> Path:
    """A copy of model dir ``src`` whose tokenizer adds BOS by default (a TemplateProcessing
    post-processor, as Llama's tokenizer.json has), with weights drawn wide enough (std 1) that
    greedy continuations depend on the prompt (the default init repeats one token)."""
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if not dst.exists():
        shutil.copytree(src, dst)
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(dst, initializer_range=1.0)).save_pretrained(dst)
        tok = AutoTokenizer.from_pretrained(dst)
        bos = tok.bos_token_id
        tok.backend_tokenizer.post_processor = TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
        )
        tok.save_pretrained(dst)
    return dst


def _gpt2_64_dir(tokenizer_dir: Path, dst: Path) -> Path:
    """A GPT-2-style decoder with 64 positions (absolute position embeddings: an input longer
    than 64 tokens is an IndexError) and the tiny tokenizer."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    if not (dst / "config.json").exists():
        tok = AutoTokenizer.from_pretrained(tokenizer_dir)
        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config(
            vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=1, n_head=2,
            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        ))  # fmt: skip
        model.save_pretrained(dst)
        tok.save_pretrained(dst)
    return dst


@pytest.fixture(scope="module")
def bos_dir(tiny_models, tmp_path_factory) -> Path:
    return _bos_tokenizer_dir(tiny_models["decoder"], tmp_path_factory.mktemp("bos") / "tiny-llama-bos")


@pytest.fixture(scope="module")
def short_dir(tiny_models, tmp_path_factory) -> Path:
    return _gpt2_64_dir(tiny_models["decoder"], tmp_path_factory.mktemp("short") / "tiny-gpt2-64")


def _pytorch(model_dir: Path):
    from e3bench.backends.models import resolve
    from e3bench.backends.pytorch import PyTorchBackend

    b = PyTorchBackend()
    b.load(resolve(str(model_dir)), "fp32", "cpu")
    return b


def _recording(backend) -> list[list[int]]:
    """Record the prompt ids of every batch a PyTorch backend builds for the model (``_batch``:
    the input of both transformers' ``generate`` and the batched greedy loop)."""
    seen: list[list[int]] = []
    real = backend._batch

    def spy(prompts, side):
        seen.extend(list(p) for p in prompts)
        return real(prompts, side)

    backend._batch = spy
    return seen


def _lm_eval_contexts(model_dir: Path, prompt: str, max_gen_toks: int) -> list[list[int]]:
    """The token ids lm-eval's HF model generates from for ``prompt``."""
    pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install 'e3bench[lmeval]')")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=str(model_dir), device="cpu", dtype="float32", batch_size=1)
    seen: list[list[int]] = []

    def record(context, max_length, stop, **kwargs):
        seen.extend(context.tolist())
        return torch.cat([context, context[:, -1:]], dim=1)  # one "generated" token

    lm._model_generate = record
    req = Instance("generate_until", {}, (prompt, {"until": ["\n\n"], "max_gen_toks": max_gen_toks}), 0)
    lm.generate_until([req], disable_tqdm=True)
    return seen


# ------------------------------------------------------------------------- 11: BOS
def test_gsm8k_prompt_gets_the_bos_the_tokenizer_adds_like_lm_eval(bos_dir):
    from e3bench.evals.tasks.generative import generate_texts

    b = _pytorch(bos_dir)
    bos = b.tokenizer.bos_token_id
    seen = _recording(b)
    generate_texts(b, [GSM8K_PROMPT], max_new_tokens=4, stop=["Question:"])
    want = _lm_eval_contexts(bos_dir, GSM8K_PROMPT, max_gen_toks=4)
    assert want[0][0] == bos  # lm-eval's input starts with BOS on this tokenizer
    assert seen == want
    # the scoring path (lm-eval's loglikelihood tokenization) starts with the same BOS
    from e3bench.backends.tokenization import encode_pair

    ctx, _ = encode_pair(b.tokenizer, GSM8K_PROMPT, " 4")
    assert ctx == seen[0]
    # speed-run prompts (encode) stay free of special tokens: exact token counts
    assert b.encode(GSM8K_PROMPT) == seen[0][1:]


def test_a_text_that_starts_with_bos_gets_no_second_one(bos_dir):
    b = _pytorch(bos_dir)
    ids, cut = b.encode_context("<s>" + GSM8K_PROMPT, max_new_tokens=4)
    assert not cut
    assert ids == _lm_eval_contexts(bos_dir, "<s>" + GSM8K_PROMPT, max_gen_toks=4)[0]
    assert ids.count(b.tokenizer.bos_token_id) == 1


def test_without_bos_in_the_tokenizer_nothing_is_added(tiny_models):
    b = _pytorch(tiny_models["decoder"])  # this tokenizer adds no special tokens
    ids, _ = b.encode_context(GSM8K_PROMPT, max_new_tokens=4)
    assert ids == b.encode(GSM8K_PROMPT) == _lm_eval_contexts(tiny_models["decoder"], GSM8K_PROMPT, 4)[0]


def test_onnxrt_generation_contexts_get_the_bos_too(bos_dir, tmp_path):
    pytest.importorskip("onnxruntime")
    from e3bench.backends.models import resolve
    from e3bench.backends.onnxrt import OnnxRuntimeBackend

    b = OnnxRuntimeBackend(cache_dir=str(tmp_path))
    b.load(resolve(str(bos_dir)), "fp32", "cpu")
    ids, cut = b.encode_context(GSM8K_PROMPT, max_new_tokens=4)
    assert not cut and ids == _lm_eval_contexts(bos_dir, GSM8K_PROMPT, max_gen_toks=4)[0]
    b.close()


def test_llamacpp_adapter_uses_the_gguf_add_bos_flag():
    """llama.cpp's tokenizer adapter adds BOS exactly when the GGUF says so (``add_bos``)."""
    from e3bench.backends.tokenization import generation_context

    class Tok:  # the slice of llama.cpp's adapter generation_context uses
        def __init__(self, add_bos):
            self.add_bos = add_bos

        def encode(self, text, add_special_tokens=True):
            return ([1] if add_special_tokens and self.add_bos else []) + [ord(c) for c in text]

    assert generation_context(Tok(True), "ab", max_length=8, max_new_tokens=2) == ([1, 97, 98], False)
    assert generation_context(Tok(False), "ab", max_length=8, max_new_tokens=2) == ([97, 98], False)


# --------------------------------------------------------------- 12: longer than the context
def test_long_prompt_is_left_truncated_like_lm_eval_not_an_index_error(short_dir, tmp_path):
    from e3bench.evals.tasks import get_task

    b = _pytorch(short_dir)
    assert b.max_length == 64
    prompt = " ".join(["energy is measured in joules"] * 30)
    n = len(b.tokenizer.encode(prompt))
    assert n >= 130
    data = tmp_path / "long.jsonl"
    data.write_text(json.dumps({"prompt": prompt, "answer": "x"}) + "\n" + json.dumps({"prompt": "short", "answer": "y"}) + "\n")
    seen = _recording(b)
    score = get_task("jsonl_gen", path=str(data), max_new_tokens=8).evaluate(b, limit=None, seed=0)
    assert score.truncated_items == 1
    assert [s["truncated"] for s in score.samples] == [True, False]
    want = _lm_eval_contexts(short_dir, prompt, max_gen_toks=8)
    assert len(want[0]) == 64 - 8
    assert seen[0] == want[0]


def test_generating_more_than_the_context_is_one_clear_error(short_dir):
    b = _pytorch(short_dir)
    with pytest.raises(E3Error, match="leaves no room for the prompt") as info:
        b.encode_context("hello", max_new_tokens=64)
    assert "max_new_tokens" in info.value.fix


def test_truncated_count_reaches_the_task_record(short_dir, tmp_path):
    from e3bench.config.run import build_config
    from e3bench.energy.window import MeteredWindow
    from e3bench.evals.engine import run_tasks

    b = _pytorch(short_dir)
    data = tmp_path / "long.jsonl"
    data.write_text(json.dumps({"prompt": "joules " * 100, "answer": "x"}) + "\n")
    cfg = build_config(overrides=dict(model=str(short_dir), meter="none", idle_seconds=0, output_dir=str(tmp_path),
                                      tasks=f"jsonl_gen:path={data},max_new_tokens=8"))  # fmt: skip
    window = MeteredWindow.create("none")
    (res,) = run_tasks(b, window, cfg, run_id="r1")
    assert res.truncated_items == 1 and res.n_items == 1


def test_vllm_generates_within_max_model_len():
    """vLLM scores with ``max_model_len - 2`` positions but generates within the whole
    ``max_model_len`` (lm-eval's vLLM model): contexts keep ``max_model_len - max_new_tokens``."""
    from e3bench.backends.vllm import VllmBackend

    b = VllmBackend()

    class Tok:
        bos_token = None

        def encode(self, text):
            return list(range(len(text)))

    b.tokenizer, b.architecture = Tok(), "decoder-only"
    b.max_model_len, b.max_length = 32, 30
    ids, cut = b.encode_context("x" * 40, max_new_tokens=8)
    assert cut and ids == list(range(40))[-24:]


def test_seq2seq_contexts_keep_the_tokenizer_defaults(tiny_models):
    """An encoder-decoder gets the tokenizer's defaults (T5 appends EOS) and is cut to
    ``max_length`` (lm-eval's seq2seq rule: generated tokens do not share the encoder)."""
    from e3bench.backends.tokenization import generation_context

    class Tok:
        bos_token = "<s>"

        def encode(self, text, add_special_tokens=True):
            return [ord(c) for c in text] + ([2] if add_special_tokens else [])

    ids, cut = generation_context(Tok(), "<sabc", max_length=4, max_new_tokens=100, architecture="encoder-decoder")
    assert (ids, cut) == ([97, 98, 99, 2], True)
    b = _pytorch(tiny_models["decoder"])
    out = b.generate([b.encode_context("hello", max_new_tokens=3)[0]], GenParams(max_new_tokens=3))
    assert len(out[0].token_ids) == 3


def test_gsm8k_generations_equal_lm_evals_on_a_bos_tokenizer(bos_dir):
    """The whole generation path (inputs, greedy decoding, stop strings, cut) gives lm-eval's
    ``generate_until`` text for the first GSM8K items."""
    pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install 'e3bench[lmeval]')")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from e3bench.evals.tasks import get_task

    task = get_task("gsm8k", max_new_tokens=16)
    try:
        score = task.evaluate(_pytorch(bos_dir), limit=4, seed=0)
    except E3Error as exc:
        pytest.skip(f"no local GSM8K data: {exc.one_line()}")
    lm = HFLM(pretrained=str(bos_dir), device="cpu", dtype="float32", batch_size=1)
    kwargs = {"until": list(task.stop), "max_gen_toks": 16, "do_sample": False, "temperature": 0.0}
    reqs = [Instance("generate_until", {}, (s["prompt"], kwargs), i) for i, s in enumerate(score.samples)]
    want = lm.generate_until(reqs, disable_tqdm=True)
    assert [s["generation"] for s in score.samples] == want
