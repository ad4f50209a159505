"""GGUF precisions for the llama.cpp backend: quant-type names, reading a file's type from its
header, and llama.cpp's own quantizer with a cache (``cache_root/gguf-quantized/``).

Also :func:`captured_stderr`, which catches llama.cpp's messages (Python log callback and C
``stderr``) so failures can be explained in one line.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import tempfile
from pathlib import Path

import numpy as np

from e3bench.core.errors import E3Error
from e3bench.core.fsutil import adopt_legacy_entry, file_key, legacy_file_key

#: GGUF quant type name → llama_ftype value (llama.h); the ones users ask for.
GGUF_TYPES: dict[str, int] = {
    "f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q8_0": 7, "q5_0": 8, "q5_1": 9, "q2_k": 10,
    "q3_k_s": 11, "q3_k_m": 12, "q3_k_l": 13, "q4_k_s": 14, "q4_k_m": 15, "q5_k_s": 16,
    "q5_k_m": 17, "q6_k": 18, "iq4_nl": 25, "iq4_xs": 30, "bf16": 32,
}  # fmt: skip
_BY_FTYPE = {v: k for k, v in GGUF_TYPES.items()}
FOUR_BIT = {"q4_0", "q4_1", "q4_k_s", "q4_k_m", "iq4_nl", "iq4_xs"}
GENERIC = {"fp32": "f32", "fp16": "f16", "bf16": "bf16", "int8": "q8_0"}  # int4/native: see target_type


def file_type(path: Path) -> tuple[str | None, str | None]:
    """(architecture, quant type name) from the GGUF header (gguf package, memory-mapped)."""
    try:
        import gguf
    except ImportError:
        return None, None
    try:
        r = gguf.GGUFReader(str(path))
    except Exception as exc:  # noqa: BLE001 - the reader raises many kinds on bad files
        raise E3Error(f"GGUF file {path} is corrupt or truncated ({type(exc).__name__})", "copy the file again") from None

    def field(name):
        f = r.fields.get(name)
        if f is None:
            return None
        v = f.parts[f.data[0]]
        return bytes(v).decode("utf-8", "replace") if v.dtype == np.uint8 else int(v[0])

    ft = field("general.file_type")
    return field("general.architecture"), (_BY_FTYPE.get(ft, f"ftype{ft}") if isinstance(ft, int) else None)


class _Captured:
    def __init__(self) -> None:
        self.fd = tempfile.TemporaryFile(mode="w+b")  # noqa: SIM115 - lives as long as the capture
        self.py = io.StringIO()

    def text(self) -> str:
        self.fd.seek(0)
        return self.fd.read().decode("utf-8", "replace") + self.py.getvalue()


@contextlib.contextmanager
def captured_stderr():
    """llama.cpp's errors reach us through llama-cpp-python's log callback (Python's
    ``sys.stderr``) or straight from C code (fd 2): capture both to explain failures."""
    cap = _Captured()
    saved = os.dup(2)
    try:
        os.dup2(cap.fd.fileno(), 2)
        with contextlib.redirect_stderr(cap.py):
            yield cap
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def target_type(shipped: str | None, precision: str) -> str | None:
    """The GGUF type to run for ``precision`` given the file's own type ``shipped``; None means
    the file as shipped (``native``, the same type, or ``int4`` of a file already 4-bit)."""
    p = precision.lower()
    if p == "native" or p == shipped:
        return None
    if p == "int4":
        return None if shipped in FOUR_BIT else "q4_k_m"
    return GENERIC.get(p, p)

def quantized(src: Path, shipped: str | None, target: str, *, cache_dir: str | None, threads: int | None) -> tuple[Path, str]:
    """``src`` converted to GGUF type ``target`` with llama.cpp's own quantizer, once: the file
    under ``cache_root/gguf-quantized/<file_key(src)>/`` and a note for the record (what was
    made from what; re-quantizing an already quantized file carries its rounding error).

    Raises E3Error with llama.cpp's own message when quantizing fails."""
    import llama_cpp

    from e3bench.backends.models import cache_root

    out_dir = cache_root(cache_dir) / "gguf-quantized" / file_key(src)
    adopt_legacy_entry(out_dir.parent, out_dir.name, legacy_file_key(src))  # an older e3bench's mtime key
    out = out_dir / f"{target.upper()}.gguf"
    requant = shipped not in (None, "f32", "f16", "bf16")
    note = f"{target.upper()} made from {src.name} ({(shipped or '?').upper()}) with llama_model_quantize"
    if requant and target in ("f32", "f16", "bf16"):
        note += (
            f"; dequantized: the same {shipped.upper()} weights stored as {target.upper()} "
            "(what a full-precision run of this file means; not the original checkpoint)"
        )
    elif requant:
        note += (
            f"; re-quantized from an already quantized file, so the weights carry the "
            f"{shipped.upper()} rounding error too (a {target.upper()} made from full-precision weights is more accurate)"
        )
    if out.is_file():
        from e3bench.backends.modelfiles import check_gguf

        check_gguf(out, f"delete the damaged cache entry {out} (llama.cpp quantizes the file again)")
        return out, note + f" (cached: {out})"
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = GGUF_TYPES[target]
    params.nthread = threads or 0
    params.allow_requantize = requant
    with captured_stderr() as err:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
    if rc != 0 or not tmp.is_file():
        tail = " ".join(err.text().strip().splitlines()[-3:])
        tmp.unlink(missing_ok=True)
        raise E3Error(f"llama.cpp could not quantize {src.name} to {target.upper()}: {tail}", "pick another GGUF type")
    tmp.rename(out)
    return out, note + f" (now: {out})"
