"""The sampling half of every sampled meter: raw counters turned into cumulative joules
(:class:`Counter`), one reading of all domains (:class:`Tick`), the daemon thread that polls a
reader at <= 10 Hz (:class:`Sampler`), and the power series derived from consecutive ticks.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

from e3bench.core.api import PowerSample

#: Polling is never faster than this (DESIGN: "poll power at no more than every 100 ms").
MIN_SAMPLE_INTERVAL_S = 0.1
MAX_SAMPLE_INTERVAL_S = 10.0
#: A window's power series keeps at most this many ticks (1 h at 10 Hz); longer windows keep
#: every n-th tick. Counter-derived power stays exact on average: energy is cumulative.
MAX_TICKS_PER_WINDOW = 36_000
#: a synchronous read at a window's begin/end is tried this often before the window is missing
READ_ATTEMPTS = 3
READ_RETRY_PAUSE_S = 0.005


def clamp_interval_s(interval_s: float) -> float:
    """Keep polling between 10 Hz and 0.1 Hz."""
    if not math.isfinite(interval_s) or interval_s <= 0:
        return MIN_SAMPLE_INTERVAL_S
    return min(max(interval_s, MIN_SAMPLE_INTERVAL_S), MAX_SAMPLE_INTERVAL_S)


class Counter:
    """A raw hardware energy counter turned into a cumulative total in joules.

    ``wrap_range`` is the value at which the raw counter rolls over to 0 (RAPL's
    ``max_energy_range_uj``); with it, a decrease is a wrap. A decrease without a known range:

    * ``wraps_expected=True`` (RAPL, whose counters do wrap but whose range file may be
      unreadable): the interval's energy is *estimated* as the previous interval's power × its
      duration, counted in ``wraps_estimated`` with the joules in ``estimated_j``. (An assumed
      range would err by the whole range per wrap when the guess is wrong — 262 kJ on Intel
      servers, 65.5 kJ on AMD — while this errs by at most the power change × one poll.)
    * otherwise (NVML's 64-bit counter never wraps) it is a glitch: dropped and counted in
      ``negative_deltas_dropped``, as is a jump implying more than ``max_plausible_w``.
    """

    def __init__(
        self,
        *,
        scale_j: float,
        wrap_range: float | None = None,
        max_plausible_w: float = 20_000.0,
        wraps_expected: bool = False,
    ) -> None:
        self.scale_j = scale_j
        self.wrap_range = wrap_range
        self.max_plausible_w = max_plausible_w
        self.wraps_expected = wraps_expected
        self.total_j = 0.0
        self.wraps = 0
        self.wraps_estimated = 0
        self.estimated_j = 0.0
        self.negative_deltas_dropped = 0
        self._last_raw: float | None = None
        self._last_t_s: float | None = None
        self._last_power_w: float | None = None

    def update(self, raw: float, t_s: float) -> float:
        """Feed one raw reading taken at ``t_s``; return the cumulative joules.

        Raises ValueError for a non-finite raw value (the read counts as failed; the
        cumulative total is left untouched).
        """
        if not math.isfinite(raw):
            raise ValueError(f"sensor returned a non-finite value ({raw!r})")
        if self._last_raw is not None and self._last_t_s is not None:
            dt_s = max(t_s - self._last_t_s, 1e-3)
            delta = self._delta(raw, dt_s)
            if delta is not None:
                self.total_j += delta * self.scale_j
                self._last_power_w = delta * self.scale_j / dt_s
            elif raw < self._last_raw and self.wraps_expected and not self.wrap_range and self._last_power_w is not None:
                joules = self._last_power_w * dt_s  # a wrap of unknown range: hold the power
                self.total_j += joules
                self.estimated_j += joules
                self.wraps_estimated += 1
            else:
                self.negative_deltas_dropped += 1
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
    """A sensor read once per tick by the sampler thread."""

    def read(self) -> Tick: ...


class Sampler:
    """Polls a reader in a daemon thread; keeps the ticks that open windows still need."""

    def __init__(self, reader: Reader, interval_s: float, *, name: str = "e3bench-meter") -> None:
        self.reader = reader
        self.interval_s = clamp_interval_s(interval_s)
        self.name = name
        self.ticks: list[Tick] = []
        self.errors = 0
        self.read_retries = 0
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
        """Read synchronously (the caller's thread), up to ``READ_ATTEMPTS`` times; the last
        error propagates to the caller. Retries are counted in ``read_retries``."""
        for attempt in range(READ_ATTEMPTS):
            try:
                with self._lock:
                    tick = self.reader.read()
                    self.ticks.append(tick)
                    return tick
            except Exception:
                if attempt == READ_ATTEMPTS - 1:
                    raise
                self.read_retries += 1
                time.sleep(READ_RETRY_PAUSE_S)
        raise AssertionError("unreachable")  # pragma: no cover

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


