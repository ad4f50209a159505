"""Faithful fakes for energy sensors: an NVML module and a Linux powercap (RAPL) tree."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from e3bench.core.api import EnergyReading


class FakeNvml:
    """Stands in for the ``pynvml`` module: the calls NvmlMeter makes, with NVML's units.

    Power is piecewise constant (``set_power``); the energy counter (mJ) is its exact integral,
    advanced only every ``counter_period_s`` (default 100 ms, the slow end of real GPUs: tens of
    ms to 100 ms) on a grid offset by ``counter_phase_s`` from the fake's creation, like the real
    one; 0 = continuous, for tests of something else. Power usage is the mean over the last
    ``power_average_s`` (default 1 s: Ampere and newer report a ~1 s moving average; 0 =
    instantaneous). ``lost = True`` makes every device call raise GPU_IS_LOST, as a GPU falling
    off the bus does.
    """

    NVML_ERROR_UNINITIALIZED = 1
    NVML_ERROR_INVALID_ARGUMENT = 2
    NVML_ERROR_NOT_SUPPORTED = 3
    NVML_ERROR_LIBRARY_NOT_FOUND = 12
    NVML_ERROR_GPU_IS_LOST = 15

    _MESSAGES = {
        1: "Uninitialized",
        2: "Invalid Argument",
        3: "Not Supported",
        12: "NVML Shared Library Not Found",
        15: "GPU is lost",
    }

    class NVMLError(Exception):
        def __init__(self, value: int) -> None:
            super().__init__(value)
            self.value = value

        def __str__(self) -> str:
            return FakeNvml._MESSAGES.get(self.value, f"Unknown Error {self.value}")

    def __init__(
        self,
        *,
        gpus: int = 1,
        power_w: float = 100.0,
        energy_supported: bool = True,
        power_supported: bool = True,
        init_error: int | None = None,
        counter_period_s: float = 0.1,
        counter_phase_s: float = 0.037,
        name: str = "NVIDIA H100 80GB HBM3",
        power_limit_w: float = 700.0,
        power_average_s: float = 1.0,
    ) -> None:
        self.power_average_s = power_average_s
        self.counter_phase_s = counter_phase_s
        self.n_gpus = gpus
        self.energy_supported = energy_supported
        self.power_supported = power_supported
        self.init_error = init_error
        self.counter_period_s = counter_period_s
        self.name = name
        self.power_limit_w = power_limit_w
        self.lost = False
        self.initialised = 0
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()
        t0 = time.perf_counter()
        # per GPU: list of (t_s, power_w) change points, and a counter offset (mJ)
        self._segments = [[(t0, power_w)] for _ in range(gpus)]
        self._offset_mj = [1_000_000_000.0 for _ in range(gpus)]  # counters are never 0

    # -------------------------------------------------------------------- controls
    def set_power(self, gpu: int, power_w: float) -> None:
        with self._lock:
            self._segments[gpu].append((time.perf_counter(), power_w))

    def glitch_counter(self, gpu: int, delta_mj: float) -> None:
        """Shift the raw counter (negative: a counter glitch / reset)."""
        with self._lock:
            self._offset_mj[gpu] += delta_mj

    def energy_j_between(self, gpu: int, t0_s: float, t1_s: float) -> float:
        return (self._integral_mj(gpu, t1_s) - self._integral_mj(gpu, t0_s)) / 1000.0

    def _integral_mj(self, gpu: int, t_s: float) -> float:
        segs = self._segments[gpu]
        total_j = 0.0
        for i, (start, p) in enumerate(segs):
            end = segs[i + 1][0] if i + 1 < len(segs) else t_s
            end = min(end, t_s)
            if end > start:
                total_j += p * (end - start)
        return total_j * 1000.0

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def _check(self, handle: int | None = None) -> None:
        if not self.initialised:
            raise self.NVMLError(self.NVML_ERROR_UNINITIALIZED)
        if self.lost:
            raise self.NVMLError(self.NVML_ERROR_GPU_IS_LOST)
        if handle is not None and not 0 <= handle < self.n_gpus:
            raise self.NVMLError(self.NVML_ERROR_INVALID_ARGUMENT)

    # -------------------------------------------------------------------- pynvml API
    def nvmlInit(self) -> None:
        self._count("nvmlInit")
        if self.init_error is not None:
            raise self.NVMLError(self.init_error)
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        self._count("nvmlShutdown")
        self._check()
        self.initialised -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        self._check()
        return "550.54.15"

    def nvmlDeviceGetCount(self) -> int:
        self._check()
        return self.n_gpus

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        self._check(index)
        return index

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> int:
        self._check()
        for i in range(self.n_gpus):
            if uuid == f"GPU-fake-{i}":
                return i
        raise self.NVMLError(self.NVML_ERROR_INVALID_ARGUMENT)

    def nvmlDeviceGetName(self, handle: int) -> str:
        self._check(handle)
        return self.name

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: int) -> int:
        self._check(handle)
        return int(self.power_limit_w * 1000)

    def nvmlDeviceGetMemoryInfo(self, handle: int):
        """NVML's memory record (bytes): GPU i has ``free_bytes[i]`` free (default 40 GiB - i GiB,
        so every GPU's figure is its own)."""
        from types import SimpleNamespace

        self._check(handle)
        free = getattr(self, "free_bytes", None) or [(40 - i) * 2**30 for i in range(self.n_gpus)]
        return SimpleNamespace(total=80 * 2**30, free=free[handle], used=80 * 2**30 - free[handle])

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        self._count("nvmlDeviceGetPowerUsage")
        self._check(handle)
        if not self.power_supported:
            raise self.NVMLError(self.NVML_ERROR_NOT_SUPPORTED)
        with self._lock:
            if self.power_average_s > 0:  # before the fake existed the GPU drew its first power
                t1 = time.perf_counter()
                t0 = t1 - self.power_average_s
                start, p0 = self._segments[handle][0]
                before_mj = p0 * max(start - t0, 0.0) * 1000.0
                return int((self._integral_mj(handle, t1) - self._integral_mj(handle, t0) + before_mj) / (t1 - t0))
            return int(self._segments[handle][-1][1] * 1000)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: int) -> int:
        self._count("nvmlDeviceGetTotalEnergyConsumption")
        self._check(handle)
        if not self.energy_supported:
            raise self.NVMLError(self.NVML_ERROR_NOT_SUPPORTED)
        with self._lock:
            t_s = time.perf_counter()
            if self.counter_period_s > 0:  # the value of the counter's last update
                t0 = self._segments[handle][0][0] + self.counter_phase_s - self.counter_period_s
                t_s = t0 + (t_s - t0) // self.counter_period_s * self.counter_period_s
            return int(self._offset_mj[handle] + self._integral_mj(handle, t_s))


