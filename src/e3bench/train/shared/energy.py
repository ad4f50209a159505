"""Energy of training: one meter with its idle baseline, and named buckets ("train", "eval")
that add up metered windows. The device is synchronised at both ends of every window.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from e3bench.train.records import EnergyFigures
from e3bench.train.shared.device import synchronize

Progress = Callable[[str], None]

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
