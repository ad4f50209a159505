"""Limits inside one run (issue 13): a hanging meter, the --max-seconds cap, batches that do not
fit in memory, prompts longer than the context, Ctrl-C, unwritable output folders."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import ROOT, message_lines, run_cli
from e3bench.bench.runner import run_one
from e3bench.config.run import build_config
from e3bench.core import registry
from e3bench.core.errors import E3Error
from e3bench.energy.meters import MeterSpec
from fakes.testing import FakeBackend


def _cfg(tiny_models, **kw):
    base = dict(
        model=str(tiny_models["decoder"]), batch_sizes="1", max_new_tokens=4, prompt_tokens=8,
        warmup_iters=0, min_iters=2, min_seconds=0.0, meter="none", idle_seconds=0,
    )  # fmt: skip
    base.update(kw)
    return build_config(overrides=base)


# ------------------------------------------------------------------------- 1. hanging meter
class HangingMeter:
    """Answers the idle window, then never returns from ``end`` of a measured window."""

    name = "hang-test"

    def __init__(self) -> None:
        self.forever = threading.Event()

    def available(self) -> bool:
        return True

    def unavailable_reason(self):
        return None

    def begin(self, window: str) -> None:
        return None

    def end(self, window: str):
        from e3bench.core.api import EnergyReading

        if window.startswith("generate"):
            self.forever.wait()  # a wedged sensor
        return EnergyReading(window, 1.0, {"total": 5.0}, "measured", "hang-test")

    def close(self) -> None:
        return None


@pytest.fixture
def hanging_meter():
    registry.meters.register("hang-test", MeterSpec(build=lambda s: HangingMeter()), replace=True)
    yield
    registry.meters.unregister("hang-test")


def test_a_hanging_meter_times_out_and_the_run_is_recorded(tiny_models, hanging_meter):
    cfg = _cfg(tiny_models, meter="hang-test", meter_timeout_s=0.5, batch_sizes="1,2", idle_seconds=0.1)
    out: dict = {}
    worker = threading.Thread(target=lambda: out.update(rec=run_one(cfg, backend=FakeBackend())), daemon=True)
    t0 = time.perf_counter()
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), "the run hung on the meter"
    rec = out["rec"]
    assert rec.status == "ok" and [g.batch_size for g in rec.efficiency.generation] == [1, 2]
    assert time.perf_counter() - t0 < 15  # one timeout, not one per window
    assert rec.energy.idle.method == "measured"  # the meter answered before it hung
    for g in rec.efficiency.generation:
        assert g.energy.method == "missing"
        assert "meter read timed out" in g.energy.error and "within 0.5 s" in g.energy.error
    assert any("timed out" in w and "'hang-test'" in w for w in rec.warnings)


def test_the_meter_timeout_is_an_option_outside_the_run_identity(tiny_models):
    a, b = _cfg(tiny_models), _cfg(tiny_models, meter_timeout_s=5)
    assert a.meter_timeout_s == 60.0 and b.meter_timeout_s == 5.0
    assert a.config_hash() == b.config_hash()  # sweeps resume across a changed timeout


# --------------------------------------------------------------------- 2. the max_seconds cap
def test_a_measurement_cut_by_max_seconds_says_so(tiny_models):
    cfg = _cfg(tiny_models, min_iters=50, max_seconds=0.3)
    rec = run_one(cfg, backend=FakeBackend(prefill_s=0.05))
    g = rec.efficiency.generation[0]
    assert 2 <= g.iterations < 50 and g.min_iters_asked == 50
    assert g.cut_by_max_seconds is not None
    assert f"{g.iterations} of --min-iters 50 iterations" in g.cut_by_max_seconds
    assert "--max-seconds cap (0.3 s)" in g.cut_by_max_seconds
    assert f"bs1: {g.cut_by_max_seconds}" in rec.warnings


def test_a_measurement_that_met_the_rule_has_no_cut_note(tiny_models):
    g = run_one(_cfg(tiny_models, min_iters=3), backend=FakeBackend()).efficiency.generation[0]
    assert g.iterations == 3 and g.cut_by_max_seconds is None and g.min_iters_asked == 3


def test_run_help_documents_the_cap_and_the_meter_timeout():
    res = run_cli("run", "--help", env={"COLUMNS": "200"}, timeout=120)
    text = " ".join(res.stdout.split())
    assert "--max-seconds" in text and "even below --min-iters" in text
    assert "--meter-timeout-s" in text and "0 = wait forever" in text


# ---------------------------------------------------------------- 3. batches out of memory
OOM_ERRORS = {
    "MemoryError": lambda: MemoryError(),
    "torch CPU allocator": lambda: RuntimeError(
        "[enforce fail at alloc_cpu.cpp:127] data. DefaultCPUAllocator: can't allocate memory: you tried to "
        "allocate 29491200000 bytes. Error code 12 (Cannot allocate memory)"),
    "not enough memory": lambda: RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 8 GB"),
    "CUDA OOM": lambda: __import__("torch").OutOfMemoryError(
        "CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity of 79 GiB"),
}  # fmt: skip


class OomBackend(FakeBackend):
    """Runs out of memory above ``fits`` sequences per batch."""

    name = "oomfake"
    fits = 2
    error = staticmethod(OOM_ERRORS["torch CPU allocator"])

    def generate(self, prompts, params, on_token=None):
        if len(prompts) > self.fits:
            raise self.error()
        return super().generate(prompts, params, on_token)


@pytest.mark.parametrize("kind", list(OOM_ERRORS))
def test_a_batch_out_of_memory_keeps_the_sizes_measured_before(tiny_models, kind):
    backend = OomBackend()
    backend.error = OOM_ERRORS[kind]
    rec = run_one(_cfg(tiny_models, batch_sizes="1,8,16,2"), backend=backend)
    assert rec.status == "ok"
    assert [g.batch_size for g in rec.efficiency.generation] == [1, 2]  # 2 < 8 still runs
    failed = {f.batch_size: f.error for f in rec.efficiency.failed_batches}
    assert list(failed) == [8, 16]
    assert failed[8].startswith("batch size 8 did not fit in host memory (")
    if kind == "torch CPU allocator":
        assert failed[8] == ("batch size 8 did not fit in host memory (RuntimeError: DefaultCPUAllocator: can't "
                             "allocate memory: you tried to allocate 29491200000 bytes. Error code 12 (Cannot "
                             "allocate memory))")  # fmt: skip
    assert failed[16] == "batch size 16 skipped: batch size 8 already ran out of memory"
    assert any(w.startswith("batch size 8 did not fit") for w in rec.warnings)


def test_an_error_that_is_not_out_of_memory_still_fails_the_run(tiny_models):
    backend = OomBackend()
    backend.error = lambda: RuntimeError("shape mismatch")
    with pytest.raises(RuntimeError, match="shape mismatch"):
        run_one(_cfg(tiny_models, batch_sizes="1,4"), backend=backend)


@pytest.mark.parametrize(
    "exc, oom",
    [(MemoryError(), True), (RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"), True),
     (RuntimeError("Failed to allocate memory for requested buffer of size 123"), True),
     (RuntimeError("llama_decode returned -3"), True), (RuntimeError("expanded size 600 vs 512"), False),
     (ValueError("bad"), False), (KeyError("out of memory"), False)],
)  # fmt: skip
def test_out_of_memory_is_recognised(exc, oom):
    from e3bench.bench import limits

    assert limits.out_of_memory(exc) is oom


def _cli_with_fakes(args: list[str], tmp_path: Path, *, backend: str = "OomBackend", timeout: int = 300,
                    popen: bool = False):  # fmt: skip
    """The real CLI (``e3bench.cli.app.main``) in a subprocess with this file's fakes registered
    (e3bench itself comes from the environment, as for ``run_cli``)."""
    code = (
        "import sys; sys.path[:0] = [%r]\n"
        "from e3bench.core import registry\n"
        "import test_run_limits as t\n"
        "registry.backends.register(t.%s.name, t.%s)\n"
        "from e3bench.cli.app import main\n"
        "sys.argv = ['e3bench', *%r]\n"
        "main()\n"
    ) % (str(ROOT / "tests"), backend, backend, args)  # noqa: UP031
    cmd = [sys.executable, "-c", code]
    if popen:
        # a shell's background job inherits SIGINT ignored (POSIX), and Python keeps it so: undo that,
        # as a terminal's Ctrl-C would find it
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"}, cwd=tmp_path,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=tmp_path)


FAST = ["--min-iters", "2", "--min-seconds", "0", "--warmup-iters", "0", "--set", "idle_seconds=0",
        "--max-new-tokens", "4", "--prompt-tokens", "8", "--meter", "none", "--tasks", "none"]  # fmt: skip


def test_cli_batch_out_of_memory_saves_the_record_and_exits_nonzero(tiny_models, tmp_path):
    out = tmp_path / "out"
    res = _cli_with_fakes(["run", "-b", "oomfake", "-m", str(tiny_models["decoder"]), *FAST,
                           "--batch-size", "1,100000", "-o", str(out)], tmp_path)  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    lines = message_lines(res.stderr)  # progress lines aside
    assert len(lines) == 1 and lines[0].startswith("error: batch size 100000 did not fit in host memory")
    assert "batch size 1 measured and saved in" in lines[0] and "fix: use smaller --batch-size" in lines[0]
    (saved,) = out.rglob("*.json")
    rec = json.loads(saved.read_text())
    assert [g["batch_size"] for g in rec["efficiency"]["generation"]] == [1]
    assert rec["efficiency"]["failed_batches"][0]["batch_size"] == 100000


def test_a_kv_cache_that_cannot_fit_is_refused_before_the_model_loads(tiny_models, tmp_path):
    res = run_cli("run", "-m", str(tiny_models["decoder"]), "--batch-size", "1,1000000000", "-o", str(tmp_path),
                  timeout=120)  # fmt: skip
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: batch size 1000000000 does not fit in memory")
    assert "KV cache alone needs" in lines[0] and "MemAvailable" in lines[0]
    assert "· loading" not in res.stdout + res.stderr and not any(tmp_path.rglob("*.json"))


def test_kv_cache_estimate_of_a_llama_config():
    from e3bench.bench import limits

    cfg = {"architectures": ["LlamaForCausalLM"], "num_hidden_layers": 30, "num_attention_heads": 9,
           "num_key_value_heads": 3, "hidden_size": 576}  # SmolLM2-135M
    per, how = limits.kv_bytes_per_token(cfg, "fp32", "pytorch")
    assert per == 2 * 30 * 3 * 64 * 4 and "3 KV heads" in how
    err = limits.memory_problem(cfg, architecture="decoder-only", batch_sizes=(1, 100000), tokens=160,
                                dtype="fp32", backend="pytorch", device="cpu", available=(6 * 10**9, "test"))
    assert err is not None and err.problem.startswith("batch size 100000 does not fit in memory")
    assert "737.3 GB" in err.problem and "at most ~813" in err.fix
    assert limits.memory_problem(cfg, architecture="decoder-only", batch_sizes=(1, 8), tokens=160, dtype="fp32",
                                 backend="pytorch", device="cpu", available=(6 * 10**9, "test")) is None


# --------------------------------------------------------------------- 4. context length
@pytest.mark.parametrize(
    "model, args, needle",
    [("decoder", ["--prompt-tokens", "600"], "--prompt-tokens 600 + --max-new-tokens 32 = 632 tokens exceed"),
     ("decoder", ["--prompt-tokens", "8", "--max-new-tokens", "600"], "= 608 tokens exceed the context of 512"),
     ("encoder", ["--prompt-tokens", "600"], "--prompt-tokens 600 exceeds the context of 512 tokens")],
)  # fmt: skip
def test_prompts_longer_than_the_context_are_refused_before_the_model_loads(tiny_models, tmp_path, model, args, needle):
    res = run_cli("run", "-m", str(tiny_models[model]), *args, "-o", str(tmp_path), timeout=120)
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], res.stderr
    assert "max_position_embeddings in the model's config.json" in lines[0] and "fix: lower --prompt-tokens" in lines[0]
    assert "· loading" not in res.stdout + res.stderr


class SmallContextBackend(FakeBackend):
    """A backend whose own context (e.g. llama.cpp's n_ctx) is smaller than the model's."""

    context_length = 64


def test_the_backends_context_length_is_checked_after_load(tiny_models, tmp_path):
    backend = SmallContextBackend()
    with pytest.raises(E3Error) as err:
        run_one(_cfg(tiny_models, prompt_tokens=60, max_new_tokens=10), backend=backend)
    assert "--prompt-tokens 60 + --max-new-tokens 10 = 70 tokens exceed the context of 64 tokens" in err.value.problem
    assert "fake backend's context_length" in err.value.problem
    prompts = tmp_path / "long.txt"
    prompts.write_text("word " * 700 + "\n")  # the fake: one token per character
    with pytest.raises(E3Error, match=r"the longest prompt \(file: .*long.txt \(1 prompts\)\) 3499 \+"):
        run_one(_cfg(tiny_models, prompts=str(prompts)), backend=FakeBackend())


def test_base_backend_context_length_is_the_trained_context(tiny_models):
    from e3bench.backends.pytorch import PyTorchBackend
    from e3bench.backends.models import resolve

    b = PyTorchBackend()
    assert b.context_length is None  # before load
    b.load(resolve(str(tiny_models["decoder"])), "fp32", "cpu")
    try:
        assert b.context_length == 512
    finally:
        b.close()


# ------------------------------------------------------------------------------ 5. Ctrl-C
def test_ctrl_c_says_what_was_interrupted_and_that_earlier_results_are_intact(tiny_models, tmp_path):
    out = tmp_path / "out"
    (out / "runs").mkdir(parents=True)
    earlier = out / "runs" / "earlier.json"
    earlier.write_text('{"earlier": true}')
    args = ["run", "-b", "oomfake", "-m", str(tiny_models["decoder"]), *FAST, "--batch-size", "1",
            "--min-seconds", "60", "-o", str(out)]  # fmt: skip
    proc = _cli_with_fakes(args, tmp_path, popen=True)
    seen = ""
    deadline = time.time() + 120
    while "generation, batch 1" not in seen and time.time() < deadline:
        line = proc.stderr.readline()  # progress is on stderr
        if not line:
            break
        seen += line
    assert "generation, batch 1" in seen, seen + proc.stdout.read()
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    lines = message_lines(err)  # progress lines aside
    assert len(lines) == 1, err
    assert lines[0].startswith("interrupted (Ctrl-C): e3bench run of ")
    assert "during: generation, batch 1" in lines[0] and f"intact in {out / 'runs'}" in lines[0]
    assert earlier.read_text() == '{"earlier": true}' and list(out.rglob("*.json")) == [earlier]


def test_interrupted_line_without_a_known_step():
    from e3bench.cli import common

    common.doing("report")
    line = common.interrupted_line()
    assert line.startswith("interrupted (Ctrl-C): e3bench report;") and "intact" in line


# ---------------------------------------------------------------- 6. unwritable output folder
@pytest.mark.parametrize("command", ["run", "finetune", "train"])
def test_an_output_dir_that_is_a_file_fails_before_any_work(tiny_models, tmp_path, command):
    afile = tmp_path / "afile"
    afile.write_text("x")
    args = {"run": ["run"], "finetune": ["finetune", "-m", str(tiny_models["decoder"]), "--max-steps", "1"],
            "train": ["train", "--suite", str(ROOT / "configs" / "train")]}[command]  # fmt: skip
    t0 = time.perf_counter()
    res = run_cli(*args, "-o", str(afile), timeout=300)
    assert res.returncode == 2, res.stdout + res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "is a file" in lines[0] and "fix: choose a writable --output-dir" in lines[0], res.stderr
    assert time.perf_counter() - t0 < 60  # no model loaded, nothing trained
