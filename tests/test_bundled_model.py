"""End to end on the real bundled SmolLM2-135M (GGUF → PyTorch). Slow: ~1–3 minutes."""

import json

import pytest

from conftest import run_cli

pytestmark = pytest.mark.slow


def test_e3bench_run_on_bundled_model(bundled_gguf, tmp_path):
    res = run_cli(
        "run", "--batch-size", "1,2", "--prompt-tokens", "32", "--max-new-tokens", "8",
        "--min-iters", "2", "--min-seconds", "0", "--set", "idle_seconds=1", "-o", str(tmp_path),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    (path,) = tmp_path.rglob("*.json")
    rec = json.loads(path.read_text())
    assert rec["model"]["architecture"] == "decoder-only"
    assert 130e6 < rec["model"]["parameters"] < 140e6
    g1, g2 = rec["efficiency"]["generation"]
    assert g1["output_tokens_per_request"] == 8
    assert g1["ttft_ms"]["mean"] > 0 and g1["decode_tokens_per_s"]["mean"] > 0.5
    rl = rec["efficiency"]["roofline"]
    if rl["over_bound"]:  # above the bound: a measurement error, flagged and warned about, no fraction
        assert g1["roofline_fraction"] is None and any("measurement error" in w for w in rec["warnings"])
    else:
        assert 0 < g1["roofline_fraction"] <= 1
    assert g1["energy"]["method"] in ("estimated", "measured")
    assert g1["energy"]["ept_total_j_per_token"] > 0
    assert rec["manifest"]["libraries"]["torch"].startswith("2.")
