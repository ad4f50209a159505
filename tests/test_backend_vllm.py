"""vLLM adapter against the faithful fake engine (fakes.vllm_fake); real GPU tests
are marked ``gpu``."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from e3bench.core import registry
from e3bench.core.api import GenParams
from e3bench.core.errors import E3Error
from e3bench.backends.models import resolve

REAL = "vllm" not in sys.modules and importlib.util.find_spec("vllm") is not None


@pytest.fixture
def fake(monkeypatch):
    if REAL:
        pytest.skip("a real vllm is installed; see the gpu tests")
    from fakes import vllm_fake
    from e3bench.backends.vllm import VllmBackend

    vllm_fake.install()
    monkeypatch.setattr(VllmBackend, "_cuda_available", staticmethod(lambda: True))
    yield VllmBackend
    vllm_fake.uninstall()


def test_missing_extra_names_the_pip_command():
    if REAL or "vllm" in sys.modules:
        pytest.skip("vllm importable")
    with pytest.raises(E3Error) as ei:
        registry.backends.get("vllm")
    assert "pip install 'e3bench[vllm]'" in ei.value.fix


def test_cpu_device_is_refused_with_the_reason(tiny_models):
    from e3bench.backends.vllm import VllmBackend

    assert VllmBackend.capabilities.check(device="cpu", precision="fp16") == (
        "device 'cpu' not supported (supported: cuda)"
    )
    with pytest.raises(E3Error, match="device 'cpu' not supported"):
        VllmBackend().load(resolve(str(tiny_models["decoder"])), "fp16", "cpu")


def test_no_gpu_is_a_clear_error(tiny_models, monkeypatch):
    from e3bench.backends.vllm import VllmBackend

    monkeypatch.setattr(VllmBackend, "_cuda_available", staticmethod(lambda: False))
    with pytest.raises(E3Error, match="needs an NVIDIA GPU"):
        VllmBackend().load(resolve(str(tiny_models["decoder"])), "fp16", "cuda")


def test_streaming_steps_and_batch(fake, tiny_models):
    b = fake()
    b.load(resolve(str(tiny_models["decoder"])), "bf16", "cuda")
    steps: list[int] = []
    prompts = [b.encode("the quick brown fox"), b.encode("hi")]
    gens = b.generate(prompts, GenParams(max_new_tokens=5), on_token=steps.append)
    assert steps == [1, 2, 3, 4, 5] and [len(g.token_ids) for g in gens] == [5, 5]
    assert b.engine.steps == 5  # one engine step per token: prefill emits the first
    assert b.engine.batch_sizes == [2] * 5  # both requests in every forward
    b.close()
    assert b.engine is None


def test_loglikelihood_matches_pytorch(fake, tiny_models):
    from e3bench.backends.pytorch import PyTorchBackend

    reqs = [("the quick brown fox", " jumps"), ("", "energy"), ("a b ", "c")]
    b = fake()
    b.load(resolve(str(tiny_models["decoder"])), "fp16", "cuda")
    ref = PyTorchBackend()
    ref.load(resolve(str(tiny_models["decoder"])), "fp32", "cpu")
    for got, want in zip(b.loglikelihood(reqs), ref.loglikelihood(reqs), strict=True):
        assert got.n_tokens == want.n_tokens
        assert got.logprob == pytest.approx(want.logprob, abs=1e-4)
        assert got.is_greedy == want.is_greedy


def _quantized_copy(src, tmp_path, qcfg):
    import shutil

    dst = tmp_path / "q"
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg["quantization_config"] = qcfg
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def test_prequantized_checkpoints_map_to_precisions(fake, tiny_models, tmp_path):
    awq = _quantized_copy(tiny_models["decoder"], tmp_path, {"quant_method": "awq", "bits": 4, "group_size": 128})
    b = fake()
    info = b.load(resolve(str(awq)), "int4", "cuda")
    assert any("awq (4-bit weights)" in n for n in info.notes)
    b.close()
    with pytest.raises(E3Error, match="4-bit awq checkpoint, not int8"):
        fake().load(resolve(str(awq)), "int8", "cuda")
    with pytest.raises(E3Error, match="cannot run as fp16"):
        fake().load(resolve(str(awq)), "fp16", "cuda")


def test_w8a8_compressed_tensors_bits_are_read(tmp_path):
    from e3bench.backends.vllm import _checkpoint_quant

    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "quantization_config": {
                    "quant_method": "compressed-tensors",
                    "config_groups": {"group_0": {"weights": {"num_bits": 8}, "input_activations": {"num_bits": 8}}},
                }
            }
        )
    )
    assert _checkpoint_quant(tmp_path) == ("compressed-tensors", 8)


def test_gguf_is_refused(fake, bundled_gguf):
    with pytest.raises(E3Error, match="GGUF"):
        fake().load(resolve(str(bundled_gguf)), "fp16", "cuda")


def test_unquantized_int8_without_llmcompressor(fake, tiny_models):
    if importlib.util.find_spec("llmcompressor") is not None:
        pytest.skip("llm-compressor installed")
    with pytest.raises(E3Error, match="llm-compressor"):
        fake().load(resolve(str(tiny_models["decoder"])), "int8", "cuda")


@pytest.mark.gpu
def test_real_vllm_on_gpu(tiny_models):
    if not REAL:
        pytest.skip("vllm not installed: pip install 'e3bench[vllm]'")
    from e3bench.backends.vllm import VllmBackend

    b = VllmBackend(VllmBackend.Options(gpu_memory_utilization=0.3, max_model_len=512))
    b.load(resolve(str(tiny_models["decoder"])), "fp16", "cuda")
    steps: list[int] = []
    gens = b.generate([b.encode("hello world")] * 2, GenParams(max_new_tokens=8), on_token=steps.append)
    assert steps == list(range(1, 9)) and all(len(g.token_ids) == 8 for g in gens)
    assert b.loglikelihood([("hello", " world")])[0].n_tokens >= 1
    b.close()


# ----------------------------------------------------------- contract rules through the fake
def _eos_after(monkeypatch, n: int) -> None:
    """Make the fake engine's model pick EOS as its (n+1)-th token when EOS is allowed."""
    from fakes import vllm_fake

    real = vllm_fake.LLMEngine._choose

    def choose(self, r, logits):
        allowed = not r.sp.ignore_eos and len(r.out) >= r.sp.min_tokens
        return self.tokenizer.eos_token_id if allowed and len(r.out) == n else real(self, r, logits)

    monkeypatch.setattr(vllm_fake.LLMEngine, "_choose", choose)


