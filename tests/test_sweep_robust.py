"""Sweeps under concurrency, hangs and failures, through the real CLI in subprocesses: claims
(two sweeps on one folder run each configuration once; stale claims are taken over), run
timeouts, the exit status and failure summary, install hints that keep their extra, the
precision sweep's up-front skips, thread settings per executor, and labels that tell
configurations apart."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import pytest

from e3bench.core import registry
from fakes.subproc import ROOT, plugin_env

FAST = """  batch_sizes: [1]
  max_new_tokens: 2
  prompt_tokens: 4
  min_iters: 1
  min_seconds: 0
  warmup_iters: 0
  meter: none
  idle_seconds: 0
"""


def _sweep_file(tmp_path: Path, model: Path, *, name: str, grid: str, top: str = "") -> Path:
    y = tmp_path / f"{name}.yaml"
    y.write_text(f"name: {name}\n{top}base:\n  model: \"{model}\"\n  backend: fake\n{FAST}grid:\n{grid}")
    return y


def _sweep(*args: str, env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "e3bench", "sweep", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)  # fmt: skip


def _records(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


# ------------------------------------------------------------------------------ 1. concurrency
@pytest.mark.slow
def test_two_sweeps_on_one_folder_run_each_configuration_once(tmp_path, tiny_models):
    env = plugin_env(tmp_path / "plug")
    y = _sweep_file(tmp_path, tiny_models["decoder"], name="shared", grid="  seed: [0, 1, 2, 3, 4, 5]\n"
                    "  backend_options: [{prefill_s: 0.5}]\n")  # fmt: skip
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "e3bench", "sweep", str(y), "-o", str(out)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]  # fmt: skip
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    stdout = "\n".join(o[0] for o in outs)
    ran = [ln for ln in stdout.splitlines() if "] ok " in ln]
    skipped = [ln for ln in stdout.splitlines() if "] skip " in ln]
    assert len(ran) == 6, stdout  # before claims: 12, every configuration run by both sweeps
    assert len(skipped) == 6 and all("another process" in ln for ln in skipped), stdout
    recs = _records(out / "shared")
    assert sorted(r["config"]["seed"] for r in recs) == [0, 1, 2, 3, 4, 5]
    assert all(r["status"] == "ok" for r in recs)
    assert not list((out / "shared" / ".claims").glob("*.claim"))  # every claim released


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_claims_live_stale_and_taken_over(tmp_path):
    from e3bench.sweep.claims import Claim, Holder, acquire

    path = tmp_path / ".claims" / "abc.claim"
    mine = acquire(path, timeout_s=100)
    assert isinstance(mine, Claim)
    other = acquire(path, timeout_s=100)  # the same live process (this one) holds it
    assert isinstance(other, Holder) and other.pid == os.getpid() and other.host == platform.node()
    mine.release()
    assert not path.exists()
    # a claim whose process died on this host is stale: taken over, naming the old holder
    path.write_text(json.dumps({"pid": _dead_pid(), "host": platform.node(), "process_started": 1.0,
                                "claimed_at": time.time(), "timeout_s": 100}))  # fmt: skip
    taken = acquire(path, timeout_s=100)
    assert isinstance(taken, Claim) and "its process is gone" in taken.took_over
    assert json.loads(path.read_text())["pid"] == os.getpid()
    taken.release()
    # another host's claim: live until older than its timeout plus the grace
    path.write_text(json.dumps({"pid": 1, "host": "elsewhere", "claimed_at": time.time(), "timeout_s": 100}))
    assert isinstance(acquire(path, timeout_s=100), Holder)
    path.write_text(json.dumps({"pid": 1, "host": "elsewhere", "claimed_at": time.time() - 1000, "timeout_s": 100}))
    old = acquire(path, timeout_s=100)
    assert isinstance(old, Claim) and "older than its run timeout of 100 s" in old.took_over


def test_sweep_skips_a_live_claim_and_takes_over_a_dead_one(tmp_path, tiny_models):
    from e3bench.config.run import build_config
    from e3bench.results.store import claim_path
    from e3bench.sweep.claims import Held
    from e3bench.sweep.executors.local import LocalExecutor
    from fakes.testing import FakeBackend

    registry.backends.register("fake", FakeBackend)
    try:
        cfgs = [build_config(overrides=dict(model=str(tiny_models["decoder"]), backend="fake", seed=s, batch_sizes="1",
                                            max_new_tokens=2, prompt_tokens=4, min_iters=1, min_seconds=0,
                                            warmup_iters=0, meter="none", idle_seconds=0, output_dir=str(tmp_path),
                                            sweep="c"))  # fmt: skip
                for s in (0, 1)]
        live, dead = (claim_path(tmp_path, "c", c.config_hash()) for c in cfgs)
        live.parent.mkdir(parents=True)
        import psutil

        live.write_text(json.dumps({"pid": os.getpid(), "host": platform.node(), "claimed_at": time.time(),
                                    "process_started": psutil.Process().create_time(), "timeout_s": 100}))  # fmt: skip
        dead.write_text(json.dumps({"pid": _dead_pid(), "host": platform.node(), "claimed_at": time.time(),
                                    "timeout_s": 100}))  # fmt: skip
        out = list(LocalExecutor(in_process=True).map(cfgs))
    finally:
        registry.backends.unregister("fake")
    assert isinstance(out[0], Held) and f"running in another process (pid {os.getpid()} on" in out[0].by
    assert not isinstance(out[1], Held) and out[1].status == "ok"  # the dead sweep's run is run again
    assert live.exists() and not dead.exists()  # the live claim untouched; ours released


# ------------------------------------------------------------------------------ 2.+3. timeouts, exit status
@pytest.mark.slow
def test_hanging_run_times_out_as_a_failed_record_and_the_sweep_exits_1(tmp_path, tiny_models):
    env = plugin_env(tmp_path / "plug")
    y = _sweep_file(tmp_path, tiny_models["decoder"], name="hang",
                    grid="  backend_options: [{prefill_s: 3600}, {prefill_s: 0.001}]\n")  # fmt: skip
    t0 = time.time()
    res = _sweep(str(y), "-o", str(tmp_path / "out"), "--timeout-s", "25", env=env)
    assert time.time() - t0 < 200
    assert res.returncode == 1, res.stderr[-2000:]
    recs = {r["config"]["backend_options"]["prefill_s"]: r for r in _records(tmp_path / "out" / "hang")}
    assert recs[3600]["status"] == "failed" and recs[3600]["error"].startswith("timeout: ")
    assert "25 s limit" in recs[3600]["error"]
    assert recs[0.001]["status"] == "ok"  # the sweep went on to the next configuration
    lines = res.stdout.splitlines()
    assert "done: 1 ok, 1 failed; results in" in res.stdout
    i = next(i for i, ln in enumerate(lines) if ln.startswith("failed runs (1;"))
    assert lines[i + 1].startswith("  tiny-llama fake fp32 cpu [prefill_s=3600]: timeout: ")


def test_timeout_from_the_sweep_file_and_bad_values(tmp_path):
    from e3bench.cli.sweep import _timeout
    from e3bench.config.validate import ConfigError
    from e3bench.core.errors import E3Error
    from e3bench.sweep.plan import expand

    y = tmp_path / "t.yaml"
    y.write_text("name: t\ntimeout_s: 90\ngrid:\n  seed: [0]\n")
    plan = expand(y)
    assert plan.timeout_s == 90.0
    assert _timeout(None, plan.timeout_s) == 90.0 and _timeout(5, plan.timeout_s) == 5
    with pytest.raises(E3Error, match="--timeout-s must be a number of seconds"):
        _timeout(-1, None)
    y.write_text("name: t\ntimeout_s: -3\ngrid:\n  seed: [0]\n")
    with pytest.raises(ConfigError) as ei:
        expand(y)
    assert ei.value.one_lines() == [f"{y}:2 (timeout_s): timeout_s must be a number of seconds ≥ 0 (got -3) — fix: "
                                    "e.g. timeout_s: 3600 (0: no limit)"]  # fmt: skip


@pytest.mark.slow
def test_failed_sweep_exits_nonzero_with_one_line_per_failed_configuration(tmp_path, tiny_models):
    env = plugin_env(tmp_path / "plug")
    y = _sweep_file(tmp_path, tiny_models["decoder"], name="f", grid="  seed: [0]\n")
    y.write_text(y.read_text().replace(str(tiny_models["decoder"]), str(tmp_path / "no-such-model")))
    res = _sweep(str(y), "-o", str(tmp_path / "out"), env=env)
    assert res.returncode == 1, res.stdout + res.stderr[-2000:]
    lines = res.stdout.splitlines()
    assert lines[-2] == "failed runs (1; rerun the sweep to retry them):"
    assert lines[-1].startswith("  no-such-model fake fp32 cpu: ") and "no-such-model" in lines[-1][30:]


# ------------------------------------------------------------------------------ 4.+5. extras
def test_precision_sweep_skips_int8_without_torchao_in_dry_run_and_real_plan(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchao", None)  # the README's default setup: no torchao
    from e3bench.sweep.plan import expand

    plan = expand(ROOT / "configs" / "sweeps" / "smollm2-precisions.yaml", output_dir=str(tmp_path))
    assert [c.dtype for c in plan.runs] == ["fp32", "bf16"]
    reasons = {s.config.dtype: s.reason for s in plan.skipped}
    assert reasons["int8"] == ("precision 'int8' needs the Python package 'torchao', which is not installed "
                               "(pip install 'e3bench[quant]')")  # fmt: skip
    assert "fp16" in reasons


def test_precision_sweep_dry_run_through_the_cli_names_the_extra(tmp_path):
    env = plugin_env(tmp_path / "plug", hide=("torchao",))
    res = _sweep(str(ROOT / "configs" / "sweeps" / "smollm2-precisions.yaml"), "-o", str(tmp_path), "--dry-run",
                 env=env)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    assert ("  skip smollm2-135m pytorch int8 cpu: precision 'int8' needs the Python package 'torchao', which is "
            "not installed (pip install 'e3bench[quant]')") in res.stdout.splitlines()  # fmt: skip
    would = [ln for ln in res.stdout.splitlines() if "would run" in ln]
    assert [ln.split()[4] for ln in would] == ["fp32", "bf16"]


def test_run_int8_without_torchao_fails_before_loading(tmp_path):
    from conftest import run_cli

    env = plugin_env(tmp_path / "plug", hide=("torchao",))
    res = run_cli("run", "--dtype", "int8", "-o", str(tmp_path), env=env)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "error: --dtype: precision 'int8' needs the Python package 'torchao', which is not installed — fix: "
        "pip install 'e3bench[quant]'"
    ]
    assert "loading" not in res.stdout and not list(tmp_path.rglob("*.json"))


def test_tracker_without_its_extra_fails_before_running(tmp_path):
    from conftest import run_cli

    env = plugin_env(tmp_path / "plug", hide=("mlflow",))
    res = run_cli("run", "--trackers", "mlflow", "-o", str(tmp_path), env=env)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "error: --trackers: the mlflow tracker needs the Python package 'mlflow', which is not installed — fix: "
        "pip install 'e3bench[trackers]'"
    ]
    assert res.stdout == "" and not list(tmp_path.rglob("*.json"))


def test_every_install_hint_is_the_one_function():
    from e3bench.core.errors import MissingExtra, install_hint

    assert install_hint("quant") == "pip install 'e3bench[quant]'"
    assert MissingExtra("torchao", "quant", "x").fix == install_hint("quant")
    hand_written = []
    for p in (ROOT / "src" / "e3bench").rglob("*.py"):
        text = p.read_text()
        if "pip install 'e3bench[" in text and p.name != "errors.py":
            hand_written.append(str(p.relative_to(ROOT)))
    assert hand_written == []


# ------------------------------------------------------------------------------ 6. threads
def test_runs_get_the_same_threads_whatever_the_executors_environment():
    from e3bench.config.run import RunConfig
    from e3bench.core.host import env_threads, physical_cores_available
    from e3bench.sweep.executors.worker import run_env

    ray_worker = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PATH": "/bin"}
    env = run_env(RunConfig(), None, ray_worker)  # the driver had no OMP_NUM_THREADS
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == str(physical_cores_available()) and env["PATH"] == "/bin"
    assert run_env(RunConfig(), 3, ray_worker)["OMP_NUM_THREADS"] == "3"  # the driver's setting
    assert run_env(RunConfig(threads=2), 3, ray_worker)["OMP_NUM_THREADS"] == "2"  # the config's wins
    assert env_threads({"OMP_NUM_THREADS": "4"}) == 4 and env_threads({"OMP_NUM_THREADS": "x"}) is None


@pytest.mark.slow
def test_ray_worker_function_runs_with_the_drivers_threads(tmp_path, tiny_models, monkeypatch):
    """What a Ray worker does (its environment has OMP_NUM_THREADS=1): the run gets the driver's
    thread settings (here: none, so the host default), and the record states them."""
    from e3bench.config.run import build_config
    from e3bench.results.schema import ResultRecord
    from e3bench.sweep.executors.ray import _remote_run
    from e3bench.core.host import physical_cores_available as default_threads

    if default_threads() == 1:
        pytest.skip("one core: the host default is Ray's 1 thread")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MKL_NUM_THREADS", "1")
    cfg = build_config(overrides=dict(model=str(tiny_models["decoder"]), batch_sizes="1", max_new_tokens=2,
                                      prompt_tokens=4, min_iters=1, min_seconds=0, warmup_iters=0, meter="none",
                                      idle_seconds=0, output_dir=str(tmp_path), sweep="r"))  # fmt: skip
    rec = ResultRecord.model_validate_json(_remote_run(cfg.model_dump_json(), 300, None))
    assert rec.status == "ok", rec.error
    n = default_threads()
    assert rec.manifest.thread_env["OMP_NUM_THREADS"] == str(n) and rec.manifest.thread_env["MKL_NUM_THREADS"] == str(n)
    assert rec.manifest.torch_threads == n


# ------------------------------------------------------------------------------ 7. labels
def test_labels_tell_configurations_apart():
    from e3bench.config.run import RunConfig
    from e3bench.results.labels import config_label, distinct_labels

    a = RunConfig(backend_options={"compile": True})
    b = RunConfig()
    c = RunConfig(seed=1)
    assert config_label(a) == "smollm2-135m pytorch fp32 cpu [compile=True]"
    assert config_label(b.model_dump(mode="json")) == "smollm2-135m pytorch fp32 cpu"
    assert distinct_labels([a, b, c]) == ["smollm2-135m pytorch fp32 cpu [compile=True]",
                                          "smollm2-135m pytorch fp32 cpu (seed=0)",
                                          "smollm2-135m pytorch fp32 cpu (seed=1)"]  # fmt: skip
    same = RunConfig(output_dir="elsewhere")  # where results go is not part of a configuration
    assert distinct_labels([b, same]) == ["smollm2-135m pytorch fp32 cpu"] * 2
    # one configuration (one config hash) is one label, whatever only its meter's patience differs in
    patient = RunConfig(meter_timeout_s=60)
    assert patient.config_hash() == b.config_hash()
    assert distinct_labels([b, patient]) == ["smollm2-135m pytorch fp32 cpu"] * 2


def test_sweep_dry_run_labels_include_backend_options(tmp_path):
    from rich.console import Console

    from e3bench.cli.sweep import run_sweep
    from fakes.toy_backend import registered

    y = tmp_path / "s.yaml"
    y.write_text("name: k\nbase:\n  backend: toy\ngrid:\n  backend_options: [{width: 2}, {width: 4}]\n")
    out = tmp_path / "plan.txt"
    with registered(), open(out, "w") as fh:
        run_sweep(y, executor="local", output_dir=str(tmp_path / "o"), ray_address=None, dry_run=True,
                  console=Console(file=fh, width=200))  # fmt: skip
    would = [ln.split(" [")[0:2] for ln in out.read_text().splitlines() if "would run" in ln]
    assert [w[1] for w in would] == ["width=2]", "width=4]"]


def test_a_damaged_claim_file_goes_stale(tmp_path):
    from e3bench.sweep.claims import GRACE_S, Claim, Holder, acquire

    path = tmp_path / "x.claim"
    path.write_text("{not json")
    assert isinstance(acquire(path, timeout_s=10), Holder)  # fresh: someone may be using it
    old = time.time() - 3 * GRACE_S
    os.utime(path, (old, old))
    assert isinstance(acquire(path, timeout_s=10), Claim)


def test_a_batch_size_that_failed_is_in_the_sweeps_failure_summary(tmp_path):
    from rich.console import Console

    from e3bench.bench import envinfo
    from e3bench.cli.sweep import run_sweep
    from e3bench.results.schema import Efficiency, FailedBatch, failed_record

    class Canned:
        """Returns an ok record whose batch 64 ran out of memory (what the runner stores)."""

        def __init__(self, **_):
            pass

        def map(self, configs):
            for cfg in configs:
                rec = failed_record(cfg, "", envinfo.collect(sample_cpu=False))
                eff = Efficiency(load_time_s=1.0, load_note="", prompt_source="synthetic", peak_rss_bytes=1,
                                 failed_batches=[FailedBatch(batch_size=64, error="out of memory")])  # fmt: skip
                yield rec.model_copy(update={"status": "ok", "error": None, "efficiency": eff, "duration_s": 1.0})

    y = tmp_path / "s.yaml"
    y.write_text("name: b\nbase:\n  meter: none\ngrid:\n  batch_sizes: [[1, 64]]\n")
    registry.executors.register("canned", Canned)
    try:
        with open(tmp_path / "out.txt", "w") as fh:
            failed = run_sweep(y, executor="canned", output_dir=str(tmp_path / "o"), ray_address=None, dry_run=False,
                               console=Console(file=fh, width=200))  # fmt: skip
    finally:
        registry.executors.unregister("canned")
    assert failed == ["smollm2-135m pytorch fp32 cpu: batch size 64 not measured: out of memory"]


def test_ctrl_c_in_a_sweep_names_the_sweep_progress_and_results_folder(tmp_path):
    """Ctrl-C during a sweep: the line names the sweep, how many configurations finished
    (and the last one) and where the earlier results are."""
    from rich.console import Console

    from e3bench.bench import envinfo
    from e3bench.cli import common
    from e3bench.cli.sweep import run_sweep
    from e3bench.results.schema import failed_record

    class OneThenCtrlC:
        """Yields one finished record, then the user presses Ctrl-C."""

        def __init__(self, **_):
            pass

        def map(self, configs):
            rec = failed_record(configs[0], "", envinfo.collect(sample_cpu=False))
            yield rec.model_copy(update={"status": "ok", "error": None, "duration_s": 1.0})
            raise KeyboardInterrupt

    y = tmp_path / "s.yaml"
    y.write_text("name: cc\nbase:\n  meter: none\ngrid:\n  seed: [1, 2, 3]\n")
    registry.executors.register("ctrlc", OneThenCtrlC)
    try:
        with open(tmp_path / "out.txt", "w") as fh, pytest.raises(KeyboardInterrupt):
            run_sweep(y, executor="ctrlc", output_dir=str(tmp_path / "o"), ray_address=None, dry_run=False,
                      console=Console(file=fh, width=200))  # fmt: skip
    finally:
        registry.executors.unregister("ctrlc")
    line = common.interrupted_line()
    assert line.startswith("interrupted (Ctrl-C): e3bench sweep of sweep 'cc', during: 3 configurations to run, "
                           "1 finished (last: smollm2-135m pytorch fp32 cpu (seed=1))"), line  # fmt: skip
    assert f"intact in {tmp_path / 'o' / 'cc'}" in line


@pytest.mark.slow
def test_sigterm_to_the_sweep_alone_stops_its_run_and_releases_the_claim(tmp_path, tiny_models):
    """``kill <sweep pid>`` (timeout, a scheduler): the run the sweep started must not go on as
    an orphan (it kept running unclaimed, so a second sweep ran the same configuration at once);
    the sweep says what was interrupted and exits 143."""
    import psutil

    env = plugin_env(tmp_path / "plug")
    y = _sweep_file(tmp_path, tiny_models["decoder"], name="term", grid="  backend_options: [{prefill_s: 3600}]\n")
    proc = subprocess.Popen([sys.executable, "-m", "e3bench", "sweep", str(y), "-o", str(tmp_path / "out")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)  # fmt: skip
    deadline = time.time() + 120
    children: list = []
    while time.time() < deadline and not children:
        time.sleep(0.5)
        children = [c for c in psutil.Process(proc.pid).children(recursive=True) if "worker" in " ".join(c.cmdline())]
    assert children, "the sweep never started its run"
    time.sleep(2)
    proc.terminate()  # SIGTERM to the sweep process only, not its group
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("interrupted (SIGTERM): e3bench sweep of sweep 'term'")
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"orphaned run processes: {[p.pid for p in alive]}"
    assert not list((tmp_path / "out" / "term").rglob("*.claim"))
