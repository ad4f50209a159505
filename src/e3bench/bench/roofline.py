"""Memory-bandwidth roofline for decoding.

Decoding one step reads every weight once, so a batch of ``b`` sequences can at best produce
``b × bandwidth / weights_bytes`` tokens per second. We report each measured decode
throughput as a fraction of that bound.

CPU bandwidth is *measured* once (a large numpy copy, which streams ``2 × size`` bytes: read +
write) and cached per CPU model; GPU bandwidth comes from a table of vendor specifications.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from pydantic import BaseModel

from e3bench.results.roofline import Roofline

# Vendor-specified peak memory bandwidth, GB/s (1e9 bytes/s). Matched on substrings of the
# CUDA device name, most specific first.
GPU_BANDWIDTH_GB_S: tuple[tuple[str, float], ...] = (
    ("H200", 4800.0),
    ("H100 NVL", 3900.0),
    ("H100 PCIe", 2000.0),
    ("H100", 3350.0),  # SXM5
    ("GH200", 4000.0),
    ("B200", 8000.0),
    ("A100-SXM4-80GB", 2039.0),
    ("A100 80GB PCIe", 1935.0),
    ("A100", 1555.0),  # 40 GB
    ("A10G", 600.0),
    ("A10", 600.0),
    ("L40S", 864.0),
    ("L40", 864.0),
    ("L4", 300.0),
    ("T4", 320.0),
    ("V100", 900.0),
    ("RTX 4090", 1008.0),
    ("RTX 3090", 936.0),
    ("RTX A6000", 768.0),
)


class Bandwidth(BaseModel):
    bytes_per_s: float
    method: str  # "measured: numpy copy ..." or "spec: vendor table"
    device: str


def gpu_bandwidth(name: str) -> Bandwidth | None:
    """Vendor-specified bandwidth of the CUDA device called ``name``, or None if unknown.

    The longest table key contained in the name wins, so "NVIDIA GH200 480GB" is a GH200, not
    an H200, and "H100 NVL" is not the SXM H100.
    """
    for key, gbs in sorted(GPU_BANDWIDTH_GB_S, key=lambda kv: -len(kv[0])):
        if key.lower() in name.lower():
            return Bandwidth(bytes_per_s=gbs * 1e9, method=f"spec: vendor table ({key}: {gbs:g} GB/s)", device=name)
    return None


def measure_cpu_bandwidth(size_bytes: int = 256 * 2**20, repeats: int = 5) -> float:
    """Best-of-N copy bandwidth in bytes/s (read + write counted)."""
    import numpy as np

    src = np.ones(size_bytes // 8, dtype=np.float64)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # fault the pages in
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.nbytes / best


def cpu_bandwidth(cache_dir: Path, cpu_model: str) -> Bandwidth:
    """Measured once per CPU model and cached in ``cache_dir/bandwidth.json``."""
    path = cache_dir / "bandwidth.json"
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    if cpu_model in cached:
        return Bandwidth(**cached[cpu_model])
    bw = Bandwidth(
        bytes_per_s=measure_cpu_bandwidth(),
        method="measured: numpy copy of 256 MiB, best of 5, read+write bytes (cached per CPU model)",
        device=cpu_model,
    )
    cached[cpu_model] = bw.model_dump()
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(cached, indent=1))
        tmp.replace(path)
    except OSError:
        pass
    return bw


def roofline(bw: Bandwidth, weights_bytes: int, decode_tokens_per_s: dict[int, float]) -> Roofline:
    """Bound = batch × bandwidth / weights bytes (decode tokens/s) per batch size, and each
    measured decode throughput (tokens/s) as a fraction of it."""
    bound = {b: b * bw.bytes_per_s / weights_bytes for b in decode_tokens_per_s}
    return Roofline(
        bandwidth_bytes_per_s=bw.bytes_per_s,
        bandwidth_method=bw.method,
        weights_bytes=weights_bytes,
        bound_decode_tokens_per_s=bound,
        fraction_of_bound={b: decode_tokens_per_s[b] / bound[b] for b in decode_tokens_per_s},
    )
