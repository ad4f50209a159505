"""Bytes per decode step (issue 20.2): one rule (core.decodebytes) on every backend and format."""

from __future__ import annotations

import importlib.util

import pytest

from e3bench.core.decodebytes import WeightTensor, decode_step_bytes


def test_the_rule():
    """A matrix whole, a lookup table as one row, a tied table as the LM head plus one row."""
    table = 1000 * 64 * 4  # 1000 rows of 64 fp32
    assert decode_step_bytes([WeightTensor(4096), WeightTensor(table, 1000, "lookup")]) == 4096 + 256
    assert decode_step_bytes([WeightTensor(table, 1000, "tied")]) == table + 256


def test_gguf_tied_and_untied_tables(tmp_path):
    """GGUF: token_embd is a lookup when the file has output.weight, the LM head (tied) when not;
    llama_model_size counted the whole table either way."""
    if importlib.util.find_spec("gguf") is None:
        pytest.skip("gguf not installed: pip install 'e3bench[llamacpp]'")
    import gguf
    import numpy as np

    from e3bench.backends.weightbytes import gguf_weights

    def write(path, names):
        w = gguf.GGUFWriter(str(path), "llama")
        for name, shape in names:
            w.add_tensor(name, np.zeros(shape, dtype=np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        return path

    emb = 100 * 16 * 4  # 100 rows of 16 fp32
    untied = write(tmp_path / "u.gguf", [("token_embd.weight", (100, 16)), ("output.weight", (100, 16)), ("blk.0.w", (16, 16))])
    tied = write(tmp_path / "t.gguf", [("token_embd.weight", (100, 16)), ("blk.0.w", (16, 16))])
    assert decode_step_bytes(gguf_weights(untied)) == 64 + emb + 16 * 16 * 4
    assert decode_step_bytes(gguf_weights(tied)) == emb + 64 + 16 * 16 * 4


def test_checkpoint_names():
    """safetensors (vLLM): embedding tables by name; the token table tied when no LM head is stored."""
    from e3bench.backends.weightbytes import safetensors_weights

    rows = [("model.embed_tokens.weight", 4000, 10), ("model.layers.0.mlp.weight", 800, 4)]
    assert decode_step_bytes(safetensors_weights(rows)) == 4000 + 400 + 800
    assert decode_step_bytes(safetensors_weights([*rows, ("lm_head.weight", 4000, 10)])) == 400 + 800 + 4000


def test_the_backends_benchmark_prints_bytes_and_roofline_per_backend():
    """benchmarks/backends.py: a column of bytes per decode step and one of roofline fractions,
    a flagged fraction (> 100 %) printed as a measurement error, never as a number."""
    import importlib.util as iu
    from pathlib import Path

    spec = iu.spec_from_file_location("bench_backends", Path(__file__).parents[1] / "benchmarks" / "backends.py")
    mod = iu.module_from_spec(spec)
    spec.loader.exec_module(mod)
    base = {"options": {}, "decode_ci95": 0.5, "ttft_ms": 100.0, "peak_rss_mb": 900.0, "accuracy": {},
            "bandwidth_gb_s": 9.5, "bandwidth_how": "measured: numpy copy", "bytes_rule": "bytes read per decode step: RULE"}  # fmt: skip
    rows = [
        {**base, "backend": "pytorch", "precision": "fp32", "weights_mb": 513.1, "decode_tok_s": 8.0,
         "roofline_pct": 44.2, "roofline_error": None},
        {**base, "backend": "onnxrt", "precision": "fp32", "weights_mb": 513.1, "decode_tok_s": 40.0,
         "roofline_pct": None, "roofline_error": "decode ran faster than ... (batch 1: 221 % of it): a measurement error"},
    ]  # fmt: skip
    text = mod.table(rows, "")
    head, _, pt, ox = text.splitlines()[:4]
    assert "bytes/decode step MiB" in head and "roofline" in head
    assert "| 513 |" in pt and "44.2 %" in pt
    assert "measurement error (>100 %)" in ox and "221" not in ox
    # where the bandwidth comes from is printed with it
    assert "bandwidth 9.5 GB/s (measured: numpy copy); bytes read per decode step: RULE" in text
    assert "onnxrt fp32: decode ran faster" in text


def test_the_backends_benchmark_judges_retained_by_its_paired_interval(tmp_path):
    """40 items that agree one by one cannot establish "retained ≥ 99 %": the row says
    INCONCLUSIVE with the interval (it said "100.0% ok" from the point estimate)."""
    import importlib.util as iu
    import json
    from pathlib import Path

    spec = iu.spec_from_file_location("bench_backends", Path(__file__).parents[1] / "benchmarks" / "backends.py")
    mod = iu.module_from_spec(spec)
    spec.loader.exec_module(mod)
    right = [i % 2 == 0 for i in range(40)]

    def row(precision, correct):
        f = tmp_path / f"{precision}.jsonl"
        f.write_text("".join(json.dumps({"doc_id": i, "doc": {"q": i}, "acc_norm": float(c)}) + "\n" for i, c in enumerate(correct)))
        acc = sum(correct) / len(correct)
        return {"backend": "pytorch", "precision": precision, "options": {}, "weights_mb": 1.0, "decode_tok_s": 1.0,
                "decode_ci95": 0.1, "ttft_ms": 1.0, "peak_rss_mb": 1.0, "accuracy": {"hellaswag": {"acc_norm": acc}},
                "scores": {"hellaswag": {"stderr": {"acc_norm": 0.08}, "n_items": 40, "samples_file": str(f)}},
                "roofline_pct": None, "roofline_error": None}  # fmt: skip

    worse = [c and i % 4 != 0 for i, c in enumerate(right)]  # loses half of what fp32 got right
    text = mod.table([row("fp32", right), row("bf16", right), row("int8", worse)], "hellaswag")
    ref, same, bad = text.splitlines()[2:5]
    assert "INCONCLUSIVE" not in ref and "%" not in ref.split("|")[-2]  # the reference is not compared with itself
    assert "100.0% [" in same and "INCONCLUSIVE" in same and "ok" not in same
    assert "50.0% [" in bad and "FAIL" in bad
