"""ONNX Runtime GenAI backend: builder cache, fp32 agreement with PyTorch, int4, bad input,
the CUDA path through a fake of og (no GPU here)."""

from __future__ import annotations

import importlib.util
import json

import pytest

from e3bench.backends.models import resolve
from e3bench.core.api import GenParams
from e3bench.core.errors import E3Error

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime_genai") is None or importlib.util.find_spec("onnx_ir") is None,
    reason="onnxruntime-genai not installed: pip install 'e3bench[onnx-genai]'",
)

REQS = [("the quick brown fox", " jumps over"), ("the quick brown fox", " sleeps"), ("energy is", " measured in joules")]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("ortgenai-cache")


def _backend(cache, **options):
    from e3bench.backends.factory import make_backend

    return make_backend("ortgenai", options, cache_dir=str(cache), threads=1)


def _pytorch(model):
    from e3bench.backends.factory import make_backend

    b = make_backend("pytorch", {}, threads=1)
    b.load(resolve(str(model)), "fp32", "cpu")
    return b


def test_fp32_build_is_cached_and_agrees_with_pytorch(varied_decoder, cache):
    """fp32 built by the builder scores and generates what PyTorch does (same weights), and
    the second load reuses the build."""
    spec = resolve(str(varied_decoder))
    b = _backend(cache)
    info = b.load(spec, "fp32", "cpu")
    assert any("built with onnxruntime-genai" in n for n in info.notes), info.notes
    got = b.loglikelihood(REQS)
    prompts = [b.encode("abc def ghi"), b.encode("xyz uvw rst")]  # equal length: one og batch
    gens = b.generate(prompts, GenParams(max_new_tokens=6))
    odd = b.generate([b.encode("abc"), b.encode("hello world")], GenParams(max_new_tokens=6))  # one by one
    b.close()
    pt = _pytorch(varied_decoder)
    ref = pt.loglikelihood(REQS)
    ref_gens = [pt.generate([p], GenParams(max_new_tokens=6))[0] for p in prompts]
    ref_odd = [pt.generate([pt.encode(t)], GenParams(max_new_tokens=6))[0] for t in ("abc", "hello world")]
    pt.close()
    for a, r in zip(got, ref, strict=True):
        assert a.logprob == pytest.approx(r.logprob, abs=1e-3) and a.is_greedy == r.is_greedy
    assert [g.token_ids for g in gens] == [g.token_ids for g in ref_gens]
    assert [g.token_ids for g in odd] == [g.token_ids for g in ref_odd]
    assert len({tuple(g.token_ids) for g in gens + odd}) > 1  # the varied model's outputs differ
    again = _backend(cache)
    info2 = again.load(spec, "fp32", "cpu")
    assert any("reused from cache" in n for n in info2.notes), info2.notes
    assert info2.parameters == info.parameters > 50_000 and info2.weights_bytes >= 4 * info.parameters * 0.9
    again.close()


def test_int4_is_matmulnbits_smaller_and_close(varied_decoder, cache):
    import onnx

    spec = resolve(str(varied_decoder))
    b = _backend(cache)
    fp32 = b.load(spec, "fp32", "cpu")
    ref = b.loglikelihood(REQS)
    b.close()
    q = _backend(cache)
    info = q.load(spec, "int4", "cpu")
    ops = {n.op_type for n in onnx.load(str(q.model_dir / "model.onnx"), load_external_data=False).graph.node}
    assert "MatMulNBits" in ops
    # 4-bit blocks + scales: well under a third of fp32's bytes per decode step
    assert info.weights_bytes < 0.35 * fp32.weights_bytes
    got = q.loglikelihood(REQS)
    for a, r in zip(got, ref, strict=True):
        assert a.logprob == pytest.approx(r.logprob, abs=0.1 * abs(r.logprob) + 0.5)
    ticks: list[int] = []
    gen = q.generate([q.encode("abc")], GenParams(max_new_tokens=5), on_token=ticks.append)[0]
    assert len(gen.token_ids) == 5 and ticks == [1, 2, 3, 4, 5]
    q.close()


