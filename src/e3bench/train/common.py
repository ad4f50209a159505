"""Shared machinery of the training scenarios: device and precision, synchronised timing,
peak memory, optimizer-state bytes, and energy windows on e3bench's meters.

CUDA code paths are real (autocast bf16/fp16, GradScaler, ``max_memory_allocated``); the
functions take the ``torch.cuda``-like object as an argument where tests need to fake it.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import resource
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from e3bench.core.errors import E3Error
from e3bench.train.records import EnergyFigures, MemoryFigures

Progress = Callable[[str], None]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


# ------------------------------------------------------------------------------ divergence
class Diverged(Exception):
    """Training left the sane range (loss or gradient not finite, or loss exploded)."""


def check_loss(value: float, step: int, reference: float | None, factor: float, what: str = "the initial loss") -> None:
    """Raise :class:`Diverged` when the training loss is not finite, or above ``factor`` ×
    ``reference`` (``None`` before the reference exists: only finiteness is checked)."""
    if not math.isfinite(value):
        raise Diverged(f"training loss became {value} at step {step}")
    if reference is not None and value > factor * reference:
        raise Diverged(f"training loss {value:.3g} at step {step} exceeds {factor:g}× {what} {reference:.3g}")


# ------------------------------------------------------------------------- device / dtype
def resolve_device(device: str, *, cuda=None) -> str:
    """``auto`` → ``cuda`` when a GPU is visible, else ``cpu``; ``cuda`` without one is an error."""
    if cuda is None:
        import torch

        cuda = torch.cuda
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise E3Error(f"unknown device '{device}'", "use --device auto, cpu or cuda")
    if device == "auto":
        return "cuda" if cuda.is_available() else "cpu"
    if device.startswith("cuda") and not cuda.is_available():
        raise E3Error(
            "--device cuda was requested but PyTorch sees no CUDA GPU",
            "use --device cpu (or auto), or install a CUDA build of torch on a machine with a GPU",
        )
    return device


@dataclass(frozen=True)
class Precision:
    """How the forward pass runs: ``autocast_dtype`` None means plain fp32."""

    name: str  # fp32 | bf16 | fp16
    autocast_dtype: Any  # torch.dtype | None
    use_grad_scaler: bool
    note: str


def resolve_precision(precision: str, device: str, *, cuda=None) -> Precision:
    """Pick the autocast mode. ``auto``: bf16 on GPUs that support it, else fp16 with a
    GradScaler; fp32 on CPU (CPU bf16 autocast is allowed when asked, fp16 is refused)."""
    import torch

    if cuda is None:
        cuda = torch.cuda
    if precision not in PRECISIONS:
        raise E3Error(f"unknown precision '{precision}'", f"use one of: {', '.join(PRECISIONS)}")
    on_gpu = device.startswith("cuda")
    if precision == "auto":
        if not on_gpu:
            return Precision("fp32", None, False, "auto: fp32 on CPU")
        if cuda.is_bf16_supported():
            return Precision("bf16", torch.bfloat16, False, "auto: bf16 autocast (GPU supports bf16)")
        return Precision("fp16", torch.float16, True, "auto: fp16 autocast + GradScaler (no bf16 on this GPU)")
    if precision == "fp32":
        return Precision("fp32", None, False, "fp32 (no autocast)")
    if precision == "bf16":
        if on_gpu and not cuda.is_bf16_supported():
            raise E3Error("this GPU does not support bf16", "use --precision fp16 or auto")
        return Precision("bf16", torch.bfloat16, False, f"bf16 autocast on {device}; weights and optimizer fp32")
    if not on_gpu:
        raise E3Error("fp16 training on CPU is emulated and far slower than fp32", "use fp32 or bf16 on CPU")
    return Precision("fp16", torch.float16, True, "fp16 autocast + GradScaler; weights and optimizer fp32")


def autocast(device: str, prec: Precision):
    if prec.autocast_dtype is None:
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=prec.autocast_dtype)


def make_grad_scaler(device: str, prec: Precision):
    """A real ``torch.amp.GradScaler`` for fp16 on CUDA, otherwise a pass-through object."""
    if prec.use_grad_scaler:
        import torch

        return torch.amp.GradScaler("cuda")
    return _NoScaler()


class _NoScaler:
    def scale(self, loss):
        return loss

    def unscale_(self, optimizer) -> None:
        return None

    def step(self, optimizer) -> None:
        optimizer.step()

    def update(self) -> None:
        return None

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        return None


def synchronize(device: str, *, cuda=None) -> None:
    if device.startswith("cuda"):
        if cuda is None:
            import torch

            cuda = torch.cuda
        cuda.synchronize()


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def stats(values):
    """``timing.summarize`` for ≥ 2 samples, else None: with one sample the CI is NaN, which
    JSON stores as null and the Stats model then refuses to read back."""
    from e3bench.core.timing import summarize

    vals = [v for v in values if not math.isnan(v)]
    return summarize(vals) if len(vals) >= 2 else None


# --------------------------------------------------------------------------------- memory
def process_peak_rss_bytes() -> int:
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(ru if sys.platform == "darwin" else ru * 1024)


def release_freed_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc ``malloc_trim``), so that
    the RSS at the start of a measurement is not inflated by what an earlier one freed."""
    import gc

    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass


