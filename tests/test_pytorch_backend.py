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
    assert info.weights_bytes == 4 * info.parameters  # fp32, tied embeddings counted once


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
    assert info.weights_bytes == 2 * info.parameters
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


def test_peak_memory_says_how_it_was_obtained(decoder, monkeypatch):
    """On CUDA the figure is torch's allocator peak, labelled so; on the CPU there is none."""
    import torch

    b, _ = decoder
    assert b.device == "cpu" and b.load_info is not None and b.architecture == "decoder-only"
    peak, how = b.peak_memory()
    assert peak is None and "CPU" in how  # host RSS is the runner's job
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda d=None: 123)
    saved = b._torch_device
    b._torch_device = torch.device("cuda:0")
    try:
        assert b.peak_memory() == (123, "torch.cuda.max_memory_allocated since after load")
    finally:
        b._torch_device = saved


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
