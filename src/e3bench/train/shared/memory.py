"""Memory figures of training: peak RSS over a measured stretch (a 20 Hz sampler thread), CUDA
peak allocation, optimizer-state bytes, and activation checkpointing (the switch that trades
compute for activation memory).
"""

from __future__ import annotations

import sys
import threading

from e3bench.core import host
from e3bench.train.records import MemoryFigures

RSS_METHOD = "RSS (/proc/self/statm) sampled at 20 Hz during the run"


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
    """Peak RSS by a sampler thread (every ``interval_s`` seconds) plus CUDA peak allocation,
    over ``start()`` … ``stop()``. ``cuda`` replaces ``torch.cuda`` (tests)."""

    def __init__(self, device: str = "cpu", *, cuda=None, interval_s: float = 0.05) -> None:
        self.device = device
        self._cuda = cuda
        self.interval_s = interval_s
        self.rss_start = 0
        self.peak_rss = 0
        self.allocated_start: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _cuda_mod(self):
        if self._cuda is None:
            import torch

            self._cuda = torch.cuda
        return self._cuda

    def start(self) -> None:
        """Release freed memory, note the RSS now, reset the CUDA peak and start sampling."""
        release_freed_memory()
        self.rss_start = self.peak_rss = host.rss_bytes()
        if self.device.startswith("cuda"):
            cuda = self._cuda_mod()
            cuda.reset_peak_memory_stats(self.device)  # the GPU of cuda:N, not the current one
            self.allocated_start = int(cuda.memory_allocated(self.device))
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="e3bench-rss", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.peak_rss = max(self.peak_rss, host.rss_bytes())
            except Exception:  # noqa: BLE001 - a sampler hiccup must not kill training
                pass

    def stop(self) -> MemoryFigures:
        """Stop sampling; return the figures (bytes) since :meth:`start`."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        self.peak_rss = max(self.peak_rss, host.rss_bytes())
        peak_dev = reserved = None
        method = None
        if self.device.startswith("cuda"):
            cuda = self._cuda_mod()
            peak_dev = int(cuda.max_memory_allocated(self.device))
            reserved = int(cuda.max_memory_reserved(self.device))
            method = "torch.cuda.max_memory_allocated / max_memory_reserved since reset at start"
        return MemoryFigures(
            rss_start_bytes=self.rss_start,
            peak_rss_bytes=self.peak_rss,
            process_peak_rss_bytes=host.peak_rss_bytes(),
            rss_method=RSS_METHOD,
            peak_device_memory_bytes=peak_dev,
            device_memory_reserved_bytes=reserved,
            device_memory_method=method,
        )


def breakdown(
    figures: MemoryFigures, *, device: str, weights: int, gradients: int, optimizer_state: int,
    allocated_start: int | None = None,
) -> dict:  # fmt: skip
    """Peak training memory split into weights, gradients, optimizer state (bytes measured from
    the tensors) and activations (the rest of the peak), with the method.

    CUDA: activations = ``max_memory_allocated`` − (``memory_allocated`` at the start, which
    holds the weights) − gradients − optimizer state. CPU: activations = (peak RSS − RSS at the
    start) − gradients − optimizer state, both of which are allocated during the first step;
    an estimate that also holds allocator slack. Never negative."""
    cuda = device.startswith("cuda") and figures.peak_device_memory_bytes is not None
    if cuda:
        grown = figures.peak_device_memory_bytes - (allocated_start if allocated_start is not None else weights)
        method = ("torch.cuda.max_memory_allocated − memory_allocated at start (weights resident) − gradient and "
                  "optimizer-state tensor bytes")  # fmt: skip
    else:
        grown = figures.peak_rss_bytes - figures.rss_start_bytes
        method = "(peak RSS − RSS at start) − gradient and optimizer-state tensor bytes; includes allocator slack"
    act = max(0, grown - gradients - optimizer_state)
    return {
        "device": device, "weights_bytes": weights, "gradients_bytes": gradients,
        "optimizer_state_bytes": optimizer_state, "activations_bytes": act,
        "total_bytes": weights + gradients + optimizer_state + act, "method": method,
    }  # fmt: skip


def optimizer_state_bytes(optimizer) -> int:
    """Bytes of every tensor in an optimizer's state (nested objects such as GaLore's projector
    included, each tensor once). Works for torch, bitsandbytes, torchao and galore-torch
    optimizers and for :class:`e3bench.train.shared.optim.CombinedOptimizer`."""
    import torch

    from e3bench.backends.models import tensor_bytes

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


def enable_checkpointing(model) -> None:
    """Non-reentrant activation checkpointing on a transformers model (the method was renamed
    ``activation_checkpointing_enable`` in transformers 5)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:  # transformers < 5
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