def test_eos_is_not_in_token_ids(fake, tiny_models, monkeypatch):
    """vLLM returns the EOS among token_ids; the contract (and every other backend) does not."""
    _eos_after(monkeypatch, 2)
    b = fake()
    b.load(resolve(str(tiny_models["decoder"])), "fp16", "cuda")
    (g,) = b.generate([b.encode("the quick brown fox")], GenParams(max_new_tokens=6, ignore_eos=False))
    assert g.finish_reason == "eos" and len(g.token_ids) == 2
    assert b.tokenizer.eos_token_id not in g.token_ids
    b.close()


def test_stop_strings_report_stop_and_wait_for_min_tokens(fake, tiny_models):
    b = fake()
    b.load(resolve(str(tiny_models["decoder"])), "fp16", "cuda")
    ids = b.encode("the quick brown fox")
    free = b.generate([ids], GenParams(max_new_tokens=8, ignore_eos=True))[0]
    stop = b.decode(free.token_ids[1:3]).strip() or b.decode(free.token_ids[1:3])
    assert stop, "the fixture's output must give a stop string"
    early = free.text.index(stop)
    (g,) = b.generate([ids], GenParams(max_new_tokens=8, ignore_eos=False, stop=(stop,)))
    assert g.finish_reason == "stop" and g.text == free.text[:early]  # stop_reason is the string
    assert len(g.token_ids) < 8
    # before min_tokens a stop string does not end the sequence (vLLM's StopChecker)
    (late,) = b.generate([ids], GenParams(max_new_tokens=8, min_new_tokens=6, ignore_eos=False, stop=(stop,)))
    assert len(late.token_ids) >= 6 and late.finish_reason == "stop"
    b.close()


