"""Shared machinery for meters: cumulative counters, a polling thread, windowed readings.

Every sampled meter works the same way: a *reader* turns its sensor into cumulative energy per
domain (joules since the reader started). A background :class:`Sampler` calls it at <= 10 Hz
so that wrapping counters are never missed and a power time series exists; ``begin``/``end``
take a synchronous reading and diff the cumulative totals. The window's energy is therefore
exact for counters (RAPL, NVML) and exactly the model's integral for the estimate meter.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import ClassVar

from e3bench.core.api import EnergyReading, Method
from e3bench.core.errors import E3Error
from e3bench.core.fmt import count
from e3bench.energy.meters.sampling import Reader, Sampler, Tick, clamp_interval_s, power_samples, thin_ticks

def missing_reading(
    window: str,
    reason: str,
    *,
    sensor: str,
    duration_s: float = 0.0,
    details: dict[str, object] | None = None,
) -> EnergyReading:
    """A reading that says energy is unknown, and why."""
    return EnergyReading(
        window=window,
        duration_s=duration_s,
        energy_j={},
        method="missing",
        sensor=sensor,
        details=dict(details or {}),
        samples=[],
        error=reason,
    )


def _counter_notes(details: dict[str, object], interval_s: float) -> list[str]:
    """Record notes for counter troubles in a window (details from the readers' counts)."""
    notes = []
    dropped = details.get("negative_deltas_dropped")
    if isinstance(dropped, (int, float)) and dropped > 0:
        notes.append(
            f"{count(int(dropped), 'counter decrease')} that were not wraps (glitch or reset) were dropped: "
            f"the energy of those poll intervals (~{interval_s:g} s each) is missing from this window"
        )
    estimated = details.get("wraps_estimated")
    if isinstance(estimated, (int, float)) and estimated > 0:
        joules = details.get("wrap_estimated_j", 0.0)
        notes.append(
            f"{count(int(estimated), 'counter wrap')} with an unknown range (max_energy_range_uj unreadable): each "
            f"wrap's poll interval (~{interval_s:g} s) was estimated from the previous interval's power "
            f"({float(joules):.3g} J assumed, not measured)"  # type: ignore[arg-type]
        )
    return notes


@dataclass
class _OpenWindow:
    tick: Tick
    errors: int


class SampledMeter:
    """Base for meters built on a :class:`Reader` and a :class:`Sampler`.

    Subclasses set ``name``/``method``, build a reader in :meth:`_probe` (raising
    :class:`E3Error` when the sensor is unusable) and describe windows in :meth:`_details`.
    ``end`` never raises: a failure becomes a reading with method ``missing`` and ``error``.
    """

    name: ClassVar[str] = "sampled"
    method: ClassVar[Method] = "measured"

    def __init__(self, *, sample_interval_s: float = 0.1) -> None:
        self.sample_interval_s = clamp_interval_s(sample_interval_s)
        self._windows: dict[str, _OpenWindow] = {}
        self._begin_errors: dict[str, str] = {}
        self._sampler: Sampler | None = None
        self.unavailable_error: E3Error | None = None
        try:
            reader = self._probe()
        except E3Error as exc:
            self.unavailable_error = exc
        else:
            self._sampler = Sampler(reader, self.sample_interval_s, name=f"e3bench-{self.name}")

    # --------------------------------------------------------------- subclass hooks
    def _probe(self) -> Reader:
        raise NotImplementedError

    def sensor(self) -> str:
        raise NotImplementedError

    def _details(self, t0: Tick, t1: Tick, ticks: list[Tick]) -> dict[str, object]:
        return {}

    def _boundary_tick(self) -> Tick:
        """The reading that opens or closes a window; a meter whose sensor updates in steps may
        first wait for its next update (see :class:`~e3bench.energy.meters.nvml.NvmlMeter`)."""
        assert self._sampler is not None
        return self._sampler.sample_now()

    # --------------------------------------------------------------- EnergyMeter
    def available(self) -> bool:
        return self._sampler is not None

    def unavailable_reason(self) -> str | None:
        return None if self.unavailable_error is None else self.unavailable_error.one_line()

    @property
    def sampler_thread_cpu_s(self) -> float:
        return 0.0 if self._sampler is None else self._sampler.thread_cpu_s

    def begin(self, window: str) -> None:
        """Open ``window`` (re-opening an open window restarts it). Never raises."""
        self._begin_errors.pop(window, None)
        if self._sampler is None:
            return
        try:
            tick = self._boundary_tick()
        except Exception as exc:
            self._begin_errors[window] = f"sensor read failed at begin: {type(exc).__name__}: {exc}"
            self._windows.pop(window, None)
            return
        self._windows[window] = _OpenWindow(tick=tick, errors=self._sampler.errors)
        self._sampler.start()

    def end(self, window: str) -> EnergyReading:
        """Close ``window`` and return its reading. Never raises."""
        try:
            return self._end(window)
        except Exception as exc:  # a bug or a vanished sensor must not reach the runner
            self._windows.pop(window, None)
            self._after_window_closed()
            return missing_reading(
                window, f"meter failed: {type(exc).__name__}: {exc}", sensor=self._safe_sensor()
            )

    def close(self) -> None:
        self._windows.clear()
        if self._sampler is not None:
            self._sampler.stop()
            self._sampler.prune_before(None)

    # --------------------------------------------------------------- internals
    def _safe_sensor(self) -> str:
        try:
            return self.sensor()
        except Exception:
            return self.name

    def _end(self, window: str) -> EnergyReading:
        if self._sampler is None:
            return missing_reading(
                window, self.unavailable_reason() or "meter unavailable", sensor=self._safe_sensor()
            )
        if window in self._begin_errors:
            return missing_reading(window, self._begin_errors.pop(window), sensor=self.sensor())
        opened = self._windows.pop(window, None)
        if opened is None:
            return missing_reading(
                window, f"window '{window}' was never begun", sensor=self.sensor()
            )
        try:
            t1 = self._boundary_tick()
        except Exception as exc:
            self._after_window_closed()
            return missing_reading(
                window,
                f"sensor read failed at end: {type(exc).__name__}: {exc}",
                sensor=self.sensor(),
                duration_s=time.perf_counter() - opened.tick.t_s,
            )
        t0 = opened.tick
        ticks = self._sampler.ticks_between(t0.t_s, t1.t_s)
        poll_errors = self._sampler.errors - opened.errors
        last_error = self._sampler.last_error
        self._after_window_closed()

        lost = sorted(set(t0.energy_j) - set(t1.energy_j))
        if lost:
            return missing_reading(
                window, f"domains vanished during the window: {', '.join(lost)}",
                sensor=self.sensor(), duration_s=t1.t_s - t0.t_s,
            )
        energy_j: dict[str, float] = {}
        clamped: list[str] = []
        for domain, e1 in t1.energy_j.items():
            delta = e1 - t0.energy_j.get(domain, e1)
            if delta < 0:  # cannot happen with Counter; guard against reader bugs
                clamped.append(domain)
                delta = 0.0
            energy_j[domain] = delta
        energy_j["total"] = sum(v for d, v in energy_j.items() if d != "total")
        bad = sorted(d for d, v in energy_j.items() if not math.isfinite(v))
        if bad:
            return missing_reading(
                window, f"the sensor returned a non-finite energy for {', '.join(bad)}",
                sensor=self.sensor(), duration_s=t1.t_s - t0.t_s,
            )  # fmt: skip

        series_ticks, thinned_by = thin_ticks(ticks)
        base_j = sum(t0.energy_j.values())
        details: dict[str, object] = {
            "sample_interval_s": self.sample_interval_s,
            "n_ticks": len(ticks),
            "poll_errors": poll_errors,
        }
        if thinned_by > 1:
            details["power_series_thinned_by"] = thinned_by
        for key, v1 in t1.counts.items():
            if key.endswith("_total"):  # cumulative counters: report the window's delta
                details[key.removesuffix("_total")] = v1 - t0.counts.get(key, 0)
        if poll_errors:
            details["last_poll_error"] = last_error
        if clamped:
            details["negative_window_deltas_clamped"] = clamped
        notes = _counter_notes(details, self.sample_interval_s)
        details.update(self._details(t0, t1, ticks))
        notes += [str(n) for n in details.pop("notes", [])]  # type: ignore[union-attr]
        if notes:
            details["notes"] = notes
        return EnergyReading(
            window=window,
            duration_s=t1.t_s - t0.t_s,
            energy_j=energy_j,
            method=self.method,
            sensor=self.sensor(),
            details=details,
            samples=power_samples(series_ticks),
            cumulative_j=[(k.t_s, sum(k.energy_j.values()) - base_j) for k in series_ticks],
        )

    def _after_window_closed(self) -> None:
        if self._sampler is None:
            return
        if self._windows:
            self._sampler.prune_before(min(w.tick.t_s for w in self._windows.values()))
        else:
            self._sampler.stop()
            self._sampler.prune_before(None)
