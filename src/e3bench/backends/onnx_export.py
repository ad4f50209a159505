"""Export a Hugging Face decoder-only model to one ONNX graph with a KV cache.

Why our own exporter and not optimum: ``optimum-onnx`` pins ``transformers<4.58`` while e3bench
runs on transformers 5, whose configs (``rope_parameters``) 4.57 misreads. The TorchScript
exporter of ``torch.onnx.export(dynamo=False)`` traces transformers 5 models fine when the
cache is rebuilt from flat tensors inside a small wrapper, so the exporter runs with the very
transformers version whose PyTorch numbers we compare against.

The graph (names follow optimum's layout, so an optimum-exported directory loads too):

* inputs  ``input_ids`` [b, s], ``attention_mask`` [b, past + s], ``position_ids`` [b, s],
  ``logit_index`` [n] (positions of ``s`` whose logits are wanted — one for a decode step,
  the continuation for scoring), ``past_key_values.{i}.key|value`` [b, kv_heads, past, head_dim]
* outputs ``logits`` [b, n, vocab], ``present.{i}.key|value`` [b, kv_heads, past + s, head_dim]

The first step feeds a zero-length past. The export runs in a **subprocess**
(``python -m e3bench.backends.onnx_export SRC OUT``) so the PyTorch copy of the model never
inflates the benchmark process's peak RSS, and so a user can point ``E3BENCH_ONNX_EXPORT_PYTHON``
at another interpreter (e.g. an isolated venv) if a future transformers breaks tracing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

MANIFEST = "e3bench-onnx.json"
EXPORTER_VERSION = 2  # 2: sliding-window layers exported with full-length caches + window masks
OPSET = 17


def export(src: str, out: str, *, trust_remote_code: bool = False) -> dict:
    """Export the transformers decoder in ``src`` to ``out/model.onnx`` (+ ``.data``), with its
    config, tokenizer and the manifest (``e3bench-onnx.json``, incl. ``exporter_version``);
    returns the manifest. ``trust_remote_code`` goes to transformers as given (never None, so
    transformers never asks on the terminal)."""
    import warnings

    import torch
    import transformers
    from transformers import AutoModelForCausalLM, DynamicCache

    from e3bench.backends.hfcache import cache_kw, cache_of
    from e3bench.core.quiet import quiet_libraries

    warnings.filterwarnings("ignore")
    quiet_libraries()
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(
        src, dtype=torch.float32, attn_implementation="eager", trust_remote_code=trust_remote_code
    ).eval()
    config = model.config

    # Probe the cache layout (kv heads, head dim, layers) by running one token.
    with torch.no_grad():
        probe = model(input_ids=torch.zeros((1, 1), dtype=torch.long), use_cache=True)
    layers = cache_of(model, probe).layers
    n_layers = len(layers)
    kv_shape = [tuple(layer.keys.shape[1:2]) + tuple(layer.keys.shape[3:]) for layer in layers]

    class Step(torch.nn.Module):
        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, position_ids, logit_index, *past):
            cache = _full_length_cache(DynamicCache(config=self.inner.config))
            for i in range(n_layers):
                cache.update(past[2 * i], past[2 * i + 1], i)
            out = self.inner(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                **cache_kw(self.inner, cache),
                use_cache=True,
                logits_to_keep=logit_index,
            )
            presents = []
            for layer in cache_of(self.inner, out).layers:
                presents += [layer.keys, layer.values]
            return (out.logits, *presents)

    b, s, p = 2, 5, 3
    dummy = (
        torch.randint(0, config.vocab_size, (b, s)),
        torch.ones((b, p + s), dtype=torch.long),
        torch.arange(p, p + s)[None].expand(b, s).contiguous(),
        torch.tensor([s - 1]),
        *[torch.randn(b, kv_shape[i // 2][0], p, kv_shape[i // 2][1]) for i in range(2 * n_layers)],
    )
    past_names = [f"past_key_values.{i}.{kv}" for i in range(n_layers) for kv in ("key", "value")]
    present_names = [f"present.{i}.{kv}" for i in range(n_layers) for kv in ("key", "value")]
    in_names = ["input_ids", "attention_mask", "position_ids", "logit_index", *past_names]
    out_names = ["logits", *present_names]
    axes: dict[str, dict[int, str]] = {
        "input_ids": {0: "batch", 1: "seq"},
        "attention_mask": {0: "batch", 1: "total"},
        "position_ids": {0: "batch", 1: "seq"},
        "logit_index": {0: "n_logits"},
        "logits": {0: "batch", 1: "n_logits"},
    }
    axes.update({n: {0: "batch", 2: "past"} for n in past_names})
    axes.update({n: {0: "batch", 2: "total"} for n in present_names})
    outdir = Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            Step(model).eval(),
            dummy,
            str(outdir / "model.onnx"),
            input_names=in_names,
            output_names=out_names,
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
            do_constant_folding=True,
        )
    _consolidate(outdir / "model.onnx")
    params = {id(t): t for t in model.parameters()}
    info = {
        "exporter": f"e3bench torch.onnx.export(dynamo=False) v{EXPORTER_VERSION}",
        "exporter_version": EXPORTER_VERSION,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "opset": OPSET,
        "source": str(src),
        "model_type": config.model_type,
        "parameters": int(sum(t.numel() for t in params.values())),
        "vocab_size": int(config.vocab_size),
        "max_positions": getattr(config, "max_position_embeddings", None),
        "n_layers": n_layers,
        "kv_heads": kv_shape[0][0],
        "head_dim": kv_shape[0][1],
        "precision": "fp32",
        "export_s": round(time.perf_counter() - t0, 2),
    }
    config.save_pretrained(outdir)  # so the directory resolves as a model dir and is self-describing
    try:
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(src, trust_remote_code=trust_remote_code).save_pretrained(outdir)
    except Exception as exc:  # noqa: BLE001 - a model without a tokenizer can still be benchmarked on ids
        info["tokenizer_error"] = f"{type(exc).__name__}: {exc}"
    (outdir / MANIFEST).write_text(json.dumps(info, indent=1))
    return info


def _full_length_cache(cache):
    """``cache`` with every sliding-window layer replaced by a full-length one.

    transformers' sliding layers keep only the last ``window - 1`` positions, a length the traced
    graph cannot follow (it bakes the dummy's sizes into the Concat that refills the cache, and
    the crop happens in Python). Kept at full length, every layer's cache is ``past + s`` long as
    the graph's axes say, and the model's sliding-window *mask* (built from ``config.sliding_window``
    for the sliding layers) hides the positions outside the window: the same attention as
    PyTorch's, at the cost of a cache that grows past the window in sliding layers."""
    from transformers.cache_utils import DynamicLayer

    cache.layers = [DynamicLayer() if getattr(layer, "is_sliding", False) else layer for layer in cache.layers]
    return cache


