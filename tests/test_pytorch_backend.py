"""The PyTorch backend on tiny locally-built models of all three architectures."""

import pytest

from e3bench.core.api import GenParams
from e3bench.backends.pytorch import PyTorchBackend
from e3bench.core.errors import E3Error
from e3bench.backends.models import resolve


@pytest.fixture(scope="module")
def decoder(tiny_models):
    b = PyTorchBackend()
    info = b.load(resolve(str(tiny_models["decoder"])), "fp32", "cpu")
    yield b, info
    b.close()


def test_load_info(decoder):
    _, info = decoder
    assert info.architecture == "decoder-only"
    assert info.parameters > 50_000
    # bytes a decode step reads (core.decodebytes): fp32, the tied embedding once as the LM head
    # plus the looked-up row (hidden size 64)
    assert info.weights_bytes == 4 * info.parameters + 4 * 64


def test_fixed_length_generation_with_per_token_callbacks(decoder):
    b, _ = decoder
    ids = b.encode("the quick brown fox jumps")
    steps: list[int] = []
    gens = b.generate([ids, ids[:2]], GenParams(max_new_tokens=7), on_token=steps.append)
    assert steps == [1, 2, 3, 4, 5, 6, 7]  # one callback per decode step, prompt skipped
    assert [len(g.token_ids) for g in gens] == [7, 7]


def test_batching_does_not_change_greedy_tokens(decoder):
    b, _ = decoder
    a = b.encode("energy is measured in joules")
    c = b.encode("latency")
    solo = b.generate([a], GenParams(max_new_tokens=6))[0].token_ids
    both = b.generate([a, c], GenParams(max_new_tokens=6))[0].token_ids
    assert solo == both  # left padding + attention mask are right


def test_encoder_decoder_generates(tiny_models):
    b = PyTorchBackend()
    info = b.load(resolve(str(tiny_models["encoder-decoder"])), "fp32", "cpu")
    assert info.architecture == "encoder-decoder"
    steps: list[int] = []
    gens = b.generate([b.encode("hello world")], GenParams(max_new_tokens=5), on_token=steps.append)
    assert steps == [1, 2, 3, 4, 5] and len(gens[0].token_ids) == 5
    b.forward([b.encode("hello")])
    b.close()


def test_encoder_only_forward_but_no_generation(tiny_models):
    b = PyTorchBackend()
    info = b.load(resolve(str(tiny_models["encoder"])), "fp32", "cpu")
    assert info.architecture == "encoder-only"
    b.forward([b.encode("hello world"), b.encode("hi")])
    with pytest.raises(E3Error, match="do not generate"):
        b.generate([b.encode("x")], GenParams(max_new_tokens=2))
    b.close()


def test_bf16_on_cpu(tiny_models):
    b = PyTorchBackend()
    info = b.load(resolve(str(tiny_models["decoder"])), "bf16", "cpu")
    assert info.weights_bytes == 2 * info.parameters + 2 * 64  # tied table once + the looked-up row
    assert len(b.generate([b.encode("abc")], GenParams(max_new_tokens=3))[0].token_ids) == 3


@pytest.mark.parametrize(
    "dtype, device, needle",
    [("fp16", "cpu", "not supported on cpu"), ("q4_k_m", "cpu", "not supported"), ("fp32", "cuda", "no CUDA GPU")],
)
def test_unsupported_combinations(tiny_models, dtype, device, needle):
    import torch

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(E3Error, match=needle):
        PyTorchBackend().load(resolve(str(tiny_models["decoder"])), dtype, device)


def test_hub_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(E3Error) as ei:
        PyTorchBackend().load(resolve("e3bench-test/definitely-not-a-model"), "fp32", "cpu")
    assert "Hugging Face hub" in ei.value.problem and "local directory" in ei.value.fix


def _argmax_continuation(model, prompt: list[int], steps: int, eos: int | None, *, decoder_start: int | None = None) -> list[int]:
    """The greedy continuation computed the slow, obvious way: a full forward of the whole
    sequence per step (no KV cache, no padding), EOS masked (fixed-length speed runs)."""
    import torch

    out: list[int] = []
    with torch.no_grad():
        for _ in range(steps):
            if decoder_start is None:
                logits = model(torch.tensor([prompt + out])).logits[0, -1]
            else:
                logits = model(input_ids=torch.tensor([prompt]), decoder_input_ids=torch.tensor([[decoder_start, *out]])).logits[0, -1]
            if eos is not None:
                logits[eos] = -float("inf")
            out.append(int(logits.argmax()))
    return out


