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

    b = VllmBackend(gpu_memory_utilization=0.3, max_model_len=512)
    b.load(resolve(str(tiny_models["decoder"])), "fp16", "cuda")
    steps: list[int] = []
    gens = b.generate([b.encode("hello world")] * 2, GenParams(max_new_tokens=8), on_token=steps.append)
    assert steps == list(range(1, 9)) and all(len(g.token_ids) == 8 for g in gens)
    assert b.loglikelihood([("hello", " world")])[0].n_tokens >= 1
    b.close()
