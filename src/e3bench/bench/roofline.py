"""Memory-bandwidth roofline for decoding.

Decoding one step reads every weight once, so a batch of ``b`` sequences can at best produce
``b × bandwidth / weights_bytes`` tokens per second, with ``weights_bytes`` the bytes one decode
step reads, counted the same way on every backend and precision (:mod:`e3bench.core.decodebytes`:
each weight once, an embedding lookup as one row, tied embeddings once, KV cache not included).
We report each measured decode throughput as a fraction of that bound; a "fraction" above 1 is
flagged as a measurement error instead.

CPU bandwidth is *measured* (a large numpy copy, which streams ``2 × size`` bytes: read + write)
with the machine's load during the measurement, cached per CPU model and host, and re-measured
when the cached value is suspect (see :func:`cpu_bandwidth`); GPU bandwidth comes from a table
of vendor specifications.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from pydantic import BaseModel

from e3bench.core.fsutil import atomic_write_text
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
    """Peak memory bandwidth used for the roofline, with how and when it was obtained.

    ``source`` says where this run's value came from ("spec", "measured now", "cache", or
    "re-measured: <why the cached value was suspect>"); for a CPU measurement
    ``measured_utc`` and ``other_cpu_busy_pct`` (other processes' share of all CPUs during
    the measurement) give its conditions, and ``probe_gb_s`` is this run's quick check.
    """

    bytes_per_s: float
    method: str  # "measured: numpy copy ..." or "spec: vendor table"
    device: str
    source: str | None = None
    measured_utc: str | None = None
    other_cpu_busy_pct: float | None = None
    rounds_gb_s: list[float] = []
    probe_gb_s: float | None = None
    host: str | None = None


def gpu_bandwidth(name: str) -> Bandwidth | None:
    """Vendor-specified bandwidth of the CUDA device called ``name``, or None if unknown.

    The longest table key contained in the name wins, so "NVIDIA GH200 480GB" is a GH200, not
    an H200, and "H100 NVL" is not the SXM H100.
    """
    for key, gbs in sorted(GPU_BANDWIDTH_GB_S, key=lambda kv: -len(kv[0])):
        if key.lower() in name.lower():
            return Bandwidth(bytes_per_s=gbs * 1e9, method=f"spec: vendor table ({key}: {gbs:g} GB/s)", device=name, source="spec")
    return None


#: other processes' CPU share (%) above which a measurement counts as contended
BUSY_PCT = 25.0
#: a quick probe this much faster than the cached value means the cache was measured under load
PROBE_MARGIN = 1.25
#: a value measured under contention is re-measured when older than this (seconds)
RETRY_BUSY_S = 600.0
MEASURE_METHOD = (
    "measured: single-threaded numpy copy of 256 MiB (read + write bytes), best of 5 copies in "
    "each of up to 3 rounds 0.2 s apart, best round kept; cached per CPU model and host, "
    "re-measured when suspect"
)


class CopyMeasurement(BaseModel):
    """One bandwidth measurement: best bytes/s, each round's best (GB/s), other processes'
    CPU share during it (%), and when (UTC)."""

    bytes_per_s: float
    rounds_gb_s: list[float]
    other_cpu_busy_pct: float | None
    measured_utc: str


def copy_bandwidth(size_bytes: int, repeats: int) -> float:
    """Best-of-``repeats`` copy bandwidth of a ``size_bytes`` buffer, bytes/s (read + write)."""
    import numpy as np

    src = np.ones(max(size_bytes // 8, 1), dtype=np.float64)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # fault the pages in
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.nbytes / max(best, 1e-9)


def measure_cpu_bandwidth(
    size_bytes: int = 256 * 2**20, repeats: int = 5, rounds: int = 3, pause_s: float = 0.2
) -> CopyMeasurement:
    """Copy bandwidth measured robustly: up to ``rounds`` rounds of best-of-``repeats`` copies,
    ``pause_s`` apart, stopping early after a round on a quiet machine (other processes under
    ``BUSY_PCT`` % of the CPUs); the best round wins (contention only lowers a copy's speed)."""
    from e3bench.bench.envinfo import OtherCpu
    from e3bench.core.ids import utc_now_iso

    best: tuple[float, float | None] = (0.0, None)
    per_round: list[float] = []
    for i in range(max(rounds, 1)):
        if i:
            time.sleep(pause_s)
        other = OtherCpu()
        bw = copy_bandwidth(size_bytes, repeats)
        busy = other.busy_pct()
        per_round.append(bw / 1e9)
        if bw > best[0]:
            best = (bw, busy)
        if busy is not None and busy < BUSY_PCT:
            break
    return CopyMeasurement(
        bytes_per_s=best[0], rounds_gb_s=per_round, other_cpu_busy_pct=best[1], measured_utc=utc_now_iso()
    )


def quick_probe() -> float:
    """A ~50 ms copy-bandwidth check (64 MiB, best of 3), bytes/s: is the cached value plausible?"""
    return copy_bandwidth(64 * 2**20, 3)


def _pct(value: float | None) -> str:
    return "unknown %" if value is None else f"{value:.0f}%"


def _suspect(cached: dict | None, host: str, probe_bps: float) -> str | None:
    """Why a cached measurement should not be trusted now, or None."""
    if cached is None:
        return "no cached value"
    if cached.get("host") != host:
        return "cached value has no measurement conditions (older e3bench) or another host"
    if probe_bps > PROBE_MARGIN * cached["bytes_per_s"]:
        return (
            f"a quick probe now ({probe_bps / 1e9:.1f} GB/s) beats the cached {cached['bytes_per_s'] / 1e9:.1f} GB/s "
            f"by more than {PROBE_MARGIN - 1:.0%}: it was measured under contention"
        )
    busy = cached.get("other_cpu_busy_pct")
    if busy is None or busy >= BUSY_PCT:
        age = _age_s(cached.get("measured_utc"))
        if age is None or age > RETRY_BUSY_S:  # a contended value is retried, at most every RETRY_BUSY_S
            return f"cached value was measured while other processes used {_pct(busy)} of the CPUs"
    return None


def _age_s(utc: object) -> float | None:
    """Seconds since the ISO 8601 time ``utc`` (None when it is not one)."""
    from datetime import datetime, timezone

    try:
        then = datetime.fromisoformat(str(utc))
    except ValueError:
        return None
    if then.tzinfo is None:
        then = then.replace(tzinfo=timezone.utc)
    return (datetime.now(timezone.utc) - then).total_seconds()


def cpu_bandwidth(cache_dir: Path, cpu_model: str, *, host: str | None = None) -> Bandwidth:
    """The CPU's copy bandwidth for the roofline, cached in ``cache_dir/bandwidth.json`` per
    CPU model and host, with the conditions of the measurement.

    Every call runs a quick probe (:func:`quick_probe`); the cached value is re-measured
    (:func:`measure_cpu_bandwidth`) when it is suspect: absent, from an older e3bench or another
    host, measured while the machine was busy, or beaten by the probe. A new measurement
    replaces the cached one only when it is faster or the cached one was contended (copy
    bandwidth is only ever lowered by contention). Cache write errors are ignored.
    """
    import platform

    host = host if host is not None else platform.node()
    path = cache_dir / "bandwidth.json"
    try:
        cached_all = json.loads(path.read_text())
    except (OSError, ValueError):
        cached_all = {}
    if not isinstance(cached_all, dict):  # a damaged cache file: measure again
        cached_all = {}
    key = f"{cpu_model} @ {host}"
    cached = cached_all.get(key) if isinstance(cached_all.get(key), dict) else None
    if cached is None and isinstance(cached_all.get(cpu_model), dict):  # older e3bench: no host, no conditions
        cached = cached_all[cpu_model]
    probe = quick_probe()
    why = _suspect(cached, host, probe)
    if why is None:
        assert cached is not None
        return Bandwidth(**{**cached, "source": f"cache (measured {cached.get('measured_utc')})", "probe_gb_s": probe / 1e9})
    m = measure_cpu_bandwidth()
    entry = dict(
        bytes_per_s=m.bytes_per_s, method=MEASURE_METHOD, device=cpu_model, host=host, measured_utc=m.measured_utc,
        other_cpu_busy_pct=m.other_cpu_busy_pct, rounds_gb_s=m.rounds_gb_s,
    )  # fmt: skip
    if cached is not None and cached.get("host") == host and cached["bytes_per_s"] >= m.bytes_per_s:
        # contention only slows a copy: the faster measurement of this host stands
        src = (
            f"cache (measured {cached.get('measured_utc')}; {why}; re-measured {m.bytes_per_s / 1e9:.1f} GB/s "
            f"with other processes at {_pct(m.other_cpu_busy_pct)}: slower, cache kept)"
        )
        return Bandwidth(**{**cached, "source": src, "probe_gb_s": probe / 1e9})
    cached_all.pop(cpu_model, None)
    cached_all[key] = entry
    try:
        atomic_write_text(path, json.dumps(cached_all, indent=1))
    except OSError:
        pass
    source = "measured now" if cached is None else f"re-measured: {why}"
    return Bandwidth(**entry, source=source, probe_gb_s=probe / 1e9)


def roofline(bw: Bandwidth, weights_bytes: int, decode_tokens_per_s: dict[int, float]) -> Roofline:
    """Bound = batch × bandwidth / bytes per decode step (decode tokens/s) per batch size, and each
    measured decode throughput (tokens/s) as a fraction of it. ``weights_bytes`` is the backend's
    ``LoadInfo.weights_bytes``, counted by :data:`e3bench.core.decodebytes.RULE`. A fraction
    above 1 cannot happen (a decode step cannot read its weights faster than memory delivers
    them): it is not reported as a fraction but kept in ``over_bound`` with a
    ``measurement_error`` naming the likely cause (a bandwidth measured under load or stale)."""
    from e3bench.core.decodebytes import RULE

    bound = {b: b * bw.bytes_per_s / weights_bytes for b in decode_tokens_per_s}
    measured = {b: decode_tokens_per_s[b] / bound[b] for b in decode_tokens_per_s}
    over = {b: f for b, f in measured.items() if f > 1.0}
    error = None
    if over:
        worst = ", ".join(f"batch {b}: {100 * f:.0f} %" for b, f in sorted(over.items()))
        why = (
            f"the vendor-table bandwidth of {bw.device} is too low (please report it)"
            if bw.source == "spec"
            else "it was measured while other processes loaded the machine, or cached from such a measurement; "
            "delete bandwidth.json in the e3bench cache directory (it is measured again) and rerun on a quiet machine"
        )
        error = (
            f"decode ran faster than the memory-bandwidth bound ({worst} of it): a measurement error, not a "
            f"fraction; the bandwidth used, {bw.bytes_per_s / 1e9:.1f} GB/s ({bw.source or bw.method}), is too "
            f"low: {why}"
        )
    return Roofline(
        bandwidth_bytes_per_s=bw.bytes_per_s,
        bandwidth_method=bw.method,
        bandwidth_source=bw.source,
        bandwidth_measured_utc=bw.measured_utc,
        bandwidth_other_cpu_busy_pct=bw.other_cpu_busy_pct,
        bandwidth_probe_gb_s=bw.probe_gb_s,
        weights_bytes=weights_bytes,
        weights_rule=RULE,
        bound_decode_tokens_per_s=bound,
        fraction_of_bound={b: f for b, f in measured.items() if b not in over},
        over_bound=over,
        measurement_error=error,
    )
