"""llama.cpp backend: precision mapping, quantization cache, bad input, per-token timing."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from e3bench.core.api import GenParams
from e3bench.core.errors import E3Error
from e3bench.backends.models import resolve

HAVE = importlib.util.find_spec("llama_cpp") is not None
needs_llama = pytest.mark.skipif(not HAVE, reason="llamacpp not installed: pip install 'e3bench[llamacpp]'")


@pytest.mark.parametrize(
    "shipped, precision, target",
    [
        ("q4_1", "native", None),
        ("q4_1", "int4", None),  # already 4-bit: run as shipped
        ("q4_1", "q4_1", None),
        ("q4_1", "int8", "q8_0"),
        ("q4_1", "fp16", "f16"),
        ("q4_1", "fp32", "f32"),
        ("f16", "int4", "q4_k_m"),
        ("f16", "Q5_K_M", "q5_k_m"),
    ],
)
def test_precision_names_map_to_gguf_types(shipped, precision, target):
    from e3bench.backends.gguf_types import target_type

    assert target_type(shipped, precision) == target


def test_capabilities_list_gguf_types_and_refuse_others():
    from e3bench.backends.llamacpp import LlamaCppBackend

    caps = LlamaCppBackend.capabilities
    assert {"q4_k_m", "q8_0", "f16", "int4", "native"} <= caps.precisions
    reason = caps.check(device="cpu", precision="int3")
    assert reason and "q4_k_m" in reason and "q8_0" in reason


@needs_llama
def test_transformers_directory_is_refused(tiny_models):
    from e3bench.backends.llamacpp import LlamaCppBackend

    with pytest.raises(E3Error, match="runs GGUF files") as ei:
        LlamaCppBackend().load(resolve(str(tiny_models["decoder"])), "native", "cpu")
    assert "convert_hf_to_gguf" in ei.value.fix


@needs_llama
def test_unknown_architecture_is_named(tmp_path):
    import gguf
    import numpy as np

    from e3bench.backends.llamacpp import LlamaCppBackend

    path = tmp_path / "mystery.gguf"
    w = gguf.GGUFWriter(str(path), "e3bench-mystery-arch")
    w.add_block_count(1)
    w.add_context_length(64)
    w.add_embedding_length(8)
    w.add_file_type(0)
    w.add_tensor("token_embd.weight", np.zeros((16, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(E3Error) as ei:
        LlamaCppBackend(cache_dir=str(tmp_path)).load(resolve(str(path)), "native", "cpu")
    assert "does not know the architecture 'e3bench-mystery-arch'" in ei.value.problem
    assert "upgrade llama-cpp-python" in ei.value.fix


@needs_llama
def test_cuda_without_gpu_build_is_a_clear_error(bundled_gguf):
    import llama_cpp

    from e3bench.backends.llamacpp import LlamaCppBackend

    if llama_cpp.llama_supports_gpu_offload():
        pytest.skip("this llama-cpp-python offloads to a GPU")
    with pytest.raises(E3Error, match="built with CUDA"):
        LlamaCppBackend().load(resolve(str(bundled_gguf)), "native", "cuda")


@pytest.fixture(scope="module")
def shipped(bundled_gguf):
    if not HAVE:
        pytest.skip("llamacpp not installed: pip install 'e3bench[llamacpp]'")
    from e3bench.backends.llamacpp import LlamaCppBackend
    from e3bench.backends.models import cache_root

    b = LlamaCppBackend(LlamaCppBackend.Options(n_ctx=512), cache_dir=str(cache_root(None)), threads=2)
    info = b.load(resolve(str(bundled_gguf)), "native", "cpu")
    yield b, info
    b.close()


@pytest.mark.slow
def test_shipped_q4_1_streams_one_callback_per_token(shipped):
    b, info = shipped
    assert info.dtype == "q4_1" and info.parameters > 100_000_000
    steps: list[int] = []
    ids = b.encode("The history of the Roman Empire")
    b.perf_reset()
    gen = b.generate([ids], GenParams(max_new_tokens=8), on_token=steps.append)[0]
    assert steps == list(range(1, 9)) and len(gen.token_ids) == 8 and gen.text
    perf = b.perf()  # the library's own counters agree with what we asked it to do
    assert perf["prompt_tokens"] == len(ids) and perf["eval_tokens"] == 7


@pytest.mark.slow
def test_batch_of_two_equals_two_solo_runs(shipped):
    b, _ = shipped
    a, c = b.encode("Energy is measured in"), b.encode("Once upon a time")
    both = b.generate([a, c], GenParams(max_new_tokens=6))
    assert [g.token_ids for g in both] == [
        b.generate([a], GenParams(max_new_tokens=6))[0].token_ids,
        b.generate([c], GenParams(max_new_tokens=6))[0].token_ids,
    ]


@pytest.mark.slow
def test_loglikelihood_prefers_the_right_answer(shipped):
    b, _ = shipped
    paris, berlin = b.loglikelihood([("The capital of France is", " Paris"), ("The capital of France is", " Berlin")])
    assert paris.logprob > berlin.logprob and paris.is_greedy and paris.n_tokens == 1


@pytest.mark.slow
def test_q8_0_is_made_once_and_reused(bundled_gguf, tmp_path):
    if not HAVE:
        pytest.skip("llamacpp not installed")
    from e3bench.backends.llamacpp import LlamaCppBackend

    b = LlamaCppBackend(LlamaCppBackend.Options(n_ctx=256), cache_dir=str(tmp_path), threads=2)
    info = b.load(resolve(str(bundled_gguf)), "int8", "cpu")
    assert info.dtype == "q8_0" and any("re-quantized" in n and "(now:" in n for n in info.notes)
    made = list(Path(tmp_path).glob("gguf-quantized/*/Q8_0.gguf"))
    assert len(made) == 1 and made[0].stat().st_size > 1.2 * Path(bundled_gguf).stat().st_size
    b.close()
    again = LlamaCppBackend(LlamaCppBackend.Options(n_ctx=256), cache_dir=str(tmp_path), threads=2)
    assert any("(cached:" in n for n in again.load(resolve(str(bundled_gguf)), "q8_0", "cpu").notes)
    again.close()
