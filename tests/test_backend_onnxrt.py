"""ONNX Runtime backend: export cache, int8 conversion, bad input."""

from __future__ import annotations

import importlib.util

import pytest

from e3bench.core.api import GenParams
from e3bench.core.errors import E3Error
from e3bench.backends.models import resolve

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None, reason="onnxrt not installed: pip install 'e3bench[onnx]'"
)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx-cache")


def _backend(cache):
    from e3bench.backends.onnxrt import OnnxRuntimeBackend

    return OnnxRuntimeBackend(cache_dir=str(cache), threads=1)


def test_export_is_cached_and_reused(tiny_models, cache):
    spec = resolve(str(tiny_models["decoder"]))
    b = _backend(cache)
    b.load(spec, "fp32", "cpu")
    b.close()
    b = _backend(cache)
    info = b.load(spec, "fp32", "cpu")
    assert any("reused from cache" in n for n in info.notes), info.notes
    exported = list((cache / "onnx").glob("*/fp32/model.onnx"))
    assert len(exported) == 1 and (exported[0].parent / "e3bench-onnx.json").is_file()
    assert info.parameters > 50_000 and info.weights_bytes >= 4 * info.parameters * 0.9
    b.close()


def test_int8_is_smaller_close_to_fp32_and_cached(tiny_models, cache):
    spec = resolve(str(tiny_models["decoder"]))
    b = _backend(cache)
    fp32 = b.load(spec, "fp32", "cpu")
    reqs = [("the quick brown fox", " jumps over"), ("energy is", " measured in joules")]
    ref = b.loglikelihood(reqs)
    b.close()
    q = _backend(cache)
    info = q.load(spec, "int8", "cpu")
    # bytes a decode step reads (core.decodebytes): int8 matrices (the tied LM head among them)
    # plus scales, and one fp32 row of the embedding table the Gather keeps — not the whole fp32
    # table the file holds (that counted, int8 was 0.6 x fp32)
    assert 0.25 * fp32.weights_bytes < info.weights_bytes < 0.3 * fp32.weights_bytes
    got = q.loglikelihood(reqs)
    for a, r in zip(got, ref, strict=True):
        assert a.logprob == pytest.approx(r.logprob, abs=0.05 * abs(r.logprob) + 0.05)
    assert len(q.generate([q.encode("abc")], GenParams(max_new_tokens=3))[0].token_ids) == 3
    q.close()
    again = _backend(cache)
    assert any("int8-dynamic model reused" in n for n in again.load(spec, "int8", "cpu").notes)
    again.close()


def test_static_int8_is_calibrated_qdq_and_cached(tiny_models, cache, tmp_path):
    import onnx

    from e3bench.backends.onnxrt import OnnxRuntimeBackend

    spec = resolve(str(tiny_models["decoder"]))
    b = _backend(cache)
    b.load(spec, "fp32", "cpu")
    reqs = [("the quick brown fox", " jumps over"), ("energy is", " measured in joules")]
    ref = b.loglikelihood(reqs)
    b.close()
    q = OnnxRuntimeBackend(OnnxRuntimeBackend.Options(int8_mode="static"), cache_dir=str(cache), threads=1)
    info = q.load(spec, "int8", "cpu")
    assert any("quantize_static" in n and "calibration: 16 texts from synthetic" in n for n in info.notes), info.notes
    graph = onnx.load(str(q.model_dir / "model.onnx"), load_external_data=False).graph
    ops = {n.op_type for n in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ: fixed activation scales in the graph
    got = q.loglikelihood(reqs)
    for a, r in zip(got, ref, strict=True):
        assert a.logprob == pytest.approx(r.logprob, abs=0.1 * abs(r.logprob) + 0.1)
    assert len(q.generate([q.encode("abc")], GenParams(max_new_tokens=3))[0].token_ids) == 3
    q.close()
    assert q.model_dir.name == "int8-static"
    # a user calibration file is a different model, cached under its content hash
    cal = tmp_path / "cal.txt"
    cal.write_text("the quick brown fox jumps over the lazy dog\nenergy is measured in joules per token\n")
    opts = OnnxRuntimeBackend.Options(int8_mode="static", calibration_file=str(cal))
    u = OnnxRuntimeBackend(opts, cache_dir=str(cache), threads=1)
    notes = u.load(spec, "int8", "cpu").notes
    assert u.model_dir.name.startswith("int8-static-") and any("2 texts from " in n for n in notes), notes
    u.close()


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [({"int8_mode": "weird"}, "int8_mode='weird' is invalid"), ({"calibration_file": "/no/such.txt"}, "calibration file not found")],
)
def test_bad_int8_options(kwargs, needle):
    from e3bench.backends.factory import make_backend

    with pytest.raises(E3Error, match=needle):
        make_backend("onnxrt", kwargs)


def test_export_from_an_older_exporter_is_remade(tiny_models, cache):
    """The cache compares the manifest's exporter_version with EXPORTER_VERSION: an export made by
    an older exporter is replaced, not reused (exporter fixes reach existing caches)."""
    import json

    from e3bench.backends.onnx_export import EXPORTER_VERSION, MANIFEST

    spec = resolve(str(tiny_models["decoder"]))
    b = _backend(cache)
    b.load(spec, "fp32", "cpu")
    b.close()
    manifest = next((cache / "onnx").glob("*/fp32")) / MANIFEST
    info = json.loads(manifest.read_text())
    info["exporter_version"] = EXPORTER_VERSION - 1
    manifest.write_text(json.dumps(info))
    b = _backend(cache)
    notes = b.load(spec, "fp32", "cpu").notes
    assert any(f"made by exporter v{EXPORTER_VERSION - 1}; remade with v{EXPORTER_VERSION}" in n for n in notes), notes
    assert not any("reused from cache" in n for n in notes)
    assert json.loads(manifest.read_text())["exporter_version"] == EXPORTER_VERSION
    assert len(b.generate([b.encode("hello")], GenParams(max_new_tokens=3))[0].token_ids) == 3
    b.close()


