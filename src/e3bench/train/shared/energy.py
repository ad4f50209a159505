"""Energy of training on the one metered window (:mod:`e3bench.energy.window`): the run's
meter with its idle baseline, synchronising the training device at both ends of every window,
and buckets ("train", "eval", "<config>/train", …) that sum their windows into one
:class:`~e3bench.energy.accounting.EnergySummary` each.

As for inference, the idle baseline is metered once the model is loaded and on its device
(``totals.measure_idle(state)``), so the loaded model's memory and the device context are
idle, not training, energy."""

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
    """Open ``meter`` (``auto``, ``nvml``, ``rapl``, ``estimate``, ``codecarbon``, ``none``)
    and return empty buckets on it; ``totals.measure_idle(state)`` meters ``idle_seconds`` of
    idle power once the model is loaded. The caller closes the meter with
    ``totals.window_.close()``.

    Raises :class:`~e3bench.core.errors.E3Error` for a named meter that cannot work here.
    """
    del progress  # kept for callers; the idle baseline reports its own progress
    window = MeteredWindow.create(
        meter, device=device, cpu_tdp_w=cpu_tdp_w, region=region, sync=lambda: synchronize(device),
    )  # fmt: skip
    return EnergyTotals(window, idle_seconds=idle_seconds)