def sliding_layers(config) -> tuple[int, int, int] | None:
    """(window tokens, sliding layers, layers) of a transformers config whose attention uses a
    sliding window in some layers (transformers' own per-layer rule: ``DynamicCache(config)``),
    else None."""
    from transformers import DynamicCache

    try:
        layers = DynamicCache(config=config).layers
    except Exception:  # noqa: BLE001 - a config transformers cannot lay out a cache for: no sliding info
        return None
    windows = [int(layer.sliding_window) for layer in layers if getattr(layer, "is_sliding", False)]
    return (min(windows), len(windows), len(layers)) if windows else None


def sliding_notes(config, manifest: dict, model_file: Path, fix: str) -> list[str]:
    """The load note on how sliding-window layers run ([] without them); E3Error for an export by
    exporter v1, which let those layers' caches drift from the graph's shapes (crash or wrong
    tokens once a sequence passes the window)."""
    from e3bench.core.errors import E3Error

    sliding = sliding_layers(config)
    if sliding is None:
        return []
    window, n, total = sliding
    made_by = manifest.get("exporter_version")
    if isinstance(made_by, int) and made_by < 2:
        raise E3Error(
            f"{model_file} was exported by e3bench exporter v{made_by}, which mishandles sliding-window "
            f"attention (window {window} tokens in {n} of {total} layers)",
            f"{fix}; or use --backend pytorch or llamacpp",
        )
    return [
        f"sliding-window attention (window {window} tokens) in {n} of {total} layers: the ONNX graph keeps "
        "their KV cache at full length and masks attention to the window (PyTorch's results; more cache "
        "memory than PyTorch once a sequence passes the window)"
    ]


