"""Device and precision for training: which device, which autocast mode, the grad scaler,
device synchronisation, seeding and threads.

CUDA code paths are real (bf16/fp16 autocast, ``torch.amp.GradScaler``); the functions take the
``torch.cuda``-like object as an argument where tests need to fake a GPU.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass
from typing import Any

from e3bench.core.errors import E3Error

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_device(device: str, *, cuda=None) -> str:
    """``auto`` → ``cuda`` when a GPU is visible, else ``cpu``; ``cpu``, ``cuda`` and ``cuda:N``
    pass through.

    Raises :class:`E3Error` for an unknown name or for ``cuda`` without a visible GPU.
    """
    if cuda is None:
        import torch

        cuda = torch.cuda
    from e3bench.core.devices import check_visible, device_problem

    if device != "auto" and device_problem(device) is not None:
        raise E3Error(f"unknown device '{device}'", "use --device auto, cpu, cuda or cuda:N")
    if device == "auto":
        return "cuda" if cuda.is_available() else "cpu"
    if device.startswith("cuda") and not cuda.is_available():
        raise E3Error(
            f"--device {device} was requested but PyTorch sees no CUDA GPU",
            "use --device cpu (or auto), or install a CUDA build of torch on a machine with a GPU",
        )
    check_visible(device, getattr(cuda, "device_count", lambda: None))
    return device


@dataclass(frozen=True)
class Precision:
    """How the forward pass runs. ``autocast_dtype`` None means plain fp32; weights and
    optimizer states stay fp32 in every mode. ``use_grad_scaler`` is True for fp16 only."""

    name: str  # fp32 | bf16 | fp16
    autocast_dtype: Any  # torch.dtype | None
    use_grad_scaler: bool
    note: str


def resolve_precision(precision: str, device: str, *, cuda=None) -> Precision:
    """Pick the autocast mode for ``device``.

    ``auto``: bf16 on GPUs that support it, else fp16 with a GradScaler; fp32 on CPU. CPU bf16
    autocast is allowed when asked; fp16 on CPU is refused (:class:`E3Error`), as is bf16 on a
    GPU without bf16.
    """
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


def device_type(device: str) -> str:
    """``cuda`` for ``cuda`` / ``cuda:N``, else ``cpu`` (the form autocast and GradScaler take)."""
    return "cuda" if device.startswith("cuda") else "cpu"


def autocast(device: str, prec: Precision):
    """The autocast context of ``prec`` on ``device`` (a null context for fp32)."""
    if prec.autocast_dtype is None:
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device_type=device_type(device), dtype=prec.autocast_dtype)


def grad_scaler(device: str, prec: Precision):
    """``torch.amp.GradScaler`` for ``device``, enabled only for fp16 (disabled, it passes the
    loss through, steps the optimizer directly and has an empty state)."""
    import torch

    return torch.amp.GradScaler(device_type(device), enabled=prec.use_grad_scaler)


def synchronize(device: str, *, cuda=None) -> None:
    """Wait for queued GPU work (``torch.cuda.synchronize``); nothing on CPU."""
    if device.startswith("cuda"):
        if cuda is None:
            import torch

            cuda = torch.cuda
        cuda.synchronize(device)  # the GPU of cuda:N, not the current one


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and every GPU) random generators."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def set_threads(threads: int | None) -> None:
    """``torch.set_num_threads(threads)`` when given (None or 0: leave torch's default)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
