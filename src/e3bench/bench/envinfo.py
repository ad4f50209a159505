"""Hardware/software fingerprint recorded in every result (the manifest)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from e3bench.core.fmt import count
from e3bench.core.host import cpu_model_name, usable_logical_cpus
from e3bench.results.manifest import GpuInfo, Manifest

_LIBS = (
    "torch", "transformers", "tokenizers", "accelerate", "gguf", "numpy", "pydantic",
    "onnxruntime", "optimum", "llama_cpp_python", "vllm", "lm_eval", "nvidia-ml-py",
    "codecarbon", "peft",
)  # fmt: skip


def e3bench_version() -> str:
    """The installed e3bench version (``0+unknown`` when running from an uninstalled tree)."""
    try:
        return metadata.version("e3bench")
    except metadata.PackageNotFoundError:
        return "0+unknown"


@lru_cache(maxsize=1)
def git_sha() -> str | None:
    """HEAD of the e3bench checkout (``-dirty`` with tracked changes); None outside git."""
    root = Path(__file__).resolve().parents[3]  # src/e3bench/bench/envinfo.py → repository root
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        sha = out.stdout.strip() or None
        if sha:
            dirty = subprocess.run(
                ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True, text=True, timeout=5,
            ).stdout.strip()  # fmt: skip
            return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None
    return None


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that shape the numbers (absent ones left out)."""
    out = {}
    for name in _LIBS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def gpu_info() -> list[GpuInfo]:
    """GPUs as torch sees them (only if torch is already imported or cheap to import)."""
    gpus: list[GpuInfo] = []
    try:
        import torch

        if not torch.cuda.is_available():
            return gpus
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            gpus.append(GpuInfo(index=i, name=p.name, memory_total_bytes=p.total_memory, cuda=torch.version.cuda))
    except Exception:  # noqa: BLE001 - a fingerprint must never break a run
        return gpus
    try:  # driver and power limit from NVML when available
        import pynvml

        pynvml.nvmlInit()
        drv = pynvml.nvmlSystemGetDriverVersion()
        for g in gpus:
            h = pynvml.nvmlDeviceGetHandleByIndex(g.index)
            g.driver = drv if isinstance(drv, str) else drv.decode()
            g.power_limit_w = pynvml.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0
    except Exception:  # noqa: BLE001
        pass
    return gpus


#: Other processes' share of all CPUs (%) above which a run is flagged as contended. The 1-min
#: load average was the old test; it stays high for a minute after a previous run ends.
BUSY_OTHER_CPU_PCT = 25.0


class OtherCpu:
    """Other processes' CPU use over a stretch of time: ``OtherCpu()`` starts the clock,
    :meth:`busy_pct` gives system-wide CPU busy % since then with this process's own CPU
    time taken out (None where psutil cannot tell)."""

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        try:
            self._start = (time.perf_counter(), psutil.cpu_times(), psutil.Process().cpu_times())
        except (OSError, psutil.Error):
            self._start = None

    def busy_pct(self) -> float | None:
        """Other processes' share of all CPUs (%) since construction."""
        psutil = self._psutil
        if self._start is None:
            return None
        try:
            w1, s1, m1 = time.perf_counter(), psutil.cpu_times(), psutil.Process().cpu_times()
        except (OSError, psutil.Error):
            return None
        w0, s0, m0 = self._start
        own = (m1.user + m1.system) - (m0.user + m0.system)
        # the CPUs' own accounted time (busy + idle + iowait), not wall × count: on a saturated
        # machine the tick-based busy time can outrun the wall clock (100.5 % was seen)
        total = sum(s1) - sum(s0) - (getattr(s1, "guest", 0.0) + getattr(s1, "guest_nice", 0.0)
                                     - getattr(s0, "guest", 0.0) - getattr(s0, "guest_nice", 0.0))  # fmt: skip
        if total <= 0:
            total = (w1 - w0) * (psutil.cpu_count() or 1)
        return max(0.0, 100.0 * (_busy(s1) - _busy(s0) - own) / total) if total > 0 else None


def _busy(t) -> float:  # noqa: ANN001 - psutil's scputimes
    return sum(getattr(t, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq", "steal"))


def other_cpu_busy_pct(seconds: float = 0.5) -> float | None:
    """System-wide CPU busy % over ``seconds`` with this process's own CPU time taken out."""
    probe = OtherCpu()
    time.sleep(seconds)
    return probe.busy_pct()


def busy_warning(m: Manifest, what: str = "run") -> str | None:
    """A warning when other processes were using the CPU just before ``what`` started."""
    cores = m.cpu_affinity_cores or m.cpu_cores_logical
    tail = "CPU timings and energy will be slower and noisier than on a quiet machine"
    if m.other_cpu_busy_pct_before is not None:
        if m.other_cpu_busy_pct_before > BUSY_OTHER_CPU_PCT:
            return (
                f"machine busy before the {what}: other processes used {m.other_cpu_busy_pct_before:.0f}% "
                f"of {count(cores, 'CPU')} (0.5 s sample); {tail}"
            )
        return None
    if m.load_avg_1m_before is not None and m.load_avg_1m_before > 0.5 * cores:
        return f"machine busy before the {what}: 1-min load average {m.load_avg_1m_before:.2f} on {cores} cores; {tail}"
    return None


def collect(torch_threads: int | None = None, *, sample_cpu: bool = True) -> Manifest:
    """The machine fingerprint. ``sample_cpu`` spends 0.5 s measuring other processes' CPU use
    (for the busy-machine warning); records of runs that never ran skip it."""
    import psutil

    return Manifest(
        e3bench_version=e3bench_version(),
        git_sha=git_sha(),
        python=sys.version.split()[0],
        platform=platform.platform(),
        libraries=library_versions(),
        cpu_model=cpu_model_name(),
        cpu_cores_logical=os.cpu_count() or 1,
        cpu_cores_physical=psutil.cpu_count(logical=False),
        cpu_affinity_cores=usable_logical_cpus(),
        memory_total_bytes=psutil.virtual_memory().total,
        gpus=gpu_info(),
        torch_threads=torch_threads,
        thread_env={
            k: v
            for k, v in os.environ.items()
            if k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "CUDA_VISIBLE_DEVICES")
        },
        load_avg_1m_before=os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        hostname=platform.node(),
        other_cpu_busy_pct_before=other_cpu_busy_pct() if sample_cpu else None,
    )
