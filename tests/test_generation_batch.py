"""Batched greedy generation (left padding, per-sequence stop strings and EOS) gives the text that
one prompt at a time gives: on a tiny Llama built locally (weights varied, so a wrong mask,
position id or cache shows up as other tokens) and on the bundled SmolLM2-135M over GSM8K."""

from __future__ import annotations

import pytest

from e3bench.core.api import GenParams
from e3bench.evals.tasks.generative import generate_texts, generation_batch

PROMPTS = [
    "energy is measured in joules",
    "latency",
    "the quick brown fox jumps over the lazy dog and keeps running far away",
    "a b",
    "tokens per second per watt on a small language model",
]


@pytest.fixture(scope="module")
def varied(varied_decoder):
    from e3bench.backends.models import resolve
    from e3bench.backends.pytorch import PyTorchBackend

    b = PyTorchBackend()
    b.load(resolve(str(varied_decoder)), "fp32", "cpu")
    yield b
    b.close()


def _one_at_a_time(backend, prompts, **kw) -> list[str]:
    return [generate_texts(backend, [p], batch_size=1, **kw)[0][0] for p in prompts]


def _early_stop(backend, prompt: str, max_new: int) -> tuple[str, str]:
    """A stop string that ends ``prompt``'s generation after a few tokens (the text of its 3rd-4th
    generated tokens), and the text without stop strings."""
    free = generate_texts(backend, [prompt], max_new_tokens=max_new, stop=(), batch_size=1)[0][0]
    ids = backend.encode_context(prompt, max_new_tokens=max_new)[0]
    row = backend.generate([ids], GenParams(max_new_tokens=max_new))[0].token_ids
    stop = backend.decode(row[2:4]).strip()
    assert stop and stop in free, (stop, free)
    return stop, free


def test_batched_text_equals_one_prompt_at_a_time_with_an_early_stop_string(varied):
    max_new = 12
    stop, free = _early_stop(varied, PROMPTS[2], max_new)
    stops = (stop, "</s>", "<|im_end|>")
    want = _one_at_a_time(varied, PROMPTS, max_new_tokens=max_new, stop=stops)
    assert len(want[2]) < len(free) and want[2] == free.split(stop)[0]  # that prompt stopped early
    assert any(len(varied.encode(w)) >= max_new - 2 for w in want)  # and another ran on to the end
    for bs in (2, 3, 5, 16):
        got, _ = generate_texts(varied, PROMPTS, max_new_tokens=max_new, stop=stops, batch_size=bs)
        assert got == want, bs


def test_finished_rows_leave_the_batch_and_texts_equal_transformers_generate(varied):
    """The greedy loop (backends.greedy) drops a row from the batch once it stopped: later decode
    steps run fewer rows (transformers' generate ran every row to the batch's last step); the
    texts equal generate's, batched and one at a time."""
    max_new = 12
    stop, _ = _early_stop(varied, PROMPTS[2], max_new)
    stops = (stop, "</s>", "<|im_end|>")
    rows: list[int] = []
    handle = varied.model.model.register_forward_pre_hook(
        lambda _m, args, kw: rows.append(kw["input_ids"].shape[0]), with_kwargs=True)
    try:
        got, _ = generate_texts(varied, PROMPTS, max_new_tokens=max_new, stop=stops, batch_size=5)
    finally:
        handle.remove()
    assert rows[0] == 5 and rows[-1] < 5 and rows == sorted(rows, reverse=True), rows
    assert len(rows) == max_new  # prefill + one pass per further token of the longest row
    varied.shrinking_batches = False
    try:
        assert generate_texts(varied, PROMPTS, max_new_tokens=max_new, stop=stops, batch_size=5)[0] == got
    finally:
        del varied.shrinking_batches
    assert _one_at_a_time(varied, PROMPTS, max_new_tokens=max_new, stop=stops) == got


def test_batched_rows_stop_at_eos_alone(varied):
    """A row that emits EOS stops contributing; the batch goes on for the others."""
    max_new = 10
    ids = varied.encode_context(PROMPTS[0], max_new_tokens=max_new)[0]
    row = varied.generate([ids], GenParams(max_new_tokens=max_new))[0].token_ids
    eos_id = row[3]
    old = (varied.tokenizer.eos_token, varied.model.generation_config.eos_token_id)
    varied.tokenizer.eos_token = varied.tokenizer.convert_ids_to_tokens(eos_id)
    varied.model.generation_config.eos_token_id = eos_id
    try:
        want = _one_at_a_time(varied, PROMPTS, max_new_tokens=max_new, stop=())
        assert want[0] == varied.decode(row[:3])  # cut before the EOS
        got, _ = generate_texts(varied, PROMPTS, max_new_tokens=max_new, stop=(), batch_size=5)
        assert got == want
    finally:
        varied.tokenizer.eos_token = old[0]
        varied.model.generation_config.eos_token_id = old[1]


def test_generation_batch_follows_the_eval_batch_setting(varied):
    from e3bench.backends.base import default_batch_size

    assert generation_batch(varied, 3) == 3  # the task's own
    for setting, want in ((None, default_batch_size("cpu")), ("auto", default_batch_size("cpu")), (4, 4)):
        varied.score_batch_size = setting
        assert generation_batch(varied) == want
    varied.score_batch_size = None


