"""Each backend's weights as :class:`~e3bench.core.decodebytes.WeightTensor` lists, so every
backend counts the bytes a decode step reads by the one rule of :mod:`e3bench.core.decodebytes`:

* :func:`torch_weights` — a loaded PyTorch model (packed quantized tensors by their storage);
* :func:`onnx_weights` — an ONNX graph's initializers (the header only, no weight data read):
  a ``Gather``'s table is a lookup, tied when another node reads it too;
* :func:`gguf_weights` — a GGUF file's tensors (``token_embd`` is the lookup, tied when there is
  no ``output.weight``);
* :func:`safetensors_weights` — a checkpoint's headers (vLLM), embedding tables by name.
"""

from __future__ import annotations

import re
from pathlib import Path

from e3bench.core.decodebytes import WeightTensor


def torch_weights(model) -> list[WeightTensor]:
    """The parameters of ``model`` (shared ones once): ``nn.Embedding`` tables are lookups, tied
    when the table is also the output embedding (LM head) weight."""
    import torch

    from e3bench.backends.models import tensor_bytes

    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    head = getattr(out, "weight", None)
    tables = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    tensors = []
    for p in model.parameters():  # shared parameters come once
        if id(p) in tables:
            role = "tied" if p is head else "lookup"
            tensors.append(WeightTensor(tensor_bytes(p), int(p.shape[0]), role))
        else:
            tensors.append(WeightTensor(tensor_bytes(p)))
    return tensors


def _onnx_bytes(t) -> int:
    """Stored bytes of an ONNX TensorProto from its dims and type (external data not read)."""
    import onnx

    n = 1
    for d in t.dims:
        n *= int(d)
    if t.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
        return (n + 1) // 2
    return n * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize


#: inputs that are rotary cos/sin tables (read one row per position), by op type
_ROTARY_CACHES = {"GroupQueryAttention": (7, 8), "RotaryEmbedding": (2, 3)}


def onnx_weights(path: Path) -> list[WeightTensor]:
    """The initializers and ``Constant`` tensors of the ONNX model at ``path``: a tensor read as a
    ``Gather``'s table (or a ``GatherBlockQuantized``'s table, scales and zero points) is a lookup
    (one row), tied when another node also reads it whole; a rotary cos/sin table is a lookup too."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    consts = {n.output[0]: a.t for n in graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"}
    tensors = {t.name: t for t in graph.initializer} | consts
    looked_up = {n.input[0] for n in graph.node if n.op_type == "Gather" and n.input}
    # onnxruntime-genai's int4 embedding: GatherBlockQuantized(data, indices, scales[, zero points])
    # reads one row of the packed table and of its scales / zero points
    quantized = [n for n in graph.node if n.op_type == "GatherBlockQuantized" and n.input]
    looked_up |= {i for n in quantized for k, i in enumerate(n.input) if k != 1 and i}
    # rotary cos/sin tables (onnxruntime-genai's GroupQueryAttention / RotaryEmbedding): one row per position
    rotary = {n.input[k] for n in graph.node for k in _ROTARY_CACHES.get(n.op_type, ()) if k < len(n.input)}
    looked_up |= rotary
    gathers = ("Gather", "GatherBlockQuantized")
    read_whole = {
        i
        for n in graph.node
        for k, i in enumerate(n.input)
        if not (n.op_type in gathers and (k == 0 or k >= 2)) and i not in rotary
    }
    out = []
    for name, t in tensors.items():
        if name in looked_up and t.dims:
            out.append(WeightTensor(_onnx_bytes(t), int(t.dims[0]), "tied" if name in read_whole else "lookup"))
        else:
            out.append(WeightTensor(_onnx_bytes(t)))
    return out


#: GGUF tensors read one row per token (llama.cpp names)
_GGUF_LOOKUPS = ("position_embd.weight", "token_types.weight")


def gguf_weights(path: Path) -> list[WeightTensor]:
    """The tensors of the GGUF file at ``path`` (header only): ``token_embd.weight`` is the token
    lookup, tied (llama.cpp's LM head reads it) when the file has no ``output.weight``."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    names = {t.name for t in reader.tensors}
    out = []
    for t in reader.tensors:
        row_len = int(t.shape[0]) if len(t.shape) else 1  # ggml order: ne0 is the row length
        rows = max(int(t.n_elements) // max(row_len, 1), 1)
        if t.name == "token_embd.weight":
            out.append(WeightTensor(int(t.n_bytes), rows, "lookup" if "output.weight" in names else "tied"))
        elif t.name in _GGUF_LOOKUPS:
            out.append(WeightTensor(int(t.n_bytes), rows, "lookup"))
        else:
            out.append(WeightTensor(int(t.n_bytes)))
    return out


#: Hugging Face checkpoint names of embedding tables (token and position lookups)
_HF_LOOKUP = re.compile(r"(embed_tokens|wte|wpe|embed_in|tok_embeddings|word_embeddings|embed_positions)\.weight$")
_HF_HEAD = re.compile(r"(^|\.)(lm_head|embed_out|output)\.weight$")


def safetensors_weights(names_bytes_rows: list[tuple[str, int, int]]) -> list[WeightTensor]:
    """Tensors of a checkpoint given as (name, bytes, rows): embedding tables found by name are
    lookups, the token table tied when the checkpoint stores no LM head."""
    has_head = any(_HF_HEAD.search(n) for n, _, _ in names_bytes_rows)
    out = []
    for name, nbytes, rows in names_bytes_rows:
        m = _HF_LOOKUP.search(name)
        if m is None:
            out.append(WeightTensor(nbytes))
        else:
            token_table = m.group(1) in ("embed_tokens", "wte", "embed_in", "tok_embeddings", "word_embeddings")
            out.append(WeightTensor(nbytes, rows, "tied" if token_table and not has_head else "lookup"))
    return out


def safetensors_param_counts(path: Path) -> tuple[int, int]:
    """(parameters, bytes a decode step reads) of the ``*.safetensors`` files in ``path``, from
    their headers (``safetensors.safe_open``: shapes and dtypes, no tensor data read); bytes by
    the rule of :mod:`e3bench.core.decodebytes`."""
    from safetensors import safe_open

    from e3bench.core.decodebytes import decode_step_bytes

    n = 0
    tensors = []
    for f in sorted(path.glob("*.safetensors")):
        with safe_open(str(f), framework="numpy") as fh:
            for k in fh.keys():
                sl = fh.get_slice(k)
                shape = sl.get_shape()
                count = 1
                for d in shape:
                    count *= d
                n += count
                tensors.append((k, count * _DTYPE_BYTES.get(sl.get_dtype(), 1), int(shape[0]) if shape else 1))
    return n, decode_step_bytes(safetensors_weights(tensors))


#: bytes per element of safetensors dtype names (sub-byte types count as their packed storage)
_DTYPE_BYTES = {
    "F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
    "F8_E4M3": 1, "F8_E5M2": 1, "I8": 1, "U8": 1, "BOOL": 1,
}  # fmt: skip
