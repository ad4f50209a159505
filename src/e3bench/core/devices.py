"""Device names as users write them: ``cpu``, ``cuda`` (the first visible GPU) or ``cuda:N``
(the N-th GPU CUDA sees, numbered after ``CUDA_VISIBLE_DEVICES`` as torch numbers them).

One parser for every layer: the config checks the spelling (:func:`device_problem`), backends
and capabilities compare the *kind* (:func:`device_kind`), PyTorch/ONNX Runtime/llama.cpp get
the index (:func:`device_index`), and the run checks the index against the GPUs torch sees
before the model loads (:func:`check_visible`).

>>> device_kind("cuda:1"), device_index("cuda:1"), device_index("cuda"), canonical("cuda")
('cuda', 1, 0, 'cuda:0')
"""

from __future__ import annotations

import re
from collections.abc import Callable

from e3bench.core.errors import E3Error

_DEVICE = re.compile(r"^(cpu|cuda)(?::(\d+))?$")
#: what ``--device`` accepts, for messages
SPELLINGS = "cpu, cuda or cuda:N (N = a GPU index, 0 = the first visible GPU)"


def device_problem(device: object) -> str | None:
    """Why ``device`` is not a device name e3bench accepts, or None (``cpu:0`` is refused:
    there is one CPU device)."""
    m = _DEVICE.match(device) if isinstance(device, str) else None
    if m is None:
        return f"{device!r} is not a device: use {SPELLINGS}"
    if m.group(1) == "cpu" and m.group(2) is not None:
        return f"{device!r} is not a device: the CPU has no index, use cpu"
    return None


def device_kind(device: str) -> str:
    """``"cpu"`` or ``"cuda"``: what capabilities and quantization recipes are keyed by."""
    return str(device or "cpu").partition(":")[0]


def device_index(device: str) -> int | None:
    """The GPU index of ``device`` (``cuda`` → 0, ``cuda:2`` → 2); None on the CPU."""
    kind, _, idx = str(device or "cpu").partition(":")
    if kind != "cuda":
        return None
    return int(idx) if idx else 0


def canonical(device: str) -> str:
    """The device actually used, as recorded: ``cpu`` or ``cuda:N`` (``cuda`` → ``cuda:0``)."""
    idx = device_index(device)
    return "cpu" if idx is None else f"cuda:{idx}"


def visible_gpus() -> int | None:
    """How many CUDA GPUs torch sees here (after ``CUDA_VISIBLE_DEVICES``), or None when it
    cannot tell: torch not installed, or a CPU-only build of torch (which sees no GPU even on a
    machine whose llama.cpp / ONNX Runtime use one). torch is imported lazily."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    if not (getattr(torch.version, "cuda", None) or getattr(torch.version, "hip", None)):
        return None
    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def check_visible(device: str, count: Callable[[], int | None] | None = None) -> None:
    """Raise one clear :class:`E3Error` when ``device`` names a GPU that is not visible here
    (``cuda:3`` on a 2-GPU machine, any ``cuda`` where a CUDA build of torch sees none). Where
    :func:`visible_gpus` cannot tell (no torch, a CPU-only torch) nothing is raised here: the
    backend's own library then refuses the device at load, in its own words."""
    idx = device_index(device)
    if idx is None:
        return
    n = (count or visible_gpus)()
    if n is None:
        return
    if n == 0:
        raise E3Error(f"--device {device}: PyTorch sees no CUDA GPU here",
                      "use --device cpu, or run on a machine with an NVIDIA GPU and a CUDA build of torch")  # fmt: skip
    if idx >= n:
        raise E3Error(f"--device {device}: only {n} GPU{' is' if n == 1 else 's are'} visible here (cuda:0..cuda:{n - 1})",
                      f"pick an index below {n}, or change CUDA_VISIBLE_DEVICES")  # fmt: skip