def test_generated_tokens_are_the_models_greedy_choice(varied_decoder):
    """Batched KV-cached decoding with left padding gives, for every row, exactly the tokens a
    cache-free argmax loop over the model gives; the text is their decoding."""
    b = PyTorchBackend()
    b.load(resolve(str(varied_decoder)), "fp32", "cpu")
    prompts = [b.encode("the quick brown fox jumps"), b.encode("watts"), b.encode("energy is measured in joules per token")]
    gens = b.generate(prompts, GenParams(max_new_tokens=8))
    want = [_argmax_continuation(b.model, p, 8, b.tokenizer.eos_token_id) for p in prompts]
    assert len({tuple(w) for w in want}) > 1, "degenerate fixture: every prompt gives the same tokens"
    assert [g.token_ids for g in gens] == want
    assert [g.text for g in gens] == [b.decode(w) for w in want]
    assert [g.finish_reason for g in gens] == ["length"] * 3
    b.close()


def test_encoder_decoder_tokens_are_the_models_greedy_choice(tiny_models):
    b = PyTorchBackend()
    b.load(resolve(str(tiny_models["encoder-decoder"])), "fp32", "cpu")
    prompts = [b.encode("hello world"), b.encode("energy per token")]
    gens = b.generate(prompts, GenParams(max_new_tokens=5))
    start = b.model.config.decoder_start_token_id
    want = [_argmax_continuation(b.model, p, 5, b.tokenizer.eos_token_id, decoder_start=start) for p in prompts]
    assert [g.token_ids for g in gens] == want
    b.close()


def test_peak_memory_on_the_cpu_is_no_number(decoder):
    """On the CPU there is no device counter: no number, and the reason (host RSS is the
    runner's job)."""
    b, _ = decoder
    assert b.device == "cpu"
    assert b.peak_memory() == (None, "not measured: the model runs on the CPU (host RSS is recorded separately)")


def test_peak_memory_on_cuda_is_the_allocator_peak_since_reset(tiny_models):
    """On CUDA: at least the weights after load, grows by a 256 MiB buffer allocated and freed
    inside the window, and drops back after reset_peak_memory."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    b = PyTorchBackend()
    info = b.load(resolve(str(tiny_models["decoder"])), "fp32", "cuda")
    b.reset_peak_memory()
    base, how = b.peak_memory()
    assert how == "torch.cuda.max_memory_allocated since after load" and base >= info.weights_bytes
    buf = torch.empty(256 * 2**20, dtype=torch.uint8, device=b._torch_device)
    del buf
    grown, _ = b.peak_memory()
    assert grown >= base + 256 * 2**20
    b.reset_peak_memory()
    assert b.peak_memory()[0] < base + 256 * 2**20
    b.close()


# ----------------------------------------------------------------- int8 / int4 (torchao)
def _torchao_or_skip():
    import importlib.util

    if importlib.util.find_spec("torchao") is None:
        pytest.skip("torchao not installed: pip install 'e3bench[quant]'")


@pytest.mark.parametrize("precision", ["int8", "int4"])
def test_weight_quantization_on_cpu(tiny_models, precision):
    _torchao_or_skip()
    ref = PyTorchBackend()
    fp32 = ref.load(resolve(str(tiny_models["decoder"])), "fp32", "cpu")
    reqs = [("the quick brown fox", " jumps over"), ("energy is", " measured in joules")]
    want = ref.loglikelihood(reqs)
    ref.close()
    b = PyTorchBackend()
    info = b.load(resolve(str(tiny_models["decoder"])), precision, "cpu")
    assert any("torchao" in n and "LM head unquantized" in n for n in info.notes), info.notes
    assert info.parameters == fp32.parameters
    assert info.weights_bytes < fp32.weights_bytes  # packed Linear weights counted, not fp32 sizes
    import torch

    linears = [m for m in b.model.modules() if isinstance(m, torch.nn.Linear)]
    kinds = {type(m.weight).__name__ for m in linears}
    assert kinds - {"Parameter", "Tensor"}, f"no Linear layer was quantized: {kinds}"
    steps: list[int] = []
    gen = b.generate([b.encode("hello world")], GenParams(max_new_tokens=4), on_token=steps.append)
    assert steps == [1, 2, 3, 4] and len(gen[0].token_ids) == 4
    for got, w in zip(b.loglikelihood(reqs), want, strict=True):
        assert got.logprob == pytest.approx(w.logprob, rel=0.1, abs=0.5)
    b.close()


def test_quantization_without_torchao_names_the_extra(tiny_models, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "torchao" else real(n, *a))
    with pytest.raises(E3Error) as ei:
        PyTorchBackend().load(resolve(str(tiny_models["decoder"])), "int8", "cpu")
    assert "e3bench[quant]" in ei.value.fix


@pytest.mark.slow
@pytest.mark.heavy
def test_torch_compile_option(tiny_models):
    b = PyTorchBackend(PyTorchBackend.Options(compile=True))
    info = b.load(resolve(str(tiny_models["decoder"])), "fp32", "cpu")
    assert any("torch.compile" in n for n in info.notes)
    ref = PyTorchBackend()
    ref.load(resolve(str(tiny_models["decoder"])), "fp32", "cpu")
    ids = b.encode("the quick brown fox")
    assert b.generate([ids], GenParams(max_new_tokens=4))[0].token_ids == ref.generate(
        [ids], GenParams(max_new_tokens=4)
    )[0].token_ids
    b.close()
    ref.close()
