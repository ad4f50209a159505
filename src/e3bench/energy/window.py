"""The one metered window: sync → begin → fn → sync → end → summarize.

Every measured stretch of work in e3bench — a batch size of the speed run, a task of the
quality run, the training steps and evaluations of fine-tuning and of the training suite — goes
through :class:`MeteredWindow`, so timing, energy, idle subtraction and the cross-check meter
mean the same thing everywhere:

* the device is synchronised before the meter starts and before it stops (``sync``), so queued
  GPU work is inside the window it belongs to;
* the primary meter and the optional cross-check meter see exactly the same window;
* the idle baseline is metered by the caller once the workload's resident state exists
  (:meth:`MeteredWindow.measure_idle` after the model is loaded, with ``state`` naming it), so
  only what the work adds counts as net energy;
* :meth:`MeteredWindow.summarize` turns a reading into the typed
  :class:`~e3bench.energy.accounting.EnergySummary` (gross, idle-subtracted net, per token and
  per request, prefill/decode split, CO2e), the one energy record of every result.

Training adds windows up per bucket ("train", "eval") with :class:`EnergyTotals`, which merges
the bucket's readings into one reading before summarizing, so a training record carries the
same ``EnergySummary`` as an inference record.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from e3bench.core.api import EnergyMeter, EnergyReading
from e3bench.core.progress import Reporter, as_reporter
from e3bench.core.timing import clock
from e3bench.energy import accounting, phases
from e3bench.energy.accounting import EnergyRun, EnergySummary, IdleBaseline
from e3bench.energy.meters.bounded import DEFAULT_TIMEOUT_S, BoundedMeter

T = TypeVar("T")
#: a :class:`~e3bench.core.progress.Reporter` or a plain line callback
Progress = Reporter | Callable[[str], None]
CROSS_NOTE = "cross-check meter over the same window"


def _no_sync() -> None:
    return None


@dataclass
class Metered(Generic[T]):
    """What one window gave: ``fn``'s result, the readings and the wall time between the two
    synchronisations (seconds, ``core.timing.clock``)."""

    name: str
    result: T
    reading: EnergyReading
    cross_reading: EnergyReading | None
    elapsed_s: float


class MeteredWindow:
    """A meter (and optional cross-check meter) with its idle baseline, run around work.

    ``sync`` is called at both ends of every window (``backend.synchronize`` for inference,
    ``torch.cuda.synchronize`` for training; a no-op by default). ``region`` is the grid
    region for CO2e (``None`` = world average) and ``pue`` the data centre's Power Usage
    Effectiveness (CO2e of facility energy = IT energy × PUE; 1.0 = IT only). Construct with :meth:`create` to pick meters
    by name; the constructor takes ready meter objects (tests, plugins).

    Every meter call waits at most ``timeout_s`` seconds (:class:`~e3bench.energy.meters.bounded.
    BoundedMeter`): a meter that hangs makes its windows' energy ``missing`` with the reason
    (listed in :attr:`problems`), and the work goes on.
    """

    def __init__(
        self,
        meter: EnergyMeter,
        *,
        meter_reason: str = "",
        sync: Callable[[], None] | None = None,
        region: str | None = None,
        cross: EnergyMeter | None = None,
        timeout_s: float | None = DEFAULT_TIMEOUT_S,
        pue: float = 1.0,
    ) -> None:
        self.meter = meter
        self.meter_reason = meter_reason or getattr(meter, "name", "meter")
        self.sync = sync or _no_sync
        self.region = region
        self.pue = pue
        self.cross = cross
        self.idle: IdleBaseline | None = None
        self.cross_idle: IdleBaseline | None = None
        self._bounded = BoundedMeter(meter, timeout_s)
        self._cross_bounded = None if cross is None else BoundedMeter(cross, timeout_s)

    @classmethod
    def create(
        cls,
        choice: str,
        *,
        device: str = "cpu",
        cpu_tdp_w: float | None = None,
        region: str | None = None,
        cross_choice: str | None = None,
        sync: Callable[[], None] | None = None,
        timeout_s: float | None = DEFAULT_TIMEOUT_S,
        pue: float = 1.0,
    ) -> MeteredWindow:
        """Build the meters named ``choice`` / ``cross_choice`` (see ``energy.meters``). The
        idle baseline is not measured here: call :meth:`measure_idle` once the workload's
        model is loaded (before the load, its memory and device context would count as work).
        ``timeout_s``: the most seconds one meter call may take (see the class docstring).

        Raises :class:`~e3bench.core.errors.E3Error` for a meter that was asked for by name
        and cannot work; nothing stays open when it does.
        """
        from e3bench.energy.meters import make_meter

        meter, why = make_meter(choice, device=device, cpu_tdp_w=cpu_tdp_w)
        cross = None
        try:
            if cross_choice:
                cross, _ = make_meter(cross_choice, device=device, cpu_tdp_w=cpu_tdp_w)
            win = cls(meter, meter_reason=why, sync=sync, region=region, cross=cross, timeout_s=timeout_s, pue=pue)
        except BaseException:
            meter.close()
            if cross is not None:
                cross.close()
            raise
        return win

    @property
    def name(self) -> str:
        """The primary meter's name (``nvml``, ``rapl``, ``estimate``, ``codecarbon``, ``none``)."""
        return getattr(self.meter, "name", "meter")

    @property
    def measures(self) -> bool:
        """False for the ``none`` meter: energy is not measured at all."""
        return self.name != "none"

    def measure_idle(self, seconds: float, state: str, progress: Progress | None = None) -> None:
        """Meter ``seconds`` of doing nothing with each meter (the idle baselines), after
        synchronising the device. ``state`` names what is resident now (e.g. "model loaded,
        before warm-up") and is kept in the baselines and every summary that subtracts them.
        Does nothing for ``seconds`` <= 0 or the ``none`` meter."""
        if seconds <= 0 or not self.measures:
            return
        n = 2 if self._cross_bounded is not None else 1
        with as_reporter(progress).stage(f"measuring idle power for {seconds:g} s ({self.name}; {state})",
                                         unit="s") as st:  # fmt: skip
            st.update(eta_s=n * seconds)  # a countdown: nothing to count while idle
            self.sync()
            self.idle = accounting.measure_idle_baseline(self._bounded, seconds, state=state)  # type: ignore[arg-type]
            if self._cross_bounded is not None:
                self.cross_idle = accounting.measure_idle_baseline(self._cross_bounded, seconds, state=state)  # type: ignore[arg-type]

    def _meters(self) -> list[BoundedMeter]:
        return [m for m in (self._bounded, self._cross_bounded) if m is not None]

    @property
    def problems(self) -> list[str]:
        """One line per meter that stopped answering (its windows' energy is missing since)."""
        return [m.hung for m in self._meters() if m.hung]

    @contextlib.contextmanager
    def open(self, name: str) -> Iterator[Metered[None]]:
        """The window itself: ``with window.open(name) as m: work()``; ``m`` holds the readings
        and the elapsed seconds once the block has ended.

        Meters never raise in ``end`` (a failed reading is ``method="missing"``); if the block
        raises, both meters are still ended and the exception propagates.
        """
        m: Metered[None] = Metered(name, None, EnergyReading(name, 0.0, {}, "missing", ""), None, 0.0)
        self.sync()
        for meter in self._meters():
            meter.begin(name)
        t0 = clock()
        try:
            yield m
        finally:
            self.sync()
            m.elapsed_s = clock() - t0
            m.reading = self._bounded.end(name)
            m.cross_reading = self._cross_bounded.end(name) if self._cross_bounded is not None else None

    def run(self, name: str, fn: Callable[[], T]) -> Metered[T]:
        """Run ``fn`` inside one synchronized window named ``name`` (see :meth:`open`)."""
        with self.open(name) as m:
            result = fn()
        return Metered(name, result, m.reading, m.cross_reading, m.elapsed_s)

    def summarize(
        self,
        reading: EnergyReading,
        *,
        input_tokens: int = 0,
        output_tokens: int = 0,
        requests: int = 0,
        intervals: Sequence[phases.Interval] | None = None,
        cross: bool = False,
    ) -> EnergySummary:
        """The energy record of one reading: gross, net of this meter's idle baseline, per
        token (``input_tokens``, ``output_tokens``) and per request, CO2e for ``region``.

        ``intervals`` = (start, first token, end) per request split the window's energy
        into prefill and decode (:func:`e3bench.energy.phases.split_phases`: integrated when
        the sensor resolves the phases, else apportioned and labelled so). ``cross=True``
        subtracts the cross-check meter's idle baseline and labels the summary as the
        cross-check.
        """
        split = phases.split_phases(reading, intervals) if intervals else None
        summary = accounting.summarize(
            reading,
            self.cross_idle if cross else self.idle,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            requests=requests,
            phases=split,
            region=self.region,
            pue=self.pue,
        )
        if cross:
            summary = summary.model_copy(update={"notes": [*summary.notes, CROSS_NOTE]})
        return summary

    def summaries(self, metered: Metered[Any], **counts: Any) -> tuple[EnergySummary, EnergySummary | None]:
        """(primary, cross-check or None) summaries of one window; ``counts`` as in
        :meth:`summarize`."""
        main = self.summarize(metered.reading, **counts)
        if metered.cross_reading is None:
            return main, None
        return main, self.summarize(metered.cross_reading, cross=True, **counts)

    def run_info(self) -> EnergyRun:
        """Run-level energy facts for the record: meters, why this meter, idle baselines."""
        return EnergyRun(
            meter=self.name,
            meter_choice_reason=self.meter_reason,
            idle=self.idle,
            cross_check_meter=None if self.cross is None else getattr(self.cross, "name", "meter"),
            cross_check_idle=self.cross_idle,
        )

    def close(self) -> None:
        """Release the meters (NVML handles, CodeCarbon trackers, sampler threads)."""
        for m in self._meters():
            m.close()