def test_batch_of_one_keeps_input_order(varied):
    calls: list[list[list[int]]] = []
    real = varied.generate

    def spy(prompts, params, on_token=None):
        calls.append([list(p) for p in prompts])
        return real(prompts, params, on_token)

    varied.generate = spy
    try:
        generate_texts(varied, PROMPTS[:3], max_new_tokens=2, stop=(), batch_size=1)
        generate_texts(varied, PROMPTS[:3], max_new_tokens=2, stop=(), batch_size=3)
    finally:
        del varied.generate
    enc = [varied.encode_context(p, max_new_tokens=2)[0] for p in PROMPTS[:3]]
    assert calls[:3] == [[e] for e in enc]
    assert calls[3] == sorted(enc, key=len, reverse=True)  # one batch, longest first


@pytest.mark.slow
def test_bundled_model_gsm8k_batched_equals_one_at_a_time(bundled_gguf):
    """SmolLM2-135M, GSM8K prompts of different lengths, lm-eval's stop strings plus a newline
    (which the model writes early in some answers)."""
    from e3bench.backends.models import resolve
    from e3bench.backends.pytorch import PyTorchBackend
    from e3bench.core.errors import E3Error
    from e3bench.evals.data import load_dataset_rows
    from e3bench.evals.tasks.generative import gsm8k_prompt

    try:
        rows = load_dataset_rows("gsm8k", "test")[:6]
    except E3Error as exc:
        pytest.skip(f"no local GSM8K data: {exc.one_line()}")
    b = PyTorchBackend()
    b.load(resolve("smollm2-135m"), "fp32", "cpu")
    try:
        prompts = [gsm8k_prompt(r["question"]) for r in rows]
        kw = dict(max_new_tokens=24, stop=("Question:", "</s>", "<|im_end|>", "\n\n"))
        want = _one_at_a_time(b, prompts, **kw)
        got, _ = generate_texts(b, prompts, batch_size=6, **kw)
        assert got == want
        assert len({len(b.encode(p)) for p in prompts}) > 3  # the batch was padded
    finally:
        b.close()


def test_stop_string_across_the_prompt_end_does_not_stop_one_prompt_alone(varied):
    """A stop string is looked for in the generated text only (as lm-eval's HF model and the
    batched loops do): transformers' ``stop_strings`` matched it across the prompt's end too, so a
    prompt run alone stopped after one token (uncut, "length") where the batch ran on."""
    max_new = 10
    free = generate_texts(varied, [PROMPTS[1]], max_new_tokens=max_new, stop=(), batch_size=1)[0][0]
    stop = PROMPTS[1][-1] + free[:2]  # the prompt's last character and the answer's first two
    assert stop not in free
    want = _one_at_a_time(varied, PROMPTS, max_new_tokens=max_new, stop=(stop,))
    assert want[1] == free
    assert generate_texts(varied, PROMPTS, max_new_tokens=max_new, stop=(stop,), batch_size=5)[0] == want
    params = GenParams(max_new_tokens=max_new, stop=(stop,), do_sample=True, temperature=1e-4)  # generate's path
    ids = varied.encode_context(PROMPTS[1], max_new_tokens=max_new)[0]
    assert varied.generate([ids], params)[0].text == free


@pytest.mark.parametrize("kind", ["mamba", "lfm2"])
def test_a_stateful_model_keeps_generate(varied_decoder, tmp_path, kind):
    """Mamba keeps its state in recurrent cache layers and applies the whole attention mask to a
    one-token step; LFM2 mixes conv layers (a cache layer without ``batch_select_indices``) into
    its attention: the greedy loop gave Mamba garbage (tokens repeated) and crashed on LFM2
    (AttributeError). Such models stay on ``generate``."""
    import torch
    import transformers as T

    from e3bench.backends.models import resolve
    from e3bench.backends.pytorch import PyTorchBackend

    tok = T.AutoTokenizer.from_pretrained(varied_decoder)
    common = dict(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, initializer_range=0.3,
                  eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id)  # fmt: skip
    torch.manual_seed(0)
    if kind == "mamba":
        model = T.MambaForCausalLM(T.MambaConfig(state_size=8, **common))
    else:
        model = T.Lfm2ForCausalLM(T.Lfm2Config(intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
                                               layer_types=["conv", "full_attention"], **common))  # fmt: skip
    model.eval().save_pretrained(tmp_path / f"tiny-{kind}")
    tok.save_pretrained(tmp_path / f"tiny-{kind}")
    b = PyTorchBackend()
    b.load(resolve(str(tmp_path / f"tiny-{kind}")), "fp32", "cpu")
    try:
        b.shrinking_batches = False  # generate's texts; a stop string that ends one row early
        free = generate_texts(b, PROMPTS, max_new_tokens=8, stop=(), batch_size=5)[0]
        stop = next(f[2:4] for f in free if len(f) > 4 and f[2:4].strip())
        want = generate_texts(b, PROMPTS, max_new_tokens=8, stop=(stop,), batch_size=5)[0]
        del b.shrinking_batches
        assert generate_texts(b, PROMPTS, max_new_tokens=8, stop=(stop,), batch_size=5)[0] == want
        assert generate_texts(b, PROMPTS, max_new_tokens=8, stop=(), batch_size=5)[0] == free
    finally:
        b.close()
