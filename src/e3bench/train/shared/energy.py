"""Energy of training on the one metered window (:mod:`e3bench.energy.window`): the run's
meter with its idle baseline, synchronising the training device at both ends of every window,
and buckets ("train", "eval", "<config>/train", …) that sum their windows into one
:class:`~e3bench.energy.accounting.EnergySummary` each."""

from __future__ import annotations

from collections.abc import Callable

from e3bench.energy.window import EnergyTotals, MeteredWindow
from e3bench.train.shared.device import synchronize


def training_energy(
    meter: str,
    *,
    device: str,
    cpu_tdp_w: float | None = None,
    idle_seconds: float = 2.0,
    region: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> EnergyTotals:
    """Open ``meter`` (``auto``, ``nvml``, ``rapl``, ``estimate``, ``codecarbon``, ``none``),
    measure ``idle_seconds`` of idle power and return empty buckets on it. The caller closes
    the meter with ``totals.window_.close()``.

    Raises :class:`~e3bench.core.errors.E3Error` for a named meter that cannot work here.
    """
    window = MeteredWindow.create(
        meter, device=device, cpu_tdp_w=cpu_tdp_w, idle_seconds=idle_seconds, region=region,
        sync=lambda: synchronize(device), progress=progress,
    )  # fmt: skip
    return EnergyTotals(window)