class EnergyTotals:
    """Several windows per named bucket, summed into one :class:`EnergySummary` per bucket.

    ``with totals.window("train"): step()`` meters one step and adds it to "train";
    :meth:`summary` merges the bucket's readings (durations and joules add up) and summarizes
    the merged reading once, so net energy is gross − idle power × total metered time.
    ``idle_seconds`` is the length of the idle baseline that :meth:`measure_idle` meters once
    the model to train is loaded.
    """

    def __init__(self, window: MeteredWindow, *, idle_seconds: float = 0.0) -> None:
        self.window_ = window
        self.idle_seconds = idle_seconds
        self._readings: dict[str, list[EnergyReading]] = {}
        self._n = 0

    def measure_idle(self, state: str, progress: Progress | None = None) -> None:
        """Meter the idle baseline now (``idle_seconds``; nothing when 0): call it after the
        model is loaded/built and on its device, naming that ``state``. Summaries made after
        this subtract it."""
        self.window_.measure_idle(self.idle_seconds, state, progress)

    @contextlib.contextmanager
    def window(self, bucket: str) -> Iterator[None]:
        """Meter the body as one window of ``bucket``."""
        self._n += 1
        m: Metered[None] | None = None
        try:
            with self.window_.open(f"{bucket}-{self._n}") as m:
                yield
        finally:
            if m is not None:  # the window opened: keep its reading even when the body raised
                self._readings.setdefault(bucket, []).append(m.reading)

    def summary(self, bucket: str, *, tokens: int = 0, samples: int = 0) -> EnergySummary:
        """The bucket's energy: ``tokens`` processed (as input tokens: EPT_total = E/tokens)
        and ``samples`` (as requests: energy per sample = ``energy_per_request_j``)."""
        merged = accounting.merge_readings(self._readings.get(bucket, []), bucket)
        return self.window_.summarize(merged, input_tokens=tokens, requests=samples)

    def total_j(self, bucket: str) -> tuple[float | None, float | None]:
        """(basis energy, gross energy) of ``bucket`` so far, joules; basis = net when an
        idle baseline from the same sensor exists. (0, 0) for an empty bucket of a working
        meter; (None, None) when energy is not measured."""
        if not self._readings.get(bucket):
            return (0.0, 0.0) if self.window_.measures else (None, None)
        s = self.summary(bucket)
        basis = s.net_energy_j if s.net_energy_j is not None else s.gross_energy_j
        return basis, s.gross_energy_j

    def reset(self, bucket: str) -> None:
        """Forget ``bucket``'s windows (a new configuration of the suite starts)."""
        self._readings.pop(bucket, None)
