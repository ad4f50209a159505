"""Shared machinery for meters: cumulative counters, a polling thread, windowed readings.

Every sampled meter works the same way: a *reader* turns its sensor into cumulative energy per
domain (joules since the reader started). A background :class:`Sampler` calls it at <= 10 Hz
so that wrapping counters are never missed and a power time series exists; ``begin``/``end``
take a synchronous reading and diff the cumulative totals. The window's energy is therefore
exact for counters (RAPL, NVML) and exactly the model's integral for the estimate meter.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from e3bench.core.api import EnergyReading, Method, PowerSample
from e3bench.core.errors import E3Error

#: Polling is never faster than this (DESIGN: "poll power at no more than every 100 ms").
MIN_SAMPLE_INTERVAL_S = 0.1
MAX_SAMPLE_INTERVAL_S = 10.0
#: A window's power series keeps at most this many ticks (1 h at 10 Hz); longer windows keep
#: every n-th tick. Counter-derived power stays exact on average: energy is cumulative.
MAX_TICKS_PER_WINDOW = 36_000


def clamp_interval_s(interval_s: float) -> float:
    """Keep polling between 10 Hz and 0.1 Hz."""
    if not math.isfinite(interval_s) or interval_s <= 0:
        return MIN_SAMPLE_INTERVAL_S
    return min(max(interval_s, MIN_SAMPLE_INTERVAL_S), MAX_SAMPLE_INTERVAL_S)


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


class Counter:
    """A raw hardware energy counter turned into a cumulative total in joules.

    ``wrap_range`` is the value at which the raw counter rolls over to 0 (RAPL's
    ``max_energy_range_uj``); with it, a decrease is a wrap. Without it, or when the implied
    power is implausible, a decrease is a glitch: that delta is dropped and counted.
    """

    def __init__(
        self,
        *,
        scale_j: float,
        wrap_range: float | None = None,
        max_plausible_w: float = 20_000.0,
    ) -> None:
        self.scale_j = scale_j
        self.wrap_range = wrap_range
        self.max_plausible_w = max_plausible_w
        self.total_j = 0.0
        self.wraps = 0
        self.negative_deltas_dropped = 0
        self._last_raw: float | None = None
        self._last_t_s: float | None = None

    def update(self, raw: float, t_s: float) -> float:
        """Feed one raw reading taken at ``t_s``; return the cumulative joules."""
        if self._last_raw is not None and self._last_t_s is not None:
            delta = self._delta(raw, max(t_s - self._last_t_s, 1e-3))
            if delta is None:
                self.negative_deltas_dropped += 1
            else:
                self.total_j += delta * self.scale_j
        self._last_raw, self._last_t_s = raw, t_s
        return self.total_j

    def _delta(self, raw: float, dt_s: float) -> float | None:
        assert self._last_raw is not None
        delta = raw - self._last_raw
        wrapped = delta < 0
        if wrapped:
            if not self.wrap_range:
                return None
            delta = self.wrap_range - self._last_raw + raw
        if delta < 0 or delta * self.scale_j / dt_s > self.max_plausible_w:
            return None
        self.wraps += int(wrapped)
        return delta


@dataclass
class Tick:
    """One reading: cumulative energy by domain, optional instantaneous power, counters."""

    t_s: float
    energy_j: dict[str, float]  # cumulative since the reader started; no "total" key
    power_w: dict[str, float] | None = None  # instantaneous power, when the sensor has one
    counts: dict[str, float] = field(default_factory=dict)  # cumulative flags/aux values


class Reader(Protocol):
    def read(self) -> Tick: ...


class Sampler:
    """Polls a reader in a daemon thread; keeps the ticks that open windows still need."""

    def __init__(self, reader: Reader, interval_s: float, *, name: str = "e3bench-meter") -> None:
        self.reader = reader
        self.interval_s = clamp_interval_s(interval_s)
        self.name = name
        self.ticks: list[Tick] = []
        self.errors = 0
        self.last_error: str | None = None
        self.thread_cpu_s = 0.0  # CPU time spent by the polling thread (all runs)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._thread_cpu_base_s = 0.0

    # ---------------------------------------------------------------- control
    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread_cpu_base_s = self.thread_cpu_s
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ---------------------------------------------------------------- reading
    def sample_now(self) -> Tick:
        """Read synchronously (the caller's thread); errors propagate to the caller."""
        with self._lock:
            tick = self.reader.read()
            self.ticks.append(tick)
            return tick

    def ticks_between(self, t0_s: float, t1_s: float) -> list[Tick]:
        with self._lock:
            return [k for k in self.ticks if t0_s <= k.t_s <= t1_s]

    def prune_before(self, t_s: float | None) -> None:
        """Forget ticks older than ``t_s`` (None: keep only the latest)."""
        with self._lock:
            if t_s is None:
                self.ticks = self.ticks[-1:]
            else:
                self.ticks = [k for k in self.ticks if k.t_s >= t_s]

    def _run(self) -> None:
        start_cpu_s = time.thread_time()
        next_t = time.perf_counter() + self.interval_s
        while not self._stop.wait(max(0.0, next_t - time.perf_counter())):
            next_t += self.interval_s
            now = time.perf_counter()
            if next_t < now:  # fell behind (suspended, overloaded): don't burst to catch up
                next_t = now + self.interval_s
            try:
                with self._lock:
                    self.ticks.append(self.reader.read())
            except Exception as exc:  # a sensor hiccup must not kill the thread
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
            self.thread_cpu_s = self._thread_cpu_base_s + time.thread_time() - start_cpu_s
        self.thread_cpu_s = self._thread_cpu_base_s + time.thread_time() - start_cpu_s


def thin_ticks(ticks: list[Tick], max_ticks: int = MAX_TICKS_PER_WINDOW) -> tuple[list[Tick], int]:
    """Every n-th tick (first and last kept) so that at most ``max_ticks`` remain; returns n."""
    if len(ticks) <= max_ticks:
        return ticks, 1
    step = -(-len(ticks) // (max_ticks - 1))
    kept = ticks[::step]
    if kept[-1] is not ticks[-1]:
        kept.append(ticks[-1])
    return kept, step


def power_samples(ticks: list[Tick]) -> list[PowerSample]:
    """A power time series from consecutive ticks, one sample per domain plus ``total``.

    Instantaneous power (NVML) is stamped at its tick; power derived from a counter is the
    average over the interval between ticks and is stamped at the interval's midpoint.
    """
    out: list[PowerSample] = []
    for prev, cur in zip(ticks, ticks[1:], strict=False):
        dt_s = cur.t_s - prev.t_s
        if cur.power_w is not None:
            if not out and prev.power_w is not None:
                out.extend(_samples_at(prev.t_s, prev.power_w))
            out.extend(_samples_at(cur.t_s, cur.power_w))
        elif dt_s > 0:
            power = {
                d: (cur.energy_j[d] - prev.energy_j.get(d, cur.energy_j[d])) / dt_s
                for d in cur.energy_j
            }
            out.extend(_samples_at(prev.t_s + dt_s / 2, power))
    return out


def _samples_at(t_s: float, power_w: dict[str, float]) -> list[PowerSample]:
    samples = [PowerSample(t_s=t_s, power_w=p, domain=d) for d, p in power_w.items()]
    samples.append(PowerSample(t_s=t_s, power_w=sum(power_w.values()), domain="total"))
    return samples


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
            tick = self._sampler.sample_now()
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
            t1 = self._sampler.sample_now()
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

        series_ticks, thinned_by = thin_ticks(ticks)
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
        details.update(self._details(t0, t1, ticks))
        return EnergyReading(
            window=window,
            duration_s=t1.t_s - t0.t_s,
            energy_j=energy_j,
            method=self.method,
            sensor=self.sensor(),
            details=details,
            samples=power_samples(series_ticks),
        )

    def _after_window_closed(self) -> None:
        if self._sampler is None:
            return
        if self._windows:
            self._sampler.prune_before(min(w.tick.t_s for w in self._windows.values()))
        else:
            self._sampler.stop()
            self._sampler.prune_before(None)
