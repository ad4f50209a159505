"""``--device cpu | cuda | cuda:N`` through every layer: the config (schema, CLI, YAML, sweeps),
the visible-GPU check before load, the capabilities, the backends' own device arguments
(PyTorch's torch.device, ONNX Runtime's provider device_id, llama.cpp's main_gpu), the NVML
memory check, the Ray executor. No GPU here: the libraries are faked where they would touch one;
the real-GPU paths are in tests/test_gpu.py (skipped without a GPU)."""

from __future__ import annotations

import importlib.util

import pytest

from e3bench.config.run import build_config
from e3bench.config.validate import ConfigError
from e3bench.core import devices
from e3bench.core.errors import E3Error


def test_device_names_parse_to_kind_index_and_the_recorded_name():
    assert [devices.device_kind(d) for d in ("cpu", "cuda", "cuda:3")] == ["cpu", "cuda", "cuda"]
    assert [devices.device_index(d) for d in ("cpu", "cuda", "cuda:3")] == [None, 0, 3]
    assert [devices.canonical(d) for d in ("cpu", "cuda", "cuda:3")] == ["cpu", "cuda:0", "cuda:3"]
    for bad in ("gpu", "cuda:", "cuda:x", "cpu:0", "CUDA", "cuda:-1", ""):
        assert devices.device_problem(bad), bad


@pytest.mark.parametrize("device", ["cuda:1", "cuda:0", "cuda", "cpu"])
def test_config_accepts_cuda_n_from_flags_yaml_and_set(tmp_path, device):
    assert build_config(overrides={"device": device}).device == device
    y = tmp_path / "run.yaml"
    y.write_text(f"device: '{device}'\n")
    assert build_config(yaml_path=y).device == device
    assert build_config(sets=[f"device={device}"]).device == device


def test_bad_device_is_one_line_naming_the_spellings():
    with pytest.raises(ConfigError) as ei:
        build_config(overrides={"device": "gpu1"})
    (line,) = ei.value.one_lines()
    assert line.startswith("--device: bad value for 'device': 'gpu1' is not a device: use cpu, cuda or cuda:N")


def test_device_index_is_part_of_the_identity():
    assert build_config(overrides={"device": "cuda:1"}).config_hash() != build_config(overrides={"device": "cuda:0"}).config_hash()


@pytest.mark.parametrize("count, device, needle", [
    (2, "cuda:2", "--device cuda:2: only 2 GPUs are visible here (cuda:0..cuda:1)"),
    (0, "cuda", "--device cuda: PyTorch sees no CUDA GPU here"),
])  # fmt: skip
def test_gpu_index_is_checked_against_the_visible_count(count, device, needle):
    with pytest.raises(E3Error) as ei:
        devices.check_visible(device, lambda: count)
    assert ei.value.problem == needle
    devices.check_visible("cuda:1", lambda: 2)  # visible: no error
    devices.check_visible("cuda:7", lambda: None)  # cannot tell (no torch / CPU-only torch): the backend decides
    devices.check_visible("cpu", lambda: 0)


def test_runnable_config_checks_the_index_before_the_model_loads(monkeypatch):
    monkeypatch.setattr(devices, "visible_gpus", lambda: 1)
    with pytest.raises(ConfigError) as ei:
        build_config(overrides={"device": "cuda:1", "meter": "none"}, sets=["tasks=none"], runnable=True)
    assert any(line.startswith("--device: --device cuda:1: only 1 GPU is visible here") for line in ei.value.one_lines())
    build_config(overrides={"device": "cuda:1"}, sets=["tasks=none"])  # not runnable (a sweep plan): not checked


def test_capabilities_take_cuda_n_as_a_cuda_device():
    from e3bench.backends.pytorch import PyTorchBackend

    caps = PyTorchBackend.capabilities
    assert caps.check(device="cuda:1", precision="fp16") is None
    assert caps.check(device="cpu", precision="fp16") is not None  # CPU narrows the precisions
    assert caps.precisions_on("cuda:3") == caps.precisions