def test_truncation_is_lm_evals_and_fits_the_engine(fake, tiny_models):
    """Contexts longer than the engine holds are cut by lm-eval's rule with max_length =
    max_model_len - 2 (prompt + the one generated token must fit), as the PyTorch scorer cuts."""
    from e3bench.backends.pytorch import PyTorchBackend

    b = fake(fake.Options(max_model_len=24))
    b.load(resolve(str(tiny_models["decoder"])), "fp16", "cuda")
    assert b.max_length == 22
    long_ctx = "the quick brown fox jumps over the lazy dog " * 4
    reqs = [(long_ctx, " energy is measured in joules"), (long_ctx, " latency")]
    ref = PyTorchBackend()
    ref.load(resolve(str(tiny_models["decoder"])), "fp32", "cpu")
    ref.max_length = 22
    assert len(ref.encode(long_ctx)) > 22
    for got, want in zip(b.loglikelihood(reqs), ref.loglikelihood(reqs), strict=True):
        assert got.n_tokens == want.n_tokens and got.logprob == pytest.approx(want.logprob, abs=1e-4)
    with pytest.raises(E3Error, match="longer than the model's maximum length 22"):
        b.loglikelihood([("a", " " + "fox " * 30)])
    # rolling windows (perplexity) fit too
    (roll,) = b.loglikelihood_rolling([long_ctx])
    (want,) = ref.loglikelihood_rolling([long_ctx])
    assert roll.n_tokens == want.n_tokens and roll.logprob == pytest.approx(want.logprob, abs=1e-3)
    ref.close()
    b.close()


def test_peak_memory_is_labelled_a_reservation(fake, tiny_models, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: type("P", (), {"total_memory": 1000})())
    b = fake(fake.Options(gpu_memory_utilization=0.5))
    assert b.peak_memory() == (500, "reserved: gpu_memory_utilization (0.5) × total device memory")


def test_parameter_count_from_safetensors_headers(tiny_models):
    import torch
    from transformers import AutoModelForCausalLM

    from e3bench.backends.vllm import _param_counts

    model = AutoModelForCausalLM.from_pretrained(tiny_models["decoder"], dtype=torch.float32)
    n = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    # bytes a decode step reads: the tied embedding (stored once) as the LM head + one looked-up row
    assert _param_counts(tiny_models["decoder"]) == (n, 4 * n + 4 * model.config.hidden_size)


# ------------------------------------------------------- the fake behaves like vLLM V1's engine
def _engine(tiny_models, **kw):
    from fakes import vllm_fake

    return vllm_fake.LLMEngine(vllm_fake.EngineArgs(model=str(tiny_models["decoder"]), **kw))


def _scripted(monkeypatch, engine, script: list[int]) -> None:
    """The model 'chooses' ``script`` (one list for every request): stopping logic under test."""
    monkeypatch.setattr(engine, "_choose", lambda r, logits: script[len(r.out)])


def _run_engine(engine, prompts, sp):
    for i, p in enumerate(prompts):
        engine.add_request(f"r{i}", {"prompt_token_ids": p}, sp)
    last = {}
    while engine.has_unfinished_requests():
        for o in engine.step():
            last[o.request_id] = o
    return [last[f"r{i}"].outputs[0] for i in range(len(prompts))]


def test_fake_engine_batches_up_to_max_num_seqs(tiny_models):
    """Each step is one forward over the unfinished requests, oldest first, at most
    max_num_seqs of them; a waiting request joins when a slot frees (continuous batching)."""
    from fakes.vllm_fake import SamplingParams

    eng = _engine(tiny_models, max_num_seqs=2)
    tok = eng.tokenizer
    prompts = [tok.encode("the quick brown fox"), tok.encode("hi"), tok.encode("energy is")]
    sp = [SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True) for n in (2, 4, 3)]
    for i, (p, s) in enumerate(zip(prompts, sp, strict=True)):
        eng.add_request(f"r{i}", {"prompt_token_ids": p}, s)
    seen = []
    while eng.has_unfinished_requests():
        seen.append(sorted(o.request_id for o in eng.step()))
    # r0 ends after 2 tokens, r2 starts in step 3 and needs 3 steps; r1 ends in step 4
    assert seen == [["r0", "r1"], ["r0", "r1"], ["r1", "r2"], ["r1", "r2"], ["r2"]]
    assert eng.batch_sizes == [2, 2, 2, 2, 1]


