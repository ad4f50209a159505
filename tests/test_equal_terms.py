"""Every backend on equal terms (issue 20): one thread count per run, applied to every backend
and read back from it; capability refusals before any meter, idle window or load."""

from __future__ import annotations

import importlib.util
from typing import ClassVar

import pytest

from e3bench.bench.runner import run_one
from e3bench.config.run import build_config
from e3bench.core import host
from e3bench.core.api import Capabilities
from e3bench.core.errors import E3Error
from fakes.testing import FakeBackend


def _cfg(path, **kw):
    base = dict(
        model=str(path), batch_sizes="1", max_new_tokens=2, prompt_tokens=4, warmup_iters=0, min_iters=1,
        min_seconds=0.0, meter="none", idle_seconds=0,
    )  # fmt: skip
    base.update(kw)
    return build_config(overrides=base)


@pytest.fixture
def torch_threads_restored():
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------------------ threads
def test_resolve_threads_rule(monkeypatch):
    monkeypatch.setattr(host, "physical_cores_available", lambda: 3)
    assert host.resolve_threads(5, {"OMP_NUM_THREADS": "2"}) == (5, "user")
    assert host.resolve_threads(None, {"OMP_NUM_THREADS": "2"}) == (2, "environment")
    assert host.resolve_threads(None, {"OMP_NUM_THREADS": "zero"}) == (3, "resolved")
    assert host.resolve_threads(None, {}) == (3, "resolved")


def test_physical_cores_are_those_this_process_may_use(monkeypatch):
    import os

    cpus = sorted(os.sched_getaffinity(0))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {cpus[0]})
    assert host.physical_cores_available() == 1


@pytest.mark.parametrize(
    "threads, env, want, source",
    [(None, None, 1, "resolved"), (None, "1", 1, "environment"), (1, "2", 1, "user")],
)
def test_a_run_resolves_one_thread_count_applies_it_and_records_it(
    threads, env, want, source, tiny_models, monkeypatch, torch_threads_restored
):
    """Issue 20.3: with --threads unset the backends used their libraries' defaults (llama.cpp 1,
    PyTorch and ONNX Runtime 2) and the record said nothing. One count now: the one resolved
    (here 1 physical core, unlike torch's default of this process), read back from the backend."""
    import torch

    torch.set_num_threads(2)  # what a library default would leave
    monkeypatch.setattr(host, "physical_cores_available", lambda: 1)
    if env is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", env)
    rec = run_one(_cfg(tiny_models["decoder"], threads=threads))
    m = rec.manifest
    assert rec.status == "ok"
    assert (m.threads, m.threads_source) == (want, host.THREADS_SOURCES[source])
    assert m.backend_threads == {"torch.get_num_threads()": want} and m.torch_threads == want
    assert rec.config["threads"] == threads  # the configuration (and its hash) as the user gave it
    assert not [w for w in rec.warnings if "threads" in w]


def test_the_runner_builds_the_backend_with_the_resolved_count_and_warns_on_a_mismatch(tiny_models, monkeypatch):
    from e3bench.bench import runner

    built = {}

    class Stubborn(FakeBackend):
        def threads_in_use(self):
            return {"n_threads": 7}

    def make(name, options, *, cache_dir, threads):
        built["threads"] = threads
        return Stubborn()

    monkeypatch.setattr(runner, "make_backend", make)
    monkeypatch.setattr(host, "physical_cores_available", lambda: 3)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    rec = run_one(_cfg(tiny_models["decoder"]))
    assert built["threads"] == 3 and rec.manifest.threads == 3
    assert rec.manifest.backend_threads == {"n_threads": 7}
    assert any("n_threads = 7, not the run's 3 threads" in w for w in rec.warnings)


needs_llama = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llamacpp not installed")


