"""What a user sees at the command line: one clear line and a nonzero exit for bad input."""

import json

import pytest

from conftest import message_lines, run_cli


def _assert_user_error(res, needle):
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    lines = message_lines(res.stderr)  # progress lines (· loading ...) aside
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: ") and "fix:" in lines[0]
    assert needle in lines[0]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--model", "smollm-135m"], "did you mean smollm2-135m"),
        (["--model", "/no/such/file.gguf"], "model file not found"),
        (["--batch-size", "0"], "batch sizes must be ≥ 1"),
        (["--dtype", "fp8"], "bad value for 'dtype'"),
        (["--set", "modle=x"], "did you mean 'model'"),
        (["--meter", "nvm"], "unknown meter 'nvm'"),
        (["--region", "Atlantis"], "Atlantis"),
        (["-O", "n_ctx=4096"], "backend 'pytorch' has no option 'n_ctx'"),
    ],
)
def test_bad_input_is_one_line(args, needle, tmp_path):
    res = run_cli("run", *args, "-o", str(tmp_path), timeout=120)
    _assert_user_error(res, needle)
    assert not any(tmp_path.rglob("*.json"))  # nothing written for a failed start


def test_unsupported_dtype_and_missing_gpu(tiny_models, tmp_path):
    res = run_cli("run", "--model", str(tiny_models["decoder"]), "--dtype", "fp16", "-o", str(tmp_path))
    _assert_user_error(res, "not supported on cpu")
    import torch

    if not torch.cuda.is_available():
        res = run_cli("run", "--model", str(tiny_models["decoder"]), "--device", "cuda", "-o", str(tmp_path))
        _assert_user_error(res, "no CUDA GPU")


def test_corrupt_gguf(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 100)
    res = run_cli("run", "--model", str(bad), "-o", str(tmp_path), "--set", f"cache_dir={tmp_path / 'c'}")
    _assert_user_error(res, "corrupt or truncated")


