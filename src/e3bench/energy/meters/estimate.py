"""Estimated CPU + RAM energy when no sensor is readable: a TDP model of *this process* (or of
given processes and their descendants: ``EstimateMeter(pids=...)``, a server under test).

    P_cpu = TDP_eff × (0.1 + 0.9·u³)      u = Δ(process CPU time) / Δwall / k
    P_ram = 0.375 W/GiB × RSS

``k`` is the number of logical CPUs this process may run on (its affinity set). ``u`` counts
the CPU time of every thread of this process (minus the meter's own polling thread), so other
processes on the machine do not raise the estimate. ``TDP_eff`` is the TDP share of those k
logical CPUs: TDP_socket / threads_per_socket × k (capped at all sockets). The cubic load curve
and the 10% floor are the usual TDP heuristic (docs/energy.md); the RAM figure is
CodeCarbon's long-standing convention of 3 W per 8 GB. Energy is the exact integral of the
model over the polled intervals (power is piecewise constant between polls).
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from e3bench.core.api import Method
from e3bench.core.errors import E3Error
from e3bench.core.fmt import count
from e3bench.core.host import cpu_model_name, cpu_sockets, rss_bytes, usable_logical_cpus
from e3bench.energy.meters.base import SampledMeter
from e3bench.energy.meters.sampling import Tick

IDLE_FRACTION = 0.1
RAM_W_PER_GIB = 0.375  # CodeCarbon's convention: 3 W per 8 GB of memory
#: Used when the CPU model is not in the table: CodeCarbon's fallback too (4 W per thread), and
#: within the 1.9–5.3 W per hardware thread that the table's parts give at TDP.
DEFAULT_W_PER_LOGICAL_CPU = 4.0
GIB = 1024**3


@dataclass(frozen=True)
class CpuTdp:
    """Per-socket thermal design power of a CPU model (vendor spec sheets)."""

    pattern: str  # case-insensitive regex searched in the model string
    tdp_w: float  # per socket; Intel desktop parts: processor base power (PBP)
    cores: int  # per socket
    threads: int  # per socket
    note: str = "vendor specification (TDP)"


CPU_TDP_TABLE: tuple[CpuTdp, ...] = (
    # AMD EPYC (server)
    CpuTdp(r"EPYC\s+9754\b", 360, 128, 256),
    CpuTdp(r"EPYC\s+9654\b", 360, 96, 192),
    CpuTdp(r"EPYC\s+9554\b", 360, 64, 128),
    CpuTdp(r"EPYC\s+9454\b", 290, 48, 96),
    CpuTdp(r"EPYC\s+9374F\b", 320, 32, 64),
    CpuTdp(r"EPYC\s+7763\b", 280, 64, 128),
    CpuTdp(r"EPYC\s+7742\b", 225, 64, 128),
    CpuTdp(r"EPYC\s+7702\b", 200, 64, 128),
    CpuTdp(r"EPYC\s+7543\b", 225, 32, 64),
    CpuTdp(r"EPYC\s+7513\b", 200, 32, 64),
    CpuTdp(r"EPYC\s+7452\b", 155, 32, 64),
    # Intel Xeon (server)
    CpuTdp(r"Xeon.*\b8480\+", 350, 56, 112),
    CpuTdp(r"Xeon.*\b8468\b", 350, 48, 96),
    CpuTdp(r"Xeon.*\b8380\b", 270, 40, 80),
    CpuTdp(r"Xeon.*\b8358\b", 250, 32, 64),
    CpuTdp(r"Xeon.*\b6338\b", 205, 32, 64),
    CpuTdp(r"Xeon.*\b6248\b", 150, 20, 40),
    CpuTdp(r"Xeon.*\b6148\b", 150, 20, 40),
    CpuTdp(r"Xeon.*E5-2690 v4", 135, 14, 28),
    # Intel Core (desktop / laptop)
    CpuTdp(r"i9-13900K\b", 125, 24, 32),
    CpuTdp(r"i9-12900K\b", 125, 16, 24),
    CpuTdp(r"i7-13700K\b", 125, 16, 24),
    CpuTdp(r"i7-12700K\b", 125, 12, 20),
    CpuTdp(r"i5-13600K\b", 125, 14, 20),
    CpuTdp(r"i5-12400\b", 65, 6, 12),
    CpuTdp(r"i7-10700K\b", 125, 8, 16),
    CpuTdp(r"i9-9900K\b", 95, 8, 16),
    CpuTdp(r"i7-8700K\b", 95, 6, 12),
    CpuTdp(r"i7-1165G7\b", 28, 4, 8),
    # AMD Ryzen / Threadripper
    CpuTdp(r"Threadripper\s+3990X\b", 280, 64, 128),
    CpuTdp(r"Ryzen 9 7950X\b", 170, 16, 32),
    CpuTdp(r"Ryzen 9 5950X\b", 105, 16, 32),
    CpuTdp(r"Ryzen 9 5900X\b", 105, 12, 24),
    CpuTdp(r"Ryzen 7 7700X\b", 105, 8, 16),
    CpuTdp(r"Ryzen 7 5800X\b", 105, 8, 16),
    CpuTdp(r"Ryzen 5 5600X\b", 65, 6, 12),
    # Apple silicon: Apple publishes no TDP; approximate CPU-cluster power under full
    # multi-threaded load as measured in public reviews (AnandTech). Treat as rough.
    CpuTdp(r"Apple M1 (Pro|Max)\b", 30, 10, 10, "approx. measured CPU power (no Apple TDP)"),
    CpuTdp(r"Apple M1\b(?! (Pro|Max|Ultra))", 20, 8, 8, "approx. measured CPU power (no Apple TDP)"),
    CpuTdp(r"Apple M2\b(?! (Pro|Max|Ultra))", 20, 8, 8, "approx. measured CPU power (no Apple TDP)"),
)


def lookup_tdp(model: str) -> CpuTdp | None:
    """The TDP table entry whose pattern matches the CPU model string, or None."""
    for entry in CPU_TDP_TABLE:
        if re.search(entry.pattern, model, flags=re.IGNORECASE):
            return entry
    return None


@dataclass(frozen=True)
class CpuPowerModel:
    """The resolved inputs of the TDP model for this process."""

    cpu_model: str
    tdp_w: float  # TDP_eff: full-load power of the k logical CPUs this process can use
    tdp_source: str
    logical_cpus: int  # k
    scaling: str

    def cpu_power_w(self, utilisation: float) -> float:
        u = min(max(utilisation, 0.0), 1.0)
        return self.tdp_w * (IDLE_FRACTION + (1 - IDLE_FRACTION) * u**3)


def resolve_power_model(
    *,
    cpu_tdp_w: float | None = None,
    cpu_model: str | None = None,
    logical_cpus: int | None = None,
    total_logical_cpus: int | None = None,
    sockets: int | None = None,
) -> CpuPowerModel:
    """Pick TDP_eff: explicit override, else the table, else the per-logical-CPU default.

    Raises :class:`E3Error` for an override that is not a positive, finite number of watts.
    """
    if cpu_tdp_w is not None and not (math.isfinite(cpu_tdp_w) and cpu_tdp_w > 0):
        raise E3Error(
            f"cpu_tdp_w must be a positive number of watts, got {cpu_tdp_w!r}",
            "pass the CPU's TDP, e.g. --cpu-tdp-w 65, or leave it unset to use the TDP table",
        )
    model = cpu_model if cpu_model is not None else cpu_model_name()
    k = logical_cpus if logical_cpus is not None else usable_logical_cpus()
    n_all = total_logical_cpus if total_logical_cpus is not None else (os.cpu_count() or k)
    if cpu_tdp_w is not None:
        share = min(k, n_all) / max(n_all, 1)
        return CpuPowerModel(
            model, cpu_tdp_w * share, f"override: cpu_tdp_w={cpu_tdp_w:g} W", k,
            f"override is the full-load power of all {n_all} logical CPUs; "
            f"scaled by {min(k, n_all)}/{n_all} usable",
        )
    entry = lookup_tdp(model)
    if entry is not None:
        n_sockets = sockets if sockets is not None else cpu_sockets()
        used = min(k, entry.threads * n_sockets)
        tdp_eff = entry.tdp_w / entry.threads * used
        return CpuPowerModel(
            model, tdp_eff,
            f"table: {entry.tdp_w:g} W per socket, {entry.cores} cores/{entry.threads} threads "
            f"({entry.note})",
            k,
            f"TDP_socket / {entry.threads} threads × {used} usable logical CPUs "
            f"(of {entry.threads * n_sockets} on {count(n_sockets, 'socket')})",
        )
    return CpuPowerModel(
        model, DEFAULT_W_PER_LOGICAL_CPU * k,
        f"default: CPU '{model}' is not in the TDP table, assumed "
        f"{DEFAULT_W_PER_LOGICAL_CPU:g} W per logical CPU; pass cpu_tdp_w for a better figure",
        k,
        f"{DEFAULT_W_PER_LOGICAL_CPU:g} W × {k} usable logical CPUs",
    )


def process_cpu_s() -> float:
    """CPU time of every thread of this process (user + system), seconds, ns resolution.

    ``time.process_time`` (CLOCK_PROCESS_CPUTIME_ID) rather than ``os.times``, whose 10 ms
    ticks would quantise a 100 ms interval's utilisation in steps of 0.1/k.
    """
    return time.process_time()


class ProcessTree:
    """CPU time and RSS of given processes and all their descendants (psutil), for an estimate
    that follows a server instead of this process (``e3bench serve``).

    CPU time is user + system of every live process of the trees plus what exited children
    left in their parent's ``children_*`` counters; a process that ends between two reads takes
    its last CPU time with it, so the sum is kept monotonic (a drop reads as no new CPU time)."""

    def __init__(self, pids: Sequence[int]) -> None:
        import psutil  # a core dependency, imported when a meter follows other processes

        self._psutil = psutil
        self.pids = [int(p) for p in pids]
        self._procs: dict[int, object] = {}
        self._last_cpu_s = 0.0

    def _tree(self) -> list:
        ps = self._psutil
        out = []
        for pid in self.pids:
            try:
                root = self._procs.get(pid) or ps.Process(pid)
                self._procs[pid] = root
                out.append(root)
                out.extend(root.children(recursive=True))
            except (ps.NoSuchProcess, ps.AccessDenied, ps.ZombieProcess):
                continue
        return out

    def cpu_s(self) -> float:
        """Summed CPU seconds of the process trees (monotonic, see the class docstring)."""
        ps = self._psutil
        total = 0.0
        for p in self._tree():
            try:
                t = p.cpu_times()
            except (ps.NoSuchProcess, ps.AccessDenied, ps.ZombieProcess):
                continue
            total += t.user + t.system + getattr(t, "children_user", 0.0) + getattr(t, "children_system", 0.0)
        self._last_cpu_s = max(self._last_cpu_s, total)
        return self._last_cpu_s

    def rss_bytes(self) -> float:
        """Summed resident set size of the process trees, bytes."""
        ps = self._psutil
        total = 0
        for p in self._tree():
            try:
                total += p.memory_info().rss
            except (ps.NoSuchProcess, ps.AccessDenied, ps.ZombieProcess):
                continue
        return float(total)


class EstimateReader:
    """Cumulative modelled energy (cpu, ram) updated on each read."""

    def __init__(
        self,
        model: CpuPowerModel,
        *,
        overhead_cpu_s: Callable[[], float],
        cpu_time_s: Callable[[], float] = process_cpu_s,
        rss_b: Callable[[], float] = rss_bytes,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.model = model
        self.overhead_cpu_s = overhead_cpu_s
        self.cpu_time_s = cpu_time_s
        self.rss_b = rss_b
        self.clock = clock
        self.cum = {"cpu": 0.0, "ram": 0.0}
        self.cpu_s_total = 0.0
        self.rss_gib_s_total = 0.0
        self.clipped_intervals = 0
        self._last: tuple[float, float, float] | None = None  # t_s, cpu_s, rss_gib

    def read(self) -> Tick:
        cpu_s = self.cpu_time_s() - self.overhead_cpu_s()
        rss_gib = self.rss_b() / GIB
        t_s = self.clock()
        if not (math.isfinite(cpu_s) and math.isfinite(rss_gib) and math.isfinite(t_s)):
            raise ValueError(f"non-finite model input (cpu {cpu_s!r} s, rss {rss_gib!r} GiB, t {t_s!r} s)")
        if self._last is not None:
            t0, cpu0, rss0 = self._last
            dt_s = t_s - t0
            if dt_s > 0:
                d_cpu_s = max(cpu_s - cpu0, 0.0)
                u = d_cpu_s / dt_s / self.model.logical_cpus
                if u > 1.0:
                    self.clipped_intervals += 1
                self.cum["cpu"] += self.model.cpu_power_w(u) * dt_s
                mean_rss_gib = (rss0 + rss_gib) / 2
                self.cum["ram"] += RAM_W_PER_GIB * mean_rss_gib * dt_s
                self.cpu_s_total += d_cpu_s
                self.rss_gib_s_total += mean_rss_gib * dt_s
        self._last = (t_s, cpu_s, rss_gib)
        return Tick(
            t_s=t_s,
            energy_j=dict(self.cum),
            counts={
                "process_cpu_s_total": self.cpu_s_total,
                "rss_gib_s_total": self.rss_gib_s_total,
                "utilisation_clipped_intervals_total": float(self.clipped_intervals),
            },
        )


class EstimateMeter(SampledMeter):
    """TDP model of this process's CPU and RAM power: method ``estimated``."""

    name: ClassVar[str] = "estimate"
    method: ClassVar[Method] = "estimated"

    def __init__(
        self,
        *,
        cpu_tdp_w: float | None = None,
        sample_interval_s: float = 0.1,
        power_model: CpuPowerModel | None = None,
        cpu_time_s: Callable[[], float] = process_cpu_s,
        rss_b: Callable[[], float] = rss_bytes,
        pids: Sequence[int] | None = None,
    ) -> None:
        self._model_error: E3Error | None = None
        #: processes followed instead of this one (their trees), or None: this process
        self.pids = list(pids) if pids else None
        if self.pids:
            tree = ProcessTree(self.pids)
            cpu_time_s, rss_b = tree.cpu_s, tree.rss_bytes
        try:
            self.power_model = power_model or resolve_power_model(cpu_tdp_w=cpu_tdp_w)
        except E3Error as exc:  # the meter is unavailable, with this reason
            self._model_error = exc
            self.power_model = resolve_power_model()
        self._cpu_time_s = cpu_time_s
        self._rss_b = rss_b
        super().__init__(sample_interval_s=sample_interval_s)

    def _probe(self) -> EstimateReader:
        if self._model_error is not None:
            raise self._model_error
        return EstimateReader(
            self.power_model,
            # the polling thread runs in this process, not in the followed ones
            overhead_cpu_s=(lambda: 0.0) if self.pids else (lambda: self.sampler_thread_cpu_s),
            cpu_time_s=self._cpu_time_s,
            rss_b=self._rss_b,
        )

    def sensor(self) -> str:
        return "tdp-model"

    def idle_power_w(self, rss_gib: float | None = None) -> float:
        """The model's floor: 0.1·TDP_eff plus RAM at the current (or given) RSS."""
        rss = self._rss_b() / GIB if rss_gib is None else rss_gib
        return IDLE_FRACTION * self.power_model.tdp_w + RAM_W_PER_GIB * rss

    def _details(self, t0: Tick, t1: Tick, ticks: list[Tick]) -> dict[str, object]:
        m = self.power_model
        duration_s = max(t1.t_s - t0.t_s, 1e-12)
        cpu_s = t1.counts["process_cpu_s_total"] - t0.counts["process_cpu_s_total"]
        rss_gib_s = t1.counts["rss_gib_s_total"] - t0.counts["rss_gib_s_total"]
        return {
            "formula": (
                "P = TDP_eff × (0.1 + 0.9·u³) + 0.375 W/GiB × RSS; "
                "u = Δprocess_cpu_s / Δwall_s / k; E = Σ_intervals P·Δt"
            ),
            "cpu_model": m.cpu_model,
            "tdp_w": m.tdp_w,
            "tdp_source": m.tdp_source,
            "tdp_scaling": m.scaling,
            "logical_cpus_k": m.logical_cpus,
            "idle_fraction": IDLE_FRACTION,
            "ram_w_per_gib": RAM_W_PER_GIB,
            "ram_basis": f"RSS of {self._scope()} (CodeCarbon convention: 3 W per 8 GB)",
            "mean_utilisation": cpu_s / duration_s / m.logical_cpus,
            "mean_rss_gib": rss_gib_s / duration_s,
            "utilisation_scope": (
                f"{self._scope()}: user+system CPU time of those processes and their descendants (psutil); "
                "other processes are not counted" if self.pids else
                "this process's threads only (time.process_time: user+system, minus the meter's own "
                "polling thread); other processes and child processes are not counted"
            ),
        }

    def _scope(self) -> str:
        return f"the process tree(s) of pid {', '.join(map(str, self.pids))}" if self.pids else "this process"
