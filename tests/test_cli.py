"""What a user sees at the command line: one clear line and a nonzero exit for bad input."""

import json

import pytest

from conftest import run_cli


def _assert_user_error(res, needle):
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
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
        "--set", "idle_seconds=0",
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
