"""make_backend: the one way from configuration to a backend object, with typed options."""

from __future__ import annotations

import pytest

from e3bench.backends.factory import make_backend, validate_options
from e3bench.core import registry
from e3bench.core.errors import E3Error


def test_options_are_validated_and_passed():
    from e3bench.backends.pytorch import PyTorchBackend

    b = make_backend("pytorch", {"compile": "true"}, cache_dir="/tmp/c", threads=2)
    assert isinstance(b, PyTorchBackend) and b.options.compile is True
    assert b.threads == 2 and b.cache_dir == "/tmp/c"
    assert make_backend("pytorch", None).options.compile is False


def test_unknown_option_names_the_key_and_lists_the_options():
    with pytest.raises(E3Error) as ei:
        make_backend("pytorch", {"n_ctx": 4096})
    assert "backend 'pytorch' has no option 'n_ctx'" in ei.value.problem
    assert "compile (bool, default False)" in ei.value.fix


def test_bad_value_names_key_value_and_reason(tmp_path):
    from e3bench.backends.onnxrt import OnnxRuntimeBackend

    with pytest.raises(E3Error) as ei:
        validate_options("onnxrt", OnnxRuntimeBackend, {"int8_mode": "weird"})
    assert "int8_mode='weird'" in ei.value.problem and "int8_mode" in ei.value.fix
    with pytest.raises(E3Error, match="calibration file not found"):
        validate_options("onnxrt", OnnxRuntimeBackend, {"calibration_file": str(tmp_path / "no.txt")})
    from e3bench.backends.llamacpp import LlamaCppBackend

    with pytest.raises(E3Error, match="n_ctx='lots'"):
        validate_options("llamacpp", LlamaCppBackend, {"n_ctx": "lots"})
    from e3bench.backends.vllm import VllmBackend

    with pytest.raises(E3Error, match="gpu_memory_utilization=1.5"):
        validate_options("vllm", VllmBackend, {"gpu_memory_utilization": 1.5})


@pytest.mark.parametrize("key, flag", [("threads", "--threads"), ("cache_dir", "--cache-dir")])
def test_run_options_are_refused_among_backend_options(key, flag):
    with pytest.raises(E3Error, match="run option") as ei:
        make_backend("pytorch", {key: 3})
    assert flag in ei.value.fix


def test_unknown_backend_suggests_the_close_name():
    with pytest.raises(E3Error, match="unknown backend 'pytorh'") as ei:
        make_backend("pytorh", {})
    assert "did you mean 'pytorch'" in ei.value.fix


def test_every_backend_declares_typed_options_without_heavy_imports():
    """Config-time validation reads cls.Options; the backend modules import no heavy library."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from e3bench.backends import pytorch, onnxrt, llamacpp, vllm\n"
        "heavy = [m for m in ('torch', 'transformers', 'onnxruntime', 'llama_cpp', 'vllm') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"importing backend modules imported {out}"
    for name in registry.backends.names():
        cls = registry.backends.peek(name)  # imports the module even where the extra is missing
        opts = cls.Options
        assert opts.model_config.get("extra") == "forbid", name
        assert all(f.description for f in opts.model_fields.values()), f"{name}: undocumented option"
        assert not {"cache_dir", "threads"} & set(opts.model_fields), name


def test_a_plugin_backend_without_options_model_takes_none():
    class Bare:
        def __init__(self, options, *, cache_dir=None, threads=None):
            self.options, self.threads = options, threads

    registry.backends.register("bare-test", Bare)
    try:
        assert make_backend("bare-test", {}, threads=3).options is None
        with pytest.raises(E3Error, match="has no option 'x'") as ei:
            make_backend("bare-test", {"x": 1})
        assert "it takes no options" in ei.value.fix
    finally:
        registry.backends.unregister("bare-test")
