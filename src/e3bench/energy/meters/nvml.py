"""NVIDIA GPU energy from NVML (package ``nvidia-ml-py``, module ``pynvml``; extra ``nvml``).

Primary: diff ``nvmlDeviceGetTotalEnergyConsumption`` (mJ since driver load; Volta and newer).
The counter advances in steps (every few tens of ms up to ~100 ms, by GPU), so a plain diff of
two reads is off by up to one step of energy at each end (-28 % on a 0.5 s window in a test).
Each window boundary therefore waits (≤ 1.5 update periods, polling every 1 ms) for the
counter's next update and reads then: the window is delimited by counter updates, its energy is
exact for what it spans, and its duration includes the wait (the GPU idles, after
``synchronize``; net energy removes that idle share). With several GPUs the wait is for all of
them; a GPU that updated earlier keeps ≤ one step of its own error.
Fallback (older GPUs, or the counter errors): integrate ``nvmlDeviceGetPowerUsage`` (mW) polled
at <= 10 Hz. The poll also gives the power time series. Hand-written on purpose: e3bench needs
readings on its own clock (the runner's ``perf_counter``) for every window, plus a power series
to split prefill from decode energy; zeus's monitor keeps its own windows and timestamps and
CodeCarbon gives totals only. The sensor part itself is two NVML calls.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, ClassVar

from e3bench.core.api import Method
from e3bench.core.errors import E3Error, require
from e3bench.energy.meters.base import SampledMeter
from e3bench.energy.meters.sampling import Counter, Tick

#: The energy counter advances roughly every 100 ms; shorter windows are flagged.
COUNTER_UPDATE_PERIOD_S = 0.1
#: Power usage on Ampere and newer is a ~1 s moving average: the fallback's resolution.
POWER_AVERAGE_S = 1.0
#: Longest wait at a window boundary for the counter's next update, and the polling pause.
ALIGN_TIMEOUT_S = 1.5 * COUNTER_UPDATE_PERIOD_S
ALIGN_POLL_S = 0.001
NVML_ERROR_NOT_SUPPORTED = 3
NO_GPU_FIX = (
    "run on a machine with an NVIDIA GPU and driver (nvidia-smi must work), "
    "or use --meter rapl / --meter estimate"
)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def resolve_gpus(device: str, environ: Mapping[str, str] | None = None) -> list[int | str]:
    """NVML index (or UUID) of the GPU that ``device`` ("cuda", "cuda:N") names.

    CUDA renumbers GPUs by ``CUDA_VISIBLE_DEVICES``; NVML does not. ``cuda:1`` with
    ``CUDA_VISIBLE_DEVICES=2,3`` is NVML index 3; UUID entries are returned as strings.
    """
    env = os.environ if environ is None else environ
    kind, _, idx = device.partition(":")
    if kind != "cuda":
        raise E3Error(f"NVML meters GPUs, but the device is '{device}'", "use --device cuda")
    cuda_index = int(idx) if idx else 0
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return [cuda_index]
    entries = [e.strip() for e in visible.split(",") if e.strip()]
    if cuda_index >= len(entries) or entries[cuda_index].startswith("-"):
        raise E3Error(
            f"device {device} is not visible (CUDA_VISIBLE_DEVICES={visible!r})",
            "pick a visible device or change CUDA_VISIBLE_DEVICES",
        )
    entry = entries[cuda_index]
    return [int(entry)] if entry.isdigit() else [entry]


@dataclass
class GpuInfo:
    """One metered GPU: the record's domain name and NVML's handle id."""

    domain: str  # "gpu0" (CUDA numbering, as the user wrote the device)
    nvml_id: int | str
    handle: Any
    name: str
    power_limit_w: float | None


class NvmlReader:
    """Cumulative energy per GPU: counter diffs, or trapezoids of polled power."""

    def __init__(self, nvml: ModuleType, gpus: list[GpuInfo], *, use_counter: bool) -> None:
        self.nvml = nvml
        self.gpus = gpus
        self.use_counter = use_counter
        self.counters = {g.domain: Counter(scale_j=1e-3) for g in gpus}
        self.power_errors = 0
        self._integrated_j = {g.domain: 0.0 for g in gpus}
        self._last: dict[str, tuple[float, float]] = {}  # domain -> (t_s, power_w)
        self.align_timeouts = 0  # window boundaries whose counter did not update in time

    def wait_for_update(self, timeout_s: float = ALIGN_TIMEOUT_S) -> bool:
        """Poll every GPU's raw counter until each has changed once (its next update), at most
        ``timeout_s``; False on timeout (the counter then moves slower than expected). NVML
        errors propagate (the caller's read counts them)."""
        get = self.nvml.nvmlDeviceGetTotalEnergyConsumption
        first = {g.domain: get(g.handle) for g in self.gpus}
        waiting = set(first)
        deadline = time.perf_counter() + timeout_s
        while waiting and time.perf_counter() < deadline:
            time.sleep(ALIGN_POLL_S)
            waiting = {g.domain for g in self.gpus if g.domain in waiting and get(g.handle) == first[g.domain]}
        return not waiting

    def read(self) -> Tick:
        nvml = self.nvml
        t_start = time.perf_counter()
        power: dict[str, float] | None = {}
        raw_mj: dict[str, int] = {}
        for g in self.gpus:
            try:
                p_w = nvml.nvmlDeviceGetPowerUsage(g.handle) / 1000.0
                if not math.isfinite(p_w):
                    raise ValueError(f"power usage of {g.domain} is not finite ({p_w!r})")
                if power is not None:
                    power[g.domain] = p_w
            except (nvml.NVMLError, ValueError):
                if not self.use_counter:
                    raise
                self.power_errors += 1
                power = None
            if self.use_counter:
                raw_mj[g.domain] = nvml.nvmlDeviceGetTotalEnergyConsumption(g.handle)
        t_s = (t_start + time.perf_counter()) / 2
        if self.use_counter:
            energy = {d: self.counters[d].update(v, t_s) for d, v in raw_mj.items()}
        else:
            assert power is not None
            energy = {}
            for d, p_w in power.items():
                if d in self._last:
                    t_prev, p_prev = self._last[d]
                    self._integrated_j[d] += (p_prev + p_w) / 2 * max(t_s - t_prev, 0.0)
                self._last[d] = (t_s, p_w)
                energy[d] = self._integrated_j[d]
        counts = {
            "negative_deltas_dropped_total": float(
                sum(c.negative_deltas_dropped for c in self.counters.values())
            ),
            "power_read_errors_total": float(self.power_errors),
            "counter_alignment_timeouts_total": float(self.align_timeouts),
        }
        return Tick(t_s=t_s, energy_j=energy, power_w=power, counts=counts)


class NvmlMeter(SampledMeter):
    """Per-GPU energy via NVML: method ``measured``."""

    name: ClassVar[str] = "nvml"
    method: ClassVar[Method] = "measured"

    def __init__(
        self,
        *,
        device: str = "cuda",
        gpu_indices: Sequence[int] | None = None,
        nvml: ModuleType | None = None,
        environ: Mapping[str, str] | None = None,
        sample_interval_s: float = 0.1,
    ) -> None:
        self.device = device
        self.gpu_indices = None if gpu_indices is None else list(gpu_indices)
        self._nvml_module = nvml
        self._environ = environ
        self.nvml: ModuleType | None = None
        self.gpus: list[GpuInfo] = []
        self.use_counter = False
        self.fallback_reason: str | None = None
        self.driver_version: str | None = None
        self._initialised = False
        self._reader: NvmlReader | None = None
        self._boundary_called_s = 0.0  # when the last begin/end asked for its reading
        super().__init__(sample_interval_s=sample_interval_s)

    # ------------------------------------------------------------------ probing
    def _probe(self) -> NvmlReader:
        nvml = self._nvml_module or require("pynvml", "nvml", "The NVML energy meter")
        self.nvml = nvml
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            raise E3Error(f"NVML could not initialise: {_text(exc)}", NO_GPU_FIX) from exc
        self._initialised = True
        try:
            ids: list[int | str] = (
                list(self.gpu_indices)
                if self.gpu_indices is not None
                else resolve_gpus(self.device, self._environ)
            )
            self.gpus = [self._gpu_info(i, n) for n, i in enumerate(ids)]
            self.driver_version = self._try(lambda: _text(nvml.nvmlSystemGetDriverVersion()))
            self.use_counter, self.fallback_reason = self._counter_works()
            if not self.use_counter:
                for g in self.gpus:  # the fallback needs power readings
                    nvml.nvmlDeviceGetPowerUsage(g.handle)
        except nvml.NVMLError as exc:
            self._shutdown()
            raise E3Error(f"NVML cannot read the GPU: {_text(exc)}", NO_GPU_FIX) from exc
        except E3Error:
            self._shutdown()
            raise
        self._reader = NvmlReader(nvml, self.gpus, use_counter=self.use_counter)
        return self._reader

    def _boundary_tick(self) -> Tick:
        """With the energy counter: read right after its next update (see the module doc)."""
        self._boundary_called_s = time.perf_counter()
        if self.use_counter and self._reader is not None and not self._reader.wait_for_update():
            self._reader.align_timeouts += 1
        return super()._boundary_tick()

    def _gpu_info(self, nvml_id: int | str, position: int) -> GpuInfo:
        nvml = self.nvml
        assert nvml is not None
        if isinstance(nvml_id, str):
            handle = nvml.nvmlDeviceGetHandleByUUID(nvml_id)
        else:
            handle = nvml.nvmlDeviceGetHandleByIndex(nvml_id)
        if self.gpu_indices is not None:
            domain = f"gpu{nvml_id}"
        else:
            _, _, idx = self.device.partition(":")
            domain = f"gpu{int(idx) if idx else position}"
        limit_mw = self._try(lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(handle))
        return GpuInfo(
            domain=domain,
            nvml_id=nvml_id,
            handle=handle,
            name=_text(nvml.nvmlDeviceGetName(handle)),
            power_limit_w=None if limit_mw is None else limit_mw / 1000.0,
        )

    def _counter_works(self) -> tuple[bool, str | None]:
        nvml = self.nvml
        assert nvml is not None
        for g in self.gpus:
            try:
                nvml.nvmlDeviceGetTotalEnergyConsumption(g.handle)
            except nvml.NVMLError as exc:
                code = getattr(exc, "value", None)
                why = "not supported (pre-Volta GPU?)" if code == NVML_ERROR_NOT_SUPPORTED else ""
                return False, f"energy counter on {g.domain}: {_text(exc)} {why}".strip()
        return True, None

    def _try(self, fn: Any) -> Any:
        assert self.nvml is not None
        try:
            return fn()
        except self.nvml.NVMLError:
            return None

    def _shutdown(self) -> None:
        if self._initialised and self.nvml is not None:
            try:
                self.nvml.nvmlShutdown()
            except Exception:
                pass
            self._initialised = False

    # ------------------------------------------------------------------ meter
    def sensor(self) -> str:
        what = "total_energy_counter" if self.use_counter else "power_polling"
        return f"nvml:{what}"

    def close(self) -> None:
        super().close()
        self._shutdown()

    def _details(self, t0: Tick, t1: Tick, ticks: list[Tick]) -> dict[str, object]:
        # the work: from the opening reading to the call of end (then the wait for an update)
        duration_s = min(t1.t_s, self._boundary_called_s) - t0.t_s
        details: dict[str, object] = {
            "gpus": {
                g.domain: {
                    "name": g.name,
                    "nvml_id": g.nvml_id,
                    "power_limit_w": g.power_limit_w,
                }
                for g in self.gpus
            },
            "driver_version": self.driver_version,
            "short_window": duration_s < COUNTER_UPDATE_PERIOD_S,
        }
        if self.use_counter:
            details["formula"] = "E = Σ_gpus Δ nvmlDeviceGetTotalEnergyConsumption [mJ] × 1e-3"
            # the counter advances in steps: energy.phases fits its update grid
            details["counter_update_period_s"] = COUNTER_UPDATE_PERIOD_S
            details["sensor_update_period_s"] = COUNTER_UPDATE_PERIOD_S
            details["boundaries"] = "aligned: each end read just after the counter's next update"
            details["end_wait_s"] = round(max(t1.t_s - self._boundary_called_s, 0.0), 4)
        else:
            details["formula"] = (
                "E = Σ_gpus ∫ nvmlDeviceGetPowerUsage [mW] × 1e-3 dt (trapezoidal, polled)"
            )
            details["fallback_reason"] = self.fallback_reason
            details["power_note"] = (
                "on many GPUs (Ampere and newer) power usage is a ~1 s moving average, "
                "so short windows are smeared"
            )
            details["sensor_update_period_s"] = POWER_AVERAGE_S
        if duration_s < COUNTER_UPDATE_PERIOD_S:
            details["short_window_note"] = (
                f"window {duration_s * 1000:.1f} ms is shorter than the ~100 ms sensor update "
                "period: its energy is quantised and unreliable; measure longer windows"
                if not self.use_counter
                else f"work of {duration_s * 1000:.1f} ms is shorter than the ~100 ms counter "
                "update period: the reading spans a whole update interval, mostly idle; only the "
                "idle-subtracted (net) energy describes the work"
            )
        if (
            len(self.gpus) > 0
            and self.gpu_indices is None
            and (self._environ or os.environ).get("CUDA_DEVICE_ORDER") != "PCI_BUS_ID"
        ):
            details["device_order_note"] = (
                "assumed CUDA numbering = NVML (PCI bus) numbering; set "
                "CUDA_DEVICE_ORDER=PCI_BUS_ID to guarantee it on multi-GPU machines"
            )
        return details