def test_bad_yaml_key(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("batch_sizes: [1]\nmax_new_tokenz: 4\n")
    res = run_cli("run", "--config", str(cfg), "-o", str(tmp_path))
    _assert_user_error(res, "max_new_tokenz")


def test_earlier_results_survive_a_failed_run(tiny_models, tmp_path):
    ok = run_cli(
        "run", "--model", str(tiny_models["decoder"]), "--batch-size", "1", "--max-new-tokens", "3",
        "--prompt-tokens", "8", "--min-iters", "2", "--min-seconds", "0", "--meter", "none", "-o", str(tmp_path),
        "--set", "idle_seconds=0", "--tasks", "none",
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    files = list(tmp_path.rglob("*.json"))
    assert len(files) == 1
    before = files[0].read_text()
    rec = json.loads(before)
    assert rec["schema_version"] == 1 and rec["status"] == "ok"
    assert "TTFT ms" in ok.stdout and "result:" in ok.stdout
    bad = run_cli("run", "--model", "nope-model", "-o", str(tmp_path))
    assert bad.returncode == 2
    assert files[0].read_text() == before and len(list(tmp_path.rglob("*.json"))) == 1


def test_env_and_models_commands():
    res = run_cli("env")
    assert res.returncode == 0 and "cpu_model" in res.stdout
    res = run_cli("models")
    assert res.returncode == 0 and "smollm2-135m" in res.stdout and "pytorch" in res.stdout


TYPO_SWEEP = """name: typo
base:
  meter: nvm
  region: Atlantis
  tasks: [hellaswagg]
  backend: pytorch
  backend_options: {n_ctx: 4096}
grid:
  dtype: [fp32, bf16]
"""


def test_sweep_with_typos_fails_before_any_run(tmp_path):
    """Issue 11's case: this used to plan 2 runs and fail in each run's subprocess."""
    y = tmp_path / "typo.yaml"
    y.write_text(TYPO_SWEEP)
    out = tmp_path / "out"
    res = run_cli("sweep", str(y), "-o", str(out), timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr + res.stdout
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert lines[0] == f"error: {y}:3 (base.meter): unknown meter 'nvm' — fix: did you mean 'nvml'?"
    assert lines[1].startswith(f"error: {y}:4 (base.region): unknown grid region 'Atlantis'")
    assert lines[2] == f"error: {y}:5 (base.tasks.0): unknown task 'hellaswagg' — fix: did you mean 'hellaswag'?"
    assert "sweep 'typo'" not in res.stdout  # nothing was planned, so nothing ran
    assert not out.exists()
    assert len(lines) == 4, res.stderr
    assert lines[3].startswith(f"error: {y}:7 (base.backend_options.n_ctx): backend 'pytorch' has no option 'n_ctx'")


def test_run_with_typos_fails_before_loading_the_model(tmp_path):
    res = run_cli("run", "--meter", "nvm", "--region", "Atlantis", "--tasks", "hellaswagg,mmlu", "--threads", "0",
                  "-o", str(tmp_path), timeout=120)  # fmt: skip
    assert res.returncode == 2 and "Traceback" not in res.stderr + res.stdout
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert lines[0].startswith("error: --threads: bad value for 'threads': must be ≥ 1 (got 0)")
    assert lines[1:3] == ["error: --meter: unknown meter 'nvm' — fix: did you mean 'nvml'?",
                          "error: --region: unknown grid region 'Atlantis' (did you mean NL, US-IL?) — fix: use one of: "
                          + lines[2].split("use one of: ", 1)[-1]]  # fmt: skip
    assert lines[3:] == ["error: --tasks: unknown task 'hellaswagg' — fix: did you mean 'hellaswag'?"]
    assert "· loading" not in res.stdout + res.stderr and not any(tmp_path.iterdir())


def test_unknown_executor_fails_before_planning(tmp_path):
    y = tmp_path / "s.yaml"
    y.write_text("name: e\nbase:\n  meter: nvm\ngrid:\n  dtype: [fp32]\n")
    res = run_cli("sweep", str(y), "--executor", "raay", "-o", str(tmp_path / "out"))
    assert res.returncode == 2
    assert res.stderr.strip() == "error: unknown executor 'raay' — fix: did you mean 'ray'?"


def test_unwritable_output_dir_fails_before_the_run(tmp_path):
    """A72/S19: these used to fail only after the whole benchmark had run."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    res = run_cli("run", "-o", str(afile / "sub"), timeout=120)
    _assert_user_error(res, f"cannot write results under {afile / 'sub' / 'runs'}: {afile} is a file")
    y = tmp_path / "s.yaml"
    y.write_text("name: w\ngrid:\n  seed: [0, 1]\n")
    res = run_cli("sweep", str(y), "-o", str(afile), timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip() == f"error: cannot write results under {afile / 'w'}: {afile} is a file — fix: choose a writable --output-dir"
    assert "FAILED" not in res.stdout and "done:" not in res.stdout


def test_export_to_a_bad_place_is_one_line(tmp_path):
    """E03/E06: a directory, or a path under a file, gave a traceback."""
    from e3bench.bench.envinfo import collect
    from e3bench.config.run import build_config
    from e3bench.results import store
    from e3bench.results.schema import failed_record

    cfg = build_config(overrides={"output_dir": str(tmp_path / "res")})
    store.save(failed_record(cfg, "x", collect(sample_cpu=False)), cfg.output_dir, cfg.sweep)
    afile = tmp_path / "afile"
    afile.write_text("x")
    (tmp_path / "d.csv").mkdir()
    res = run_cli("export", str(tmp_path / "res"), "-o", str(tmp_path / "d.csv"))
    _assert_user_error(res, "it is a directory")
    for out in (afile / "t.csv", afile / "t.parquet"):
        res = run_cli("export", str(tmp_path / "res"), "-o", str(out))
        _assert_user_error(res, f"cannot write {out}: ")


def test_pip_lines_and_hashes_are_printed_as_text_not_rich_markup(tmp_path):
    """Install hints lost their extra: rich read "[llamacpp]" in "e3bench[llamacpp]" as a style
    tag and printed "pip install 'e3bench'"; the same swallowed "[<config hash>]" in dry runs."""
    import importlib.util

    res = run_cli("plugins")
    assert res.returncode == 0, res.stderr
    if importlib.util.find_spec("llama_cpp") is None:
        assert "pip install 'e3bench[llamacpp]'" in res.stdout
    sweep = tmp_path / "s.yaml"
    sweep.write_text("name: s\nbase: {model: smollm2-135m, meter: none}\ngrid: {dtype: [fp32]}\n")
    res = run_cli("sweep", str(sweep), "--dry-run", "-o", str(tmp_path / "out"))
    assert res.returncode == 0, res.stderr
    line = next(ln for ln in res.stdout.splitlines() if "would run" in ln)
    assert line.rstrip().endswith("]") and "[" in line, line