def test_fake_engine_batch_gives_each_rows_own_tokens(varied_decoder):
    """Left padding and masks: a request batched with a longer one gets the tokens it gets alone."""
    from fakes.vllm_fake import SamplingParams

    models = {"decoder": varied_decoder}
    eng = _engine(models)
    tok = eng.tokenizer
    a, c = tok.encode("energy is measured in joules"), tok.encode("latency")
    sp = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
    (alone,) = _run_engine(eng, [c], sp)
    both = _run_engine(_engine(models), [a, c], sp)
    assert len(set(alone.token_ids)) > 2, "degenerate model: the check would prove little"
    assert both[1].token_ids == alone.token_ids and both[0].token_ids != alone.token_ids


def test_fake_engine_stop_reason_and_finish_order(tiny_models, monkeypatch):
    """V1: max_tokens is checked before EOS (an EOS on the last allowed token is "length");
    EOS → "stop" with stop_reason None and the EOS kept in token_ids; a stop string → "stop"
    with stop_reason the string, also on the last allowed token."""
    from fakes.vllm_fake import SamplingParams

    eng = _engine(tiny_models)
    tok = eng.tokenizer
    eos = tok.eos_token_id
    words = tok.encode(" fox dog fox watts", add_special_tokens=False)
    prompt = [tok.encode("the quick")]
    _scripted(monkeypatch, eng, [*words[:2], eos])
    (c,) = _run_engine(eng, prompt, SamplingParams(max_tokens=3, temperature=0.0))
    assert (c.finish_reason, c.stop_reason, c.token_ids) == ("length", None, [*words[:2], eos])
    (c,) = _run_engine(eng, prompt, SamplingParams(max_tokens=5, temperature=0.0))
    assert (c.finish_reason, c.stop_reason, c.token_ids) == ("stop", None, [*words[:2], eos])
    assert c.text == tok.decode(words[:2], skip_special_tokens=True)
    _scripted(monkeypatch, eng, words)
    (c,) = _run_engine(eng, prompt, SamplingParams(max_tokens=4, temperature=0.0, stop=["watts"]))
    assert (c.finish_reason, c.stop_reason, c.token_ids) == ("stop", "watts", words)
    assert c.text == tok.decode(words[:3]) + " "


def test_fake_engine_stop_strings_ignore_text_before_min_tokens(tiny_models, monkeypatch):
    """vLLM (PR 22014, tests/detokenizer/test_min_tokens.py): a stop string in the text of the
    first min_tokens tokens never ends the request, not even later; one produced after does."""
    from fakes.vllm_fake import SamplingParams

    eng = _engine(tiny_models)
    tok = eng.tokenizer
    words = tok.encode(" fox dog fox watts dog", add_special_tokens=False)
    _scripted(monkeypatch, eng, words)
    prompt = [tok.encode("the quick")]
    (free,) = _run_engine(eng, prompt, SamplingParams(max_tokens=5, temperature=0.0, stop=["fox"]))
    assert (free.stop_reason, free.text, len(free.token_ids)) == ("fox", " ", 1)
    (late,) = _run_engine(eng, prompt, SamplingParams(max_tokens=5, temperature=0.0, stop=["fox"], min_tokens=1))
    assert (late.stop_reason, late.token_ids) == ("fox", words[:3])
    assert late.text == tok.decode(words[:2]) + " "
    (never,) = _run_engine(eng, prompt, SamplingParams(max_tokens=5, temperature=0.0, stop=["fox"], min_tokens=3))
    assert (never.finish_reason, never.stop_reason, never.token_ids) == ("length", None, words)