def test_pytorch_backend_puts_the_model_on_the_gpu_asked_for(tiny_models, monkeypatch):
    """torch.cuda faked to show 2 GPUs; Module.to records where the model goes (no GPU here)."""
    import torch

    from e3bench.backends.models import resolve
    from e3bench.backends.pytorch import PyTorchBackend

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    moved: list[torch.device] = []

    def to(self, *args, **kwargs):
        moved.extend(a for a in args if isinstance(a, torch.device))
        return self

    monkeypatch.setattr(torch.nn.Module, "to", to)
    b = PyTorchBackend()
    info = b.load(resolve(str(tiny_models["decoder"])), "fp32", "cuda:1")
    assert moved == [torch.device("cuda:1")] and info.device == "cuda:1" and b.device == "cuda:1"
    b2 = PyTorchBackend()
    assert b2.load(resolve(str(tiny_models["decoder"])), "fp32", "cuda").device == "cuda:0"  # recorded as used
    with pytest.raises(E3Error, match=r"only 2 GPUs are visible"):
        PyTorchBackend().load(resolve(str(tiny_models["decoder"])), "fp32", "cuda:2")


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime not installed")
def test_onnxruntime_gets_the_cuda_provider_on_device_id_n(monkeypatch):
    import onnxruntime as ort

    from e3bench.backends.onnxrt import _providers

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert _providers("cuda:1") == [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]
    assert _providers("cuda") == [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
    assert _providers("cpu") == ["CPUExecutionProvider"]


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python not installed")
def test_llamacpp_offloads_to_the_one_gpu_asked_for(bundled_gguf, monkeypatch):
    import llama_cpp

    from e3bench.backends.llamacpp import LlamaCppBackend
    from e3bench.backends.models import resolve

    seen: dict = {}

    class Stop(BaseException):
        pass

    def fake_llama(**kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(llama_cpp, "llama_supports_gpu_offload", lambda: True)
    monkeypatch.setattr(llama_cpp, "Llama", fake_llama)
    with pytest.raises(Stop):
        LlamaCppBackend().load(resolve(str(bundled_gguf)), "native", "cuda:1")
    assert (seen["n_gpu_layers"], seen["main_gpu"], seen["split_mode"]) == (-1, 1, llama_cpp.LLAMA_SPLIT_MODE_NONE)
    seen.clear()
    with pytest.raises(Stop):
        LlamaCppBackend().load(resolve(str(bundled_gguf)), "native", "cpu")
    assert seen["n_gpu_layers"] == 0 and "main_gpu" not in seen


def test_memory_check_reads_the_gpu_of_the_device(monkeypatch):
    from e3bench.bench.limits import available_memory
    from fakes_energy import FakeNvml

    nvml = FakeNvml(gpus=4)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert available_memory("cuda:2", nvml=nvml) == (38 * 2**30, "free memory of GPU cuda:2 (NVML)")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")  # cuda:0 is NVML's GPU 3
    assert available_memory("cuda", nvml=nvml)[0] == 37 * 2**30
    assert nvml.initialised == 0


def test_ray_executor_refuses_a_gpu_index_it_cannot_honour():
    from e3bench.sweep.executors.ray import RayExecutor

    with pytest.raises(E3Error, match="--device cuda:1 names a GPU by index") as ei:
        next(RayExecutor().map([build_config(overrides={"device": "cuda:1"}, sets=["tasks=none"])]))
    assert ei.value.fix.startswith("use --device cuda with the ray executor")


def test_cli_accepts_cuda_n(tmp_path):
    """``--device cuda:1`` passes the CLI's checks (it was refused: "use one of 'cpu' or 'cuda'");
    with no GPU here the run then stops at load with the backend's one line."""
    from typer.testing import CliRunner

    from e3bench.cli.app import app

    r = CliRunner().invoke(app, ["run", "--device", "cuda:1", "--tasks", "none", "--meter", "none", "-o", str(tmp_path)])
    assert r.exit_code != 0
    assert "use one of" not in r.output and "cuda:1" in r.output


def test_training_takes_the_same_device_names():
    from e3bench.train.shared.device import resolve_device

    class TwoGpus:
        def is_available(self):
            return True

        def device_count(self):
            return 2

    assert resolve_device("cuda:1", cuda=TwoGpus()) == "cuda:1"
    with pytest.raises(E3Error, match=r"only 2 GPUs are visible"):
        resolve_device("cuda:2", cuda=TwoGpus())
    with pytest.raises(E3Error, match="unknown device 'cuda:x'"):
        resolve_device("cuda:x", cuda=TwoGpus())


def test_training_memory_and_sync_read_the_gpu_of_the_device():
    from e3bench.train.shared.device import synchronize
    from e3bench.train.shared.memory import MemoryTracker

    class Recording:
        def __init__(self):
            self.calls = []

        def reset_peak_memory_stats(self, device=None):
            self.calls.append(("reset", device))

        def memory_allocated(self, device=None):
            self.calls.append(("now", device))
            return 3

        def max_memory_allocated(self, device=None):
            self.calls.append(("allocated", device))
            return 5

        def max_memory_reserved(self, device=None):
            self.calls.append(("reserved", device))
            return 7

        def synchronize(self, device=None):
            self.calls.append(("sync", device))

    cuda = Recording()
    m = MemoryTracker("cuda:1", cuda=cuda)
    m.start()
    figs = m.stop()
    synchronize("cuda:1", cuda=cuda)
    assert [c for c in cuda.calls if c[0] != "now"] == [("reset", "cuda:1"), ("allocated", "cuda:1"), ("reserved", "cuda:1"),
                                                       ("sync", "cuda:1")]  # fmt: skip
    assert {d for what, d in cuda.calls if what == "now"} == {"cuda:1"}  # the allocation at start, of that GPU
    assert (figs.peak_device_memory_bytes, figs.device_memory_reserved_bytes) == (5, 7)
