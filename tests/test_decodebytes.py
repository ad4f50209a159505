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