class MemoryTracker:
    """Peak RSS by a 20 Hz sampler thread plus CUDA peak allocation, over ``start``…``stop``."""

    def __init__(self, device: str = "cpu", *, cuda=None, interval_s: float = 0.05) -> None:
        self.device = device
        self._cuda = cuda
        self.interval_s = interval_s
        self.rss_start = 0
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _cuda_mod(self):
        if self._cuda is None:
            import torch

            self._cuda = torch.cuda
        return self._cuda

    def _rss(self) -> int:
        import psutil

        return int(psutil.Process(os.getpid()).memory_info().rss)

    def start(self) -> None:
        release_freed_memory()
        self.rss_start = self.peak_rss = self._rss()
        if self.device.startswith("cuda"):
            self._cuda_mod().reset_peak_memory_stats()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="e3bench-rss", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.peak_rss = max(self.peak_rss, self._rss())
            except Exception:  # noqa: BLE001 - a sampler hiccup must not kill training
                pass

    def stop(self) -> MemoryFigures:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        self.peak_rss = max(self.peak_rss, self._rss())
        peak_dev = reserved = None
        method = None
        if self.device.startswith("cuda"):
            cuda = self._cuda_mod()
            peak_dev = int(cuda.max_memory_allocated())
            reserved = int(cuda.max_memory_reserved())
            method = "torch.cuda.max_memory_allocated / max_memory_reserved since reset at start"
        return MemoryFigures(
            rss_start_bytes=self.rss_start,
            peak_rss_bytes=self.peak_rss,
            process_peak_rss_bytes=process_peak_rss_bytes(),
            peak_device_memory_bytes=peak_dev,
            device_memory_reserved_bytes=reserved,
            device_memory_method=method,
        )


def tensor_bytes(t) -> int:
    """Storage bytes of a tensor; tensor subclasses (torchao's 8-bit states) are counted by
    their inner tensors, so an 8-bit state is 1 byte per element plus its scales."""
    flatten = getattr(type(t), "__tensor_flatten__", None)
    if flatten is not None and type(t).__name__ not in ("Tensor", "Parameter"):
        try:
            names, _ = t.__tensor_flatten__()
            return sum(tensor_bytes(getattr(t, n)) for n in names)
        except Exception:  # noqa: BLE001 - fall back to the apparent size
            pass
    return int(t.numel() * t.element_size())


def optimizer_state_bytes(optimizer) -> int:
    """Bytes of every tensor in an optimizer's state (nested objects such as GaLore's projector
    included). Works for torch, bitsandbytes, torchao and galore-torch optimizers and for
    :class:`e3bench.train.optim.CombinedOptimizer`."""
    import torch

    seen: set[int] = set()

    def walk(obj, depth: int = 0) -> int:
        if depth > 4:
            return 0
        if isinstance(obj, torch.Tensor):
            if id(obj) in seen:
                return 0
            seen.add(id(obj))
            return tensor_bytes(obj)
        if isinstance(obj, dict):
            return sum(walk(v, depth + 1) for v in obj.values())
        if isinstance(obj, (list, tuple)):
            return sum(walk(v, depth + 1) for v in obj)
        if hasattr(obj, "__dict__") and not isinstance(obj, type):
            return sum(walk(v, depth + 1) for v in vars(obj).values())
        return 0

    opts = getattr(optimizer, "optimizers", [optimizer])
    return sum(walk(list(o.state.values())) for o in opts)


# --------------------------------------------------------------------------------- energy
@dataclass
class _Acc:
    windows: int = 0
    duration_s: float = 0.0
    gross_j: float | None = 0.0
    net_j: float | None = 0.0
    method: str = "missing"
    sensor: str = ""
    basis: str = ""
    idle_w: float | None = None
    grid_g_per_kwh: float | None = None
    grid_region: str | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)


