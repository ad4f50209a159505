"""What else was going on while a configuration trained: GPU utilization sampled through NVML
(CUDA only) and the CPU load other processes put on the machine, so that throughput and energy
comparisons can tell a slower configuration from a busier machine.

* **GPU utilization**: ``nvmlDeviceGetUtilizationRates(handle).gpu`` (% of the sample period
  in which a kernel ran) every ``interval_s`` seconds; mean and p10 over the run.
* **Load by other processes**: busy CPU time of the whole machine (``psutil.cpu_times``: all
  but idle and iowait) minus the CPU time of this process and its children (DataLoader
  workers), divided by the wall time: the number of cores other processes kept busy. The 1-min
  load average at start and stop is kept beside it.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from typing import Any


def _tree_cpu_s(proc) -> float:
    """CPU seconds (user + system) of ``proc`` and its living children."""
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except Exception:  # noqa: BLE001 - a worker that exits between listing and reading
            pass
    return total


def _machine_busy_s(psutil) -> float:
    t = psutil.cpu_times()
    idle = t.idle + getattr(t, "iowait", 0.0)
    return sum(t) - idle


class UsageSampler:
    """``start()`` … ``stop()`` → dict of GPU utilization (CUDA) and machine load. ``nvml``
    replaces ``pynvml`` and ``psutil_mod`` ``psutil`` (tests); NVML failures leave the GPU
    figures None with the reason, never stop training."""

    def __init__(self, device: str = "cpu", *, nvml=None, psutil_mod=None, interval_s: float = 0.1) -> None:
        self.device = device
        self._nvml = nvml
        self._psutil = psutil_mod
        self.interval_s = interval_s
        self.samples: list[float] = []
        self.gpu_error: str | None = None
        self._handle = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = self._busy0 = self._own0 = 0.0
        self._load0: float | None = None

    def _psutil_mod(self):
        if self._psutil is None:
            import psutil

            self._psutil = psutil
        return self._psutil

    def _open_gpu(self) -> None:
        if not self.device.startswith("cuda"):
            return
        try:
            if self._nvml is None:
                import pynvml

                self._nvml = pynvml
            from e3bench.energy.meters.nvml import resolve_gpus

            self._nvml.nvmlInit()
            gid = resolve_gpus(self.device)[0]
            get = self._nvml.nvmlDeviceGetHandleByUUID if isinstance(gid, str) else self._nvml.nvmlDeviceGetHandleByIndex
            self._handle = get(gid)
        except Exception as exc:  # noqa: BLE001 - no NVML: utilization unknown, training goes on
            self.gpu_error = f"NVML unavailable: {type(exc).__name__}: {exc}"

    def start(self) -> None:
        """Open NVML (CUDA), note CPU counters and start sampling."""
        ps = self._psutil_mod()
        self._open_gpu()
        self._t0 = time.perf_counter()
        self._busy0 = _machine_busy_s(ps)
        self._own0 = _tree_cpu_s(ps.Process())
        self._load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        if self._handle is not None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="e3bench-gpu-util", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.samples.append(float(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu))
            except Exception as exc:  # noqa: BLE001
                self.gpu_error = f"{type(exc).__name__}: {exc}"
                return

    def stop(self) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """Stop sampling; return ``(gpu utilization dict or None on CPU, load dict)``."""
        ps = self._psutil_mod()
        wall = max(time.perf_counter() - self._t0, 1e-9)
        busy = _machine_busy_s(ps) - self._busy0
        own = _tree_cpu_s(ps.Process()) - self._own0
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        load = {
            "other_cores": max(0.0, (busy - own) / wall),
            "own_cores": own / wall,
            "loadavg_1min_start": self._load0,
            "loadavg_1min_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "method": "psutil.cpu_times (machine busy) − CPU time of this process and its children, ÷ wall time",
        }
        gpu = None
        if self.device.startswith("cuda"):
            s = sorted(self.samples)
            gpu = {
                "mean": statistics.fmean(s) if s else None,
                "p10": s[int(0.1 * (len(s) - 1))] if s else None,
                "samples": len(s),
                "interval_s": self.interval_s,
                "method": "nvmlDeviceGetUtilizationRates(handle).gpu sampled during training",
                "error": self.gpu_error,
            }
        return gpu, load