def test_sliding_window_export_by_exporter_v1_is_refused(sliding_decoders, cache, tmp_path):
    """An existing ONNX directory exported by exporter v1 (whose sliding-window layers crash or
    give wrong tokens past the window) is refused at load with one line naming the fix; the
    current export of the same model loads, notes the full-length cache and runs past the window
    in int8 too."""
    import json
    import shutil

    from e3bench.backends.onnx_export import MANIFEST

    spec = resolve(str(sliding_decoders["mistral"]))
    b = _backend(cache)
    b.load(spec, "fp32", "cpu")
    long = b.encode("The quick brown fox jumps over the lazy dog. A small language model reads text and predicts")
    assert len(long) > 16
    b.close()
    old = tmp_path / "old-export"
    shutil.copytree(b.model_dir, old)
    info = json.loads((old / MANIFEST).read_text())
    info["exporter_version"] = 1
    (old / MANIFEST).write_text(json.dumps(info))
    with pytest.raises(E3Error, match="exporter v1, which mishandles sliding-window attention") as err:
        _backend(cache).load(resolve(str(old)), "fp32", "cpu")
    assert "--backend pytorch or llamacpp" in err.value.fix
    q = _backend(cache)
    notes = q.load(spec, "int8", "cpu").notes
    assert any("sliding-window attention (window 16 tokens) in 2 of 2 layers" in n for n in notes), notes
    assert len(q.generate([long], GenParams(max_new_tokens=20))[0].token_ids) == 20
    q.close()


def test_a_failing_session_call_is_one_clear_line(tiny_models, cache):
    """An ONNX Runtime failure inside a step (here: a cache of the wrong shape) is an E3Error
    naming the model and the fallback backends, not a traceback out of the run."""
    import numpy as np
    import onnxruntime as ort

    b = _backend(cache)
    b.load(resolve(str(tiny_models["decoder"])), "fp32", "cpu")
    wrong = np.zeros((1, b.kv_heads + 1, 3, b.head_dim), dtype=np.float32)
    past = [ort.OrtValue.ortvalue_from_numpy(wrong) for _ in b.past_names]
    ids = np.array([[5]])
    with pytest.raises(E3Error, match="ONNX Runtime failed running") as err:
        b._step(ids, np.ones((1, 4), dtype=np.int64), np.array([[3]]), np.array([0]), past)
    assert "--backend pytorch or llamacpp" in err.value.fix
    b.close()


def test_loads_an_existing_onnx_directory(tiny_models, cache):
    """A directory holding model.onnx (ours or optimum's layout) loads without exporting."""
    src = next((cache / "onnx").glob("*/fp32"))
    b = _backend(cache)
    info = b.load(resolve(str(src)), "fp32", "cpu")
    assert any("ONNX model loaded from" in n for n in info.notes)
    assert len(b.generate([b.encode("hello")], GenParams(max_new_tokens=4))[0].token_ids) == 4
    b.close()


def test_eos_and_stop_strings_end_generation(tiny_models, cache):
    b = _backend(cache)
    b.load(resolve(str(tiny_models["decoder"])), "fp32", "cpu")
    eos = b.tokenizer.eos_token_id
    gen = b.generate([b.encode("x")], GenParams(max_new_tokens=5, ignore_eos=False))[0]
    assert eos not in gen.token_ids and gen.finish_reason in ("eos", "length")
    b.close()


@pytest.mark.parametrize(
    "precision, device, needle",
    [
        ("fp16", "cpu", "supported on cpu: fp32, int8"),
        ("int8", "cuda", "supported on cuda: fp16, fp32"),
        ("int4", "cpu", "not supported"),
    ],
)
def test_impossible_precisions_list_what_works(tiny_models, cache, precision, device, needle):
    with pytest.raises(E3Error, match=needle):
        _backend(cache).load(resolve(str(tiny_models["decoder"])), precision, device)


def test_cuda_without_cuda_provider_names_the_package(tiny_models, cache):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(E3Error) as ei:
        _backend(cache).load(resolve(str(tiny_models["decoder"])), "fp32", "cuda")
    assert "CUDAExecutionProvider" in ei.value.problem and "onnxruntime-gpu" in ei.value.fix


def test_encoder_decoder_is_refused(tiny_models, cache):
    with pytest.raises(E3Error, match="decoder-only"):
        _backend(cache).load(resolve(str(tiny_models["encoder-decoder"])), "fp32", "cpu")


@pytest.mark.gpu
def test_fp16_on_gpu(tiny_models, cache):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("needs onnxruntime-gpu with CUDAExecutionProvider and an NVIDIA GPU")
    b = _backend(cache)
    info = b.load(resolve(str(tiny_models["decoder"])), "fp16", "cuda")
    assert "CUDAExecutionProvider" in info.notes[-1]
    assert len(b.generate([b.encode("abc")], GenParams(max_new_tokens=8))[0].token_ids) == 8
    b.close()