@needs_llama
def test_llamacpp_decodes_on_the_resolved_count_not_its_own_default(bundled_gguf, tmp_path, monkeypatch):
    """llama-cpp-python's own default is half the logical CPUs (1 on 2 cores)."""
    from e3bench.backends.llamacpp import LlamaCppBackend
    from e3bench.backends.models import resolve

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    want = host.resolve_threads()[0]
    b = LlamaCppBackend(cache_dir=str(tmp_path))
    info = b.load(resolve(str(bundled_gguf)), "native", "cpu")
    try:
        assert b.threads_in_use() == {"n_threads": want, "n_threads_batch": want}
        assert f"threads {want};" in " ".join(info.notes)
    finally:
        b.close()


# --------------------------------------------------------------------- refusals before work
class DecoderOnly(FakeBackend):
    """A fake that runs decoder-only models, and remembers whether anything was loaded."""

    name: ClassVar[str] = "decoder-only-fake"
    capabilities: ClassVar[Capabilities] = Capabilities(
        devices=frozenset({"cpu"}), precisions=frozenset({"fp32"}), architectures=frozenset({"decoder-only"}),
    )  # fmt: skip


@pytest.fixture
def spy_windows(monkeypatch):
    """Every metered window the runner creates (the idle window is measured in one)."""
    from e3bench.energy import window

    created = []
    real = window.MeteredWindow.create.__func__

    def create(cls, *a, **kw):
        created.append(a)
        return real(cls, *a, **kw)

    monkeypatch.setattr(window.MeteredWindow, "create", classmethod(create))
    return created


def test_an_encoder_only_model_is_refused_before_any_window_or_load(tiny_models, spy_windows):
    """Issue 20.4: the refusal came from the backend's load, after the "loading" line."""
    spy = DecoderOnly()
    lines = []
    with pytest.raises(E3Error) as ei:
        run_one(_cfg(tiny_models["encoder"], meter="estimate", idle_seconds=1), backend=spy, progress=lines.append)
    assert "runs decoder-only models" in str(ei.value) and "is encoder-only (the model's config.json)" in str(ei.value)
    assert "--backend pytorch" in ei.value.fix
    assert spy.loaded is None and spy_windows == [] and not [x for x in lines if "loading" in x]


def test_architecture_and_precision_problems_are_refused_together(tiny_models, spy_windows):
    spy = DecoderOnly()
    with pytest.raises(E3Error) as ei:
        run_one(_cfg(tiny_models["encoder-decoder"], dtype="bf16"), backend=spy)
    text = " ".join(ei.value.one_lines()) if hasattr(ei.value, "one_lines") else ei.value.one_line()
    assert "encoder-decoder" in text and "precision 'bf16' not supported" in text
    assert spy.loaded is None and spy_windows == []


@pytest.mark.parametrize("backend", ["onnxrt", "llamacpp"])
def test_the_real_backends_refuse_an_encoder_only_model_up_front(backend, tiny_models, spy_windows, monkeypatch):
    from e3bench.core import registry
    from e3bench.core.errors import MissingExtra

    try:
        cls = registry.backends.get(backend)
    except MissingExtra:
        pytest.skip(f"{backend} not installed")
    loads = []
    monkeypatch.setattr(cls, "load", lambda self, *a: loads.append(a))
    with pytest.raises(E3Error, match=f"the {backend} backend runs decoder-only models; .* is encoder-only"):
        run_one(_cfg(tiny_models["encoder"], backend=backend, meter="estimate", idle_seconds=1))
    assert loads == [] and spy_windows == []


def test_gguf_architecture_comes_from_the_header(tmp_path):
    gguf = pytest.importorskip("gguf")
    from e3bench.bench.limits import model_architecture
    from e3bench.core.api import ModelSpec

    for arch, want in (("bert", "encoder-only"), ("t5", "encoder-decoder"), ("llama", "decoder-only")):
        path = tmp_path / f"{arch}.gguf"
        w = gguf.GGUFWriter(str(path), arch)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        spec = ModelSpec(name=path.name, source="gguf", path=str(tmp_path), gguf_file=path.name)
        assert model_architecture(spec, None) == (want, f"GGUF header general.architecture '{arch}'")