def quantize_int8(src: str, out: str) -> dict:
    """Dynamic int8 (onnxruntime.quantization.quantize_dynamic): int8 weights, per-channel
    scales, activations quantized per call. MatMul/Gemm only: the embedding Gather stays fp32
    (it is shared with the LM head in tied models and costs no compute)."""
    import shutil

    from onnxruntime.quantization import QuantType, quantize_dynamic

    t0 = time.perf_counter()
    srcdir, outdir = Path(src), Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(
        str(srcdir / "model.onnx"),
        str(outdir / "model.onnx"),
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["MatMul", "Gemm"],
        use_external_data_format=False,
    )
    for f in srcdir.iterdir():
        if f.is_file() and not f.name.startswith("model.onnx") and f.name != MANIFEST:
            shutil.copy2(f, outdir / f.name)
    info = json.loads((srcdir / MANIFEST).read_text())
    info.update(precision="int8", quantizer="onnxruntime.quantization.quantize_dynamic(QInt8, per_channel)",
                quantize_s=round(time.perf_counter() - t0, 2))
    (outdir / MANIFEST).write_text(json.dumps(info, indent=1))
    return info


def _calibration_feeds(
    srcdir: Path, info: dict, calibration_file: str | None, samples: int, tokens: int, trust_remote_code: bool = False
):
    """Session feeds for static calibration: per text, a prefill with an empty past and one
    multi-token step over the fp32 model's own KV cache, so both graph shapes are calibrated."""
    import numpy as np
    import onnxruntime as ort
    from transformers import AutoTokenizer

    from e3bench.core.prose import SEED_TEXT, rotations, text_lines

    tok = AutoTokenizer.from_pretrained(str(srcdir), trust_remote_code=trust_remote_code)

    def encode(text: str) -> list[int]:
        return tok(text, add_special_tokens=False)["input_ids"]

    if calibration_file:
        lines = text_lines(calibration_file)
        token_ids, source = [encode(t) for t in lines], f"file: {calibration_file} ({len(lines)} prompts)"
    else:
        token_ids = rotations(encode(SEED_TEXT), tokens, samples)
        source = f"synthetic: {tokens} tokens of English prose, {samples} offsets"
    seqs = [ids[:tokens] for ids in token_ids if len(ids) >= 4][:samples]
    if not seqs:
        raise SystemExit(f"no calibration text of at least 4 tokens in {source}")
    sess = ort.InferenceSession(str(srcdir / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    past = [n for n in names if n.startswith("past_key_values.")]
    empty = np.zeros((1, info["kv_heads"], 0, info["head_dim"]), dtype=np.float32)
    feeds = []
    for ids in seqs:
        split = max(2, len(ids) * 3 // 4)
        first = {
            "input_ids": np.array([ids[:split]], dtype=np.int64),
            "attention_mask": np.ones((1, split), dtype=np.int64),
            "position_ids": np.arange(split, dtype=np.int64)[None],
            "logit_index": np.array([split - 1], dtype=np.int64),
            **{n: empty for n in past},
        }
        presents = sess.run(None, first)[1:]
        rest = ids[split:]
        second = {
            "input_ids": np.array([rest], dtype=np.int64),
            "attention_mask": np.ones((1, len(ids)), dtype=np.int64),
            "position_ids": np.arange(split, len(ids), dtype=np.int64)[None],
            "logit_index": np.array([len(rest) - 1], dtype=np.int64),
            **dict(zip(past, presents, strict=True)),
        }
        feeds += [first, second]
    return feeds, f"{len(seqs)} texts from {source}, up to {tokens} tokens each"


def quantize_int8_static(
    src: str, out: str, calibration_file: str | None = None, samples: int = 16, tokens: int = 128,
    *, trust_remote_code: bool = False,
) -> dict:
    """Static int8 (onnxruntime.quantization.quantize_static): QDQ format, int8 per-channel
    weights, uint8 activations with ranges fixed by MinMax calibration, for the MatMuls that
    have a weight. Activation × activation MatMuls (attention scores and mixing) stay fp32:
    their ranges change with every input, which a fixed scale cannot follow."""
    import shutil

    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    t0 = time.perf_counter()
    srcdir, outdir = Path(src), Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    info = json.loads((srcdir / MANIFEST).read_text())
    feeds, described = _calibration_feeds(srcdir, info, calibration_file, samples, tokens, trust_remote_code)

    graph = onnx.load(str(srcdir / "model.onnx"), load_external_data=False).graph
    weights = {i.name for i in graph.initializer}
    produced_by_const = {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    exclude = [
        n.name
        for n in graph.node
        if n.op_type == "MatMul" and not any(i in weights or i in produced_by_const for i in n.input)
    ]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    quantize_static(
        str(srcdir / "model.onnx"),
        str(outdir / "model.onnx"),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        weight_type=QuantType.QInt8,
        activation_type=QuantType.QUInt8,
        op_types_to_quantize=["MatMul", "Gemm"],
        nodes_to_exclude=exclude,
        calibrate_method=CalibrationMethod.MinMax,
        use_external_data_format=False,
    )
    for f in srcdir.iterdir():
        if f.is_file() and not f.name.startswith("model.onnx") and f.name != MANIFEST:
            shutil.copy2(f, outdir / f.name)
    info.update(
        precision="int8",
        quantizer="onnxruntime.quantization.quantize_static(QDQ, QInt8 weights per channel, QUInt8 activations, MinMax)",
        calibration=described,
        fp32_matmuls_kept=len(exclude),
        quantize_s=round(time.perf_counter() - t0, 2),
    )
    (outdir / MANIFEST).write_text(json.dumps(info, indent=1))
    return info


def convert_fp16(src: str, out: str) -> dict:
    """fp16 weights and KV cache for GPUs (onnxruntime.transformers.float16)."""
    import shutil

    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    t0 = time.perf_counter()
    srcdir, outdir = Path(src), Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(srcdir / "model.onnx"))
    model = convert_float_to_float16(model, keep_io_types=False, disable_shape_infer=True)
    onnx.save_model(model, str(outdir / "model.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="model.onnx.data", size_threshold=1024)
    for f in srcdir.iterdir():
        if f.is_file() and not f.name.startswith("model.onnx") and f.name != MANIFEST:
            shutil.copy2(f, outdir / f.name)
    info = json.loads((srcdir / MANIFEST).read_text())
    info.update(precision="fp16", converter="onnxruntime.transformers.float16", convert_s=round(time.perf_counter() - t0, 2))
    (outdir / MANIFEST).write_text(json.dumps(info, indent=1))
    return info


def _consolidate(path: Path) -> None:
    """The TorchScript exporter writes one external-data file per tensor for models over 2 GB
    and inline data otherwise; normalise to ``model.onnx`` + ``model.onnx.data`` so quantizers
    and copies see two files."""
    import onnx

    m = onnx.load(str(path))
    for f in path.parent.iterdir():
        if f.name not in (path.name, MANIFEST) and f.is_file() and f.suffix != ".json":
            f.unlink()
    onnx.save_model(m, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=path.name + ".data", size_threshold=1024)


def main(argv: list[str] | None = None) -> int:
    """``python -m e3bench.backends.onnx_export SRC OUT [--to ...]``; prints the manifest."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", help="Hugging Face model directory, or an exported ONNX directory for --to")
    ap.add_argument("out", help="output directory")
    ap.add_argument("--to", choices=["fp32", "int8", "int8-static", "fp16"], default="fp32",
                    help="fp32: export from PyTorch; int8/int8-static/fp16: convert an exported fp32 directory")
    ap.add_argument("--calibration", help="int8-static: a text file, one calibration text per line")
    ap.add_argument("--trust-remote-code", action="store_true", help="let transformers run the model folder's own code")
    args = ap.parse_args(argv)
    trust = args.trust_remote_code
    if args.to == "int8-static":
        info = quantize_int8_static(args.src, args.out, args.calibration, trust_remote_code=trust)
    elif args.to == "fp32":
        info = export(args.src, args.out, trust_remote_code=trust)
    else:
        info = {"int8": quantize_int8, "fp16": convert_fp16}[args.to](args.src, args.out)
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