class EnergySession:
    """One meter (``e3bench.energy.meters.make_meter``) with its idle baseline, and named accumulators
    of metered windows: ``with session.window("train"):`` adds that window's gross and net
    energy to the ``"train"`` total. The device is synchronised at both ends of every window.
    """

    def __init__(
        self,
        choice: str = "auto",
        *,
        device: str = "cpu",
        cpu_tdp_w: float | None = None,
        idle_seconds: float = 2.0,
        region: str | None = None,
        progress: Progress | None = None,
        meter=None,
        reason: str | None = None,
    ) -> None:
        from e3bench.energy import carbon

        self.device = device
        self.region = region
        self.grid = carbon.lookup(region)
        if meter is None:
            from e3bench.energy.meters import make_meter

            meter, reason = make_meter(choice, device=device, cpu_tdp_w=cpu_tdp_w)
        self.meter = meter
        self.reason = reason or getattr(meter, "name", "meter")
        self.idle = None
        self._acc: dict[str, _Acc] = {}
        self._n = 0
        if idle_seconds > 0 and choice != "none":
            from e3bench.energy import accounting as energy

            if progress:
                progress(f"measuring idle power for {idle_seconds:g} s ({self.reason.split(':')[0]})")
            self.idle = energy.measure_idle_baseline(meter, idle_seconds)

    @property
    def name(self) -> str:
        return getattr(self.meter, "name", "meter")

    def idle_dict(self) -> dict[str, Any] | None:
        return None if self.idle is None else self.idle.model_dump(mode="json")

    @contextlib.contextmanager
    def window(self, bucket: str) -> Iterator[None]:
        self._n += 1
        name = f"{bucket}-{self._n}"
        synchronize(self.device)
        self.meter.begin(name)
        try:
            yield
        finally:
            synchronize(self.device)
            reading = self.meter.end(name)
            self._add(bucket, reading)

    def _add(self, bucket: str, reading) -> None:
        from e3bench.energy import accounting as energy

        s = energy.summarize(reading, self.idle, input_tokens=0, output_tokens=0, requests=0, region=self.grid)
        acc = self._acc.setdefault(bucket, _Acc())
        acc.windows += 1
        acc.duration_s += reading.duration_s
        acc.method, acc.sensor, acc.basis = s.method, s.sensor, s.basis
        acc.idle_w = s.idle_power_w
        acc.grid_g_per_kwh, acc.grid_region = s.grid_g_per_kwh, s.grid_region
        if s.method == "missing" or s.gross_energy_j is None:
            acc.gross_j = acc.net_j = None
            acc.error = s.error
            return
        if acc.gross_j is not None:
            acc.gross_j += s.gross_energy_j
        if acc.net_j is not None:
            acc.net_j = None if s.net_energy_j is None else acc.net_j + s.net_energy_j
        for n in s.notes:
            if n not in acc.notes and len(acc.notes) < 5:
                acc.notes.append(n)

    def total_j(self, bucket: str) -> tuple[float | None, float | None]:
        """(basis energy, gross energy) accumulated so far in ``bucket``; basis = net if known."""
        acc = self._acc.get(bucket)
        if acc is None:
            return (0.0, 0.0) if self.meter_ok else (None, None)
        basis = acc.net_j if acc.net_j is not None else acc.gross_j
        return basis, acc.gross_j

    @property
    def meter_ok(self) -> bool:
        return self.name != "none"

    def figures(self, bucket: str, *, tokens: int = 0, samples: int = 0) -> EnergyFigures:
        from e3bench.energy import carbon

        acc = self._acc.get(bucket) or _Acc(error="no window was metered")
        gross, net = acc.gross_j, acc.net_j
        if acc.method == "missing":
            gross = net = None
        basis_j = net if net is not None else gross
        return EnergyFigures(
            method=acc.method,
            sensor=acc.sensor,
            basis=acc.basis or "none",
            windows=acc.windows,
            duration_s=acc.duration_s,
            gross_energy_j=gross,
            net_energy_j=net,
            gross_energy_kwh=None if gross is None else gross / 3.6e6,
            net_energy_kwh=None if net is None else net / 3.6e6,
            idle_power_w=acc.idle_w,
            mean_power_w=None if gross is None or acc.duration_s <= 0 else gross / acc.duration_s,
            j_per_token=None if basis_j is None or not tokens else basis_j / tokens,
            j_per_sample=None if basis_j is None or not samples else basis_j / samples,
            co2e_g=None if gross is None else carbon.co2e_g(gross, self.grid),
            co2e_net_g=None if net is None else carbon.co2e_g(net, self.grid),
            grid_g_per_kwh=acc.grid_g_per_kwh,
            grid_region=acc.grid_region,
            error=acc.error,
            notes=list(acc.notes),
        )

    def reset(self, bucket: str) -> None:
        self._acc.pop(bucket, None)

    def close(self) -> None:
        close = getattr(self.meter, "close", None)
        if close:
            close()