def test_eos_and_stop_strings_end_generation(varied_decoder, cache):
    b = _backend(cache)
    b.load(resolve(str(varied_decoder)), "fp32", "cpu")
    eos = b.tokenizer.eos_token_id
    gen = b.generate([b.encode("x")], GenParams(max_new_tokens=5, ignore_eos=False))[0]
    assert eos not in gen.token_ids and gen.finish_reason in ("eos", "length")
    full = b.generate([b.encode("abc")], GenParams(max_new_tokens=6))[0]
    stop = full.text[2:4]
    cut = b.generate([b.encode("abc")], GenParams(max_new_tokens=6, stop=(stop,)))[0]
    assert cut.finish_reason == "stop" and stop not in cut.text and len(cut.token_ids) <= len(full.token_ids)
    b.close()


def test_unsupported_architecture_is_refused_before_building(tiny_models, cache):
    with pytest.raises(E3Error) as ei:
        _backend(cache).load(resolve(str(tiny_models["encoder-decoder"])), "fp32", "cpu")
    assert "does not convert T5ForConditionalGeneration" in ei.value.problem
    assert "--backend onnxrt" in ei.value.fix or "--backend pytorch" in ei.value.fix
    assert not list((cache / "ortgenai").glob("tiny-t5*"))


def test_damaged_cache_entry_names_the_folder_to_delete(varied_decoder, cache):
    spec = resolve(str(varied_decoder))
    b = _backend(cache)
    b.load(spec, "fp32", "cpu")
    d = b.model_dir
    b.close()
    manifest = d / "e3bench-ortgenai.json"
    good = manifest.read_bytes()
    try:
        manifest.write_text("{not json")
        with pytest.raises(E3Error) as ei:
            _backend(cache).load(spec, "fp32", "cpu")
        assert "damaged" in ei.value.problem and f"delete {d}" in ei.value.fix
    finally:
        manifest.write_bytes(good)
    onnx_file = d / "model.onnx"
    model = onnx_file.read_bytes()
    try:
        onnx_file.write_bytes(b"garbage")
        with pytest.raises(E3Error) as ei:
            _backend(cache).load(spec, "fp32", "cpu")
        assert "cannot load" in ei.value.problem and f"delete {d}" in ei.value.fix
        assert len(ei.value.one_line().splitlines()) == 1
    finally:
        onnx_file.write_bytes(model)


def test_a_build_by_another_version_is_rebuilt(varied_decoder, cache):
    spec = resolve(str(varied_decoder))
    b = _backend(cache)
    b.load(spec, "int4", "cpu")
    manifest = b.model_dir / "e3bench-ortgenai.json"
    b.close()
    m = json.loads(manifest.read_text())
    manifest.write_text(json.dumps(m | {"onnxruntime_genai": "0.0.1"}))
    again = _backend(cache)
    info = again.load(spec, "int4", "cpu")
    assert any("made by onnxruntime-genai 0.0.1; rebuilt" in n for n in info.notes), info.notes
    assert json.loads(manifest.read_text())["onnxruntime_genai"] != "0.0.1"
    again.close()


def test_missing_extra_names_the_pip_line(monkeypatch):
    from e3bench.core import registry

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "onnxruntime_genai" else real(n, *a))
    err = registry.backends.missing_extra("ortgenai")
    assert err is not None
    assert err.one_line() == (
        "the ortgenai backend needs the Python package 'onnxruntime_genai', which is not installed"
        " — fix: pip install 'e3bench[onnx-genai]'"
    )


@pytest.mark.parametrize(
    "precision, device, needle",
    [("fp16", "cpu", "supported on cpu: fp32, int4"), ("int8", "cuda", "supported on cuda: fp16, fp32, int4")],
)
def test_impossible_precisions_list_what_works(tiny_models, cache, precision, device, needle):
    with pytest.raises(E3Error, match=needle):
        _backend(cache).load(resolve(str(tiny_models["decoder"])), precision, device)


def test_cuda_without_the_cuda_build_names_the_package(tiny_models, cache):
    import onnxruntime_genai as og

    if og.is_cuda_available():
        pytest.skip("this onnxruntime-genai has CUDA")
    with pytest.raises(E3Error) as ei:
        _backend(cache).load(resolve(str(tiny_models["decoder"])), "fp16", "cuda:1")
    assert "CUDA build" in ei.value.problem and "onnxruntime-genai-cuda" in ei.value.fix


