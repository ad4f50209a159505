"""Real-GPU tests: the CUDA paths that elsewhere run only against fakes.

Marked ``gpu`` (deselected by default; run with ``pytest -m gpu``) and skipped with the reason
when PyTorch sees no CUDA device or NVML is not installed. They use the tiny fixtures, plus the
bundled model where it is installed.
"""

from __future__ import annotations

import importlib.util
import time

import pytest

from e3bench.core.api import GenParams
from e3bench.config.run import build_config
from e3bench.backends.models import resolve

pytestmark = pytest.mark.gpu


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


needs_cuda = pytest.mark.skipif(not _cuda(), reason="needs an NVIDIA GPU visible to PyTorch (CUDA build)")
needs_nvml = pytest.mark.skipif(
    importlib.util.find_spec("pynvml") is None, reason="needs nvidia-ml-py: pip install 'e3bench[nvml]'"
)


def _backend():
    from e3bench.backends.pytorch import PyTorchBackend

    return PyTorchBackend()


@needs_cuda
def test_cuda_fp32_greedy_matches_cpu(tiny_models):
    spec = resolve(str(tiny_models["decoder"]))
    prompt_text = "the quick brown fox jumps over"
    out = {}
    for device in ("cpu", "cuda"):
        b = _backend()
        b.load(spec, "fp32", device)
        ids = b.encode(prompt_text)
        out[device] = (b.generate([ids], GenParams(max_new_tokens=16))[0].token_ids,
                       b.loglikelihood([(prompt_text, " lazy dog")])[0].logprob)  # fmt: skip
        b.close()
    assert out["cuda"][0] == out["cpu"][0]
    assert out["cuda"][1] == pytest.approx(out["cpu"][1], abs=1e-3)


@needs_cuda
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_half_precisions_generate_and_report_memory(tiny_models, precision):
    import torch

    b = _backend()
    info = b.load(resolve(str(tiny_models["decoder"])), precision, "cuda")
    want = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    assert next(b.model.parameters()).dtype == want and next(b.model.parameters()).is_cuda
    assert info.weights_bytes > 0
    b.reset_peak_memory()
    steps: list[int] = []
    gens = b.generate([b.encode("hello world")] * 3, GenParams(max_new_tokens=8), on_token=steps.append)
    b.synchronize()
    assert steps == list(range(1, 9)) and all(len(g.token_ids) == 8 for g in gens)
    peak, how = b.peak_memory()
    assert peak is not None and peak >= info.weights_bytes // 2
    assert how == "torch.cuda.max_memory_allocated since after load"
    b.close()


@needs_cuda
@pytest.mark.parametrize("precision", ["int8", "int4"])
def test_cuda_torchao_weight_only(tiny_models, precision):
    if importlib.util.find_spec("torchao") is None:
        pytest.skip("torchao not installed: pip install 'e3bench[quant]'")
    spec = resolve(str(tiny_models["decoder"]))
    ref = _backend()
    ref.load(spec, "bf16", "cuda")
    ref_ll = ref.loglikelihood([("the quick brown fox", " jumps over")])[0].logprob
    ref.close()
    b = _backend()
    info = b.load(spec, precision, "cuda")
    assert any("torchao" in n for n in info.notes)
    assert len(b.generate([b.encode("abc")], GenParams(max_new_tokens=8))[0].token_ids) == 8
    ll = b.loglikelihood([("the quick brown fox", " jumps over")])[0].logprob
    # quantized weights move the log-likelihood a little, not wildly
    assert ll == pytest.approx(ref_ll, abs=0.5 if precision == "int8" else 2.0)
    b.close()


def _gpu_burn(seconds: float) -> int:
    import torch

    a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    n = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(20):
            a = (a @ a).clamp_(-1, 1)
        torch.cuda.synchronize()
        n += 20
    return n


@needs_cuda
@needs_nvml
def test_nvml_meter_measures_real_gpu_energy():
    from e3bench.energy.meters.nvml import NvmlMeter

    meter = NvmlMeter(device="cuda:0")
    assert meter.available(), meter.unavailable_reason()
    meter.begin("idle")
    time.sleep(1.0)
    idle = meter.end("idle")
    meter.begin("busy")
    _gpu_burn(2.0)
    busy = meter.end("busy")
    meter.close()
    for r in (idle, busy):
        assert r.method == "measured" and r.sensor.startswith("nvml:") and r.error is None
        assert r.energy_j["total"] > 0
    idle_w = idle.energy_j["total"] / idle.duration_s
    busy_w = busy.energy_j["total"] / busy.duration_s
    limit_w = busy.details["gpus"]["gpu0"]["power_limit_w"]
    # a dense bf16 matmul loop draws clearly more than an idle GPU, and never above the power cap
    assert 5 < idle_w < busy_w <= limit_w * 1.1, (idle_w, busy_w, limit_w)


@needs_cuda
@needs_nvml
def test_run_on_cuda_with_nvml_end_to_end(tiny_models, tmp_path):
    from e3bench.bench.runner import run_one

    cfg = build_config(overrides=dict(
        model=str(tiny_models["decoder"]), device="cuda", dtype="bf16", batch_sizes="1,4",
        max_new_tokens=16, prompt_tokens=32, warmup_iters=1, min_iters=3, min_seconds=0.5,
        meter="auto", idle_seconds=1.0, output_dir=str(tmp_path),
    ))  # fmt: skip
    rec = run_one(cfg)
    assert rec.status == "ok", rec.error
    assert rec.energy.meter == "nvml" and "GPU" in rec.energy.meter_choice_reason
    assert rec.efficiency.peak_device_memory_bytes and rec.efficiency.peak_device_memory_bytes > 0
    assert "max_memory_allocated" in (rec.efficiency.peak_device_memory_method or "")
    for g in rec.efficiency.generation:
        assert g.energy.method == "measured" and g.energy.net_energy_j is not None
        assert g.ttft_ms.mean > 0 and g.decode_tokens_per_s.mean > 0


@needs_cuda
def test_finetune_lora_on_cuda_with_autocast(tiny_models, tmp_path):
    import json
    import random

    from e3bench.train.finetune import FinetuneConfig, run_finetune

    rng = random.Random(0)
    rows = []
    for _ in range(48):
        q = rng.choice(["is it warm", "is it cold", "is it wet"])
        rows.append({"query": q, "choices": ["no", "yes"], "gold": int("warm" in q)})
    train = tmp_path / "train.jsonl"
    train.write_text("\n".join(json.dumps(r) for r in rows))
    for precision in ("bf16", "fp16"):
        cfg = FinetuneConfig(
            model=str(tiny_models["decoder"]), train_file=str(train), max_steps=4, eval_every=2,
            batch_size=4, max_eval_samples=16, device="cuda", precision=precision, meter="auto",
            idle_seconds=0.2, output_dir=str(tmp_path / precision), max_seq_len=64,
        )  # fmt: skip
        rec, _ = run_finetune(cfg)
        assert rec.status == "ok" and rec.steps == 4, rec