# ----------------------------------------------------------------- synthetic readings
def stepped_counter_reading(
    segments: list[tuple[float, float, float]],
    polls: list[float],
    *,
    counter_period_s: float = 0.1,
    grid_origin_s: float = 0.0,
) -> EnergyReading:
    """The reading NvmlMeter would give for piecewise-constant power ``segments`` (start_s,
    end_s, watts; zero outside them) read at ``polls``: energy from a counter that advances
    only every ``counter_period_s`` on a grid starting at ``grid_origin_s`` (as FakeNvml's
    stepped counter does), instantaneous power samples at each poll, deterministic.
    """
    from e3bench.core.api import EnergyReading, PowerSample

    def energy(t: float) -> float:
        return sum(p * (min(t, b) - a) for a, b, p in segments if t > a)

    def counter(t: float) -> float:
        return energy(grid_origin_s + ((t - grid_origin_s) // counter_period_s) * counter_period_s)

    def power(t: float) -> float:
        return next((p for a, b, p in segments if a <= t < b), 0.0)

    base = counter(polls[0])
    cum = [(t, counter(t) - base) for t in polls]
    samples = [PowerSample(t, power(t), d) for t in polls for d in ("gpu0", "total")]
    total = cum[-1][1]
    return EnergyReading(
        "generate", polls[-1] - polls[0], {"gpu0": total, "total": total}, "measured", "nvml:total_energy_counter",
        details={"counter_update_period_s": counter_period_s, "sensor_update_period_s": counter_period_s},
        samples=samples, cumulative_j=cum,
    )  # fmt: skip


# --------------------------------------------------------------------------- powercap
def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def make_zone(
    parent: Path, zone: str, name: str, energy_uj: int | None, max_range_uj: int | None
) -> Path:
    d = parent / zone
    d.mkdir(parents=True, exist_ok=True)
    (d / "name").write_text(name + "\n")
    if energy_uj is not None:
        write_atomic(d / "energy_uj", f"{energy_uj}\n")
    if max_range_uj is not None:
        (d / "max_energy_range_uj").write_text(f"{max_range_uj}\n")
    return d


MAX_RANGE_UJ = 262_143_328_850  # a real value from an Intel server


def make_powercap_tree(root: Path) -> dict[str, Path]:
    """A two-socket powercap tree like a real server's, laid out as sysfs does.

    intel-rapl:0 package-0 with nested intel-rapl:0:0 dram (nested only) and intel-rapl:0:1
    core (not summed); intel-rapl:1 package-1 whose dram subzone also appears flat in the class
    dir (as a symlink, like sysfs); intel-rapl:2 psys (not summed); a non-RAPL control dir.
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / "intel-rapl").mkdir()  # the control type dir, no energy_uj
    p0 = make_zone(root, "intel-rapl:0", "package-0", 1_000_000, MAX_RANGE_UJ)
    d0 = make_zone(p0, "intel-rapl:0:0", "dram", 2_000_000, MAX_RANGE_UJ)
    make_zone(p0, "intel-rapl:0:1", "core", 500_000, MAX_RANGE_UJ)
    p1 = make_zone(root, "intel-rapl:1", "package-1", 3_000_000, MAX_RANGE_UJ)
    d1 = make_zone(p1, "intel-rapl:1:0", "dram", 4_000_000, MAX_RANGE_UJ)
    os.symlink(d1, root / "intel-rapl:1:0")
    make_zone(root, "intel-rapl:2", "psys", 9_000_000, MAX_RANGE_UJ)
    return {"cpu-package-0": p0, "dram-0": d0, "cpu-package-1": p1, "dram-1": d1}