class _FakeOg:
    """The slice of og the CUDA path calls, recording what it was asked: a CUDA build
    (``is_cuda_available``), ``Config`` with ``overlay`` / ``clear_providers`` / ``append_provider``,
    ``set_current_gpu_device_id`` and ``Model`` (loads the CPU build so the rest can run)."""

    def __init__(self, real):
        self.real, self.calls = real, []

    def is_cuda_available(self):
        return True

    def set_current_gpu_device_id(self, n):
        self.calls.append(("device", n))

    def Config(self, path):  # noqa: N802 - og's name
        fake, real_cfg = self, self.real.Config(path)

        class Cfg:
            def overlay(self, s):
                fake.calls.append(("overlay", json.loads(s)))
                real_cfg.overlay(s)

            def clear_providers(self):
                fake.calls.append(("clear_providers",))

            def append_provider(self, name):
                fake.calls.append(("provider", name))

        self.cfg = real_cfg
        return Cfg()

    def Model(self, cfg):  # noqa: N802 - og's name
        return self.real.Model(self.cfg)

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_cuda_path_builds_with_e_cuda_and_selects_the_gpu(varied_decoder, cache, monkeypatch):
    """No GPU here: a fake og stands for the CUDA build, the builder call is captured (it is
    asked for ``-p fp16 -e cuda``; its output is the CPU fp32 build's files, so the load goes on),
    and the provider and device the backend selects are checked."""
    import shutil
    import subprocess
    import sys

    import onnxruntime_genai as og

    spec = resolve(str(varied_decoder))
    cpu = _backend(cache)
    cpu.load(spec, "fp32", "cpu")
    built = cpu.model_dir
    cpu.close()
    fake = _FakeOg(og)
    monkeypatch.setitem(sys.modules, "onnxruntime_genai", fake)
    seen = []

    def fake_builder(cmd, **kw):
        seen.append(cmd)
        out = cmd[cmd.index("-o") + 1]
        for f in built.iterdir():
            if f.name != "e3bench-ortgenai.json":
                shutil.copy(f, out)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_builder)
    b = _backend(cache, extra_options={"int4_block_size": "32"})
    info = b.load(spec, "fp16", "cuda:1")
    (cmd,) = seen
    assert cmd[cmd.index("-p") + 1] == "fp16" and cmd[cmd.index("-e") + 1] == "cuda"
    assert cmd[cmd.index("--extra_options") + 1 :] == ["int4_block_size=32"]
    assert ("provider", "cuda") in fake.calls and ("device", 1) in fake.calls
    assert b.model_dir.name.startswith("fp16-cuda-") and info.device == "cuda:1"
    assert len(b.generate([b.encode("abc")], GenParams(max_new_tokens=3))[0].token_ids) == 3
    b.close()


@pytest.mark.gpu
def test_int4_on_gpu(varied_decoder, cache):
    import onnxruntime_genai as og

    if not og.is_cuda_available():
        pytest.skip("needs onnxruntime-genai-cuda and an NVIDIA GPU")
    b = _backend(cache)
    b.load(resolve(str(varied_decoder)), "int4", "cuda")
    assert len(b.generate([b.encode("abc")], GenParams(max_new_tokens=8))[0].token_ids) == 8
    assert len(b.loglikelihood(REQS)) == 3
    b.close()


def test_a_prompt_that_hit_its_stop_string_stops_stepping(varied_decoder, cache):
    """Prompts of different lengths run one generator each, stepped together: one whose text
    holds a stop string stops being stepped (it went on until every prompt had stopped, as the
    onnxrt and llama.cpp loops did before their finished rows left the batch); texts unchanged."""
    b = _backend(cache)
    b.load(resolve(str(varied_decoder)), "fp32", "cpu")
    try:
        short, long = b.encode("abc"), b.encode("the quick brown fox jumps")
        full = b.generate([short], GenParams(max_new_tokens=10))[0]
        stop = full.text[2:4]
        want = [b.generate([p], GenParams(max_new_tokens=10, stop=(stop,)))[0] for p in (short, long)]
        assert want[0].finish_reason == "stop"
        steps: list[int] = []
        real = b._lane

        def counting(ids, params):
            gen = real(ids, params)
            k = len(steps)
            steps.append(0)

            class Lane:
                def __getattr__(self, name):
                    return getattr(gen, name)

                def generate_next_token(self):
                    steps[k] += 1
                    return gen.generate_next_token()

            return Lane()

        b._lane = counting
        got = b.generate([short, long], GenParams(max_new_tokens=10, stop=(stop,)))
        assert [g.text for g in got] == [w.text for w in want]
        if want[1].finish_reason == "length":
            assert steps[0] < steps[1] == 10, steps
    finally:
        b.close()
