"""``e3bench.measure``: meter your own code, as CodeCarbon's ``EmissionsTracker`` or Zeus's
measurement windows do, with e3bench's meters and its one metered window.

::

    with e3bench.measure("my-step", meter="estimate") as m:
        work()
    print(m.duration_s, m.energy_j, m.method, m.sensor, m.co2e_g, m.co2e_source)

The block is one :class:`~e3bench.energy.window.MeteredWindow` window — the same code that
meters every batch size of ``e3bench run`` — with a meter picked by name from the meter registry
(``auto``: NVML on a CUDA device, else RAPL when readable, else the TDP estimate; plugins too).
Every figure says how it was obtained: ``method`` (measured / estimated / missing) and
``sensor``; the energy is gross, or net of an idle baseline when ``idle_seconds`` > 0 (``basis``
says which); CO2e names its grid intensity and source.

(The module is ``metering``, not ``measure``: a submodule named like the function would replace
``e3bench.measure`` with the module whenever something imported it.)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from e3bench.core.errors import E3Error

if TYPE_CHECKING:
    from e3bench.energy.accounting import EnergySummary

#: the state named in the idle baseline of a measurement (what was resident while it was metered)
IDLE_STATE = "the caller's process before the measured block"


@dataclass(frozen=True)
class MeasureOptions:
    """The keywords of :func:`measure` (and :class:`Measurement`), with their defaults.

    ``meter``: ``auto`` or a registered meter (``nvml``, ``rapl``, ``estimate``, ``codecarbon``,
    ``none``, plugins); ``device``: ``cpu`` or ``cuda[:i]`` (which GPU NVML reads, and what
    ``auto`` prefers); ``region``: grid region for CO2e (None = world average); ``cpu_tdp_w``: TDP
    for the estimate meter; ``idle_seconds``: meter that long of idling first and report net
    energy; ``sync``: called at both ends so queued GPU work counts (default on a ``cuda``
    device when the caller imported torch: ``torch.cuda.synchronize(device)``); ``timeout_s``:
    the most seconds one meter call may take (None: the meters' default); ``pue``: the data
    centre's Power Usage Effectiveness (CO2e of facility energy = IT energy × PUE, CodeCarbon's
    ``pue``).
    """

    meter: str = "auto"
    device: str = "cpu"
    region: str | None = None
    cpu_tdp_w: float | None = None
    idle_seconds: float = 0.0
    sync: Callable[[], None] | None = None
    timeout_s: float | None = None
    pue: float = 1.0

    @classmethod
    def of(cls, options: dict[str, Any]) -> MeasureOptions:
        """The options from the caller's keywords; an unknown one is an E3Error naming the others."""
        from dataclasses import fields

        known = [f.name for f in fields(cls)]
        for key in options:
            if key not in known:
                from e3bench.core.errors import unknown_name

                raise unknown_name("keyword of e3bench.measure()", key, known)
        return cls(**options)


@dataclass(frozen=True)
class MeasureResult:
    """What one :func:`measure` block took: seconds, joules, CO2e, each with its provenance.

    ``duration_s``: wall time between the two device synchronisations around the block (s).
    ``energy_j``: joules on ``basis`` ("net" = gross − idle power × duration when an idle
    baseline from the same sensor was measured; else "gross (...)"); ``None`` when the meter gave
    nothing (``method == "missing"``, ``error`` says why). ``co2e_g``: grams CO2e of
    ``energy_j`` at ``grid_g_per_kwh`` (``co2e_source`` names region, source and year).
    ``summary``: the full :class:`~e3bench.energy.accounting.EnergySummary` (per token, per
    request, domains, notes), as in a run record.
    """

    name: str
    duration_s: float
    energy_j: float | None
    basis: str
    gross_energy_j: float | None
    net_energy_j: float | None
    method: str
    sensor: str
    meter: str
    meter_reason: str
    mean_power_w: float | None
    co2e_g: float | None
    grid_g_per_kwh: float | None
    grid_region: str | None
    co2e_source: str
    error: str | None
    summary: EnergySummary

    def line(self) -> str:
        """One line naming every figure with its unit and how it was obtained."""
        from e3bench.core.fmt import num

        if self.energy_j is None:
            return f"{self.name}: {num(self.duration_s)} s; energy missing ({self.error})"
        return (
            f"{self.name}: {num(self.duration_s)} s, {num(self.energy_j)} J {self.basis} ({self.method}, "
            f"{self.sensor}), {num(self.co2e_g)} g CO2e ({self.co2e_source})"
        )


def _result(name: str, elapsed_s: float, s: EnergySummary, meter: str, reason: str) -> MeasureResult:
    net = s.basis == "net" and s.net_energy_j is not None
    energy = s.net_energy_j if net else s.gross_energy_j
    co2e = s.co2e_net_g if net else s.co2e_g
    year = f", {s.grid_year}" if s.grid_year else ""
    default = " — world average; pass region= for yours" if s.grid_is_default else ""
    source = f"{num_or_dash(s.grid_g_per_kwh)} gCO2e/kWh, {s.grid_region} ({s.grid_source}{year}){default}"
    if s.pue not in (None, 1.0):
        source += f"; of facility energy = IT energy × PUE {s.pue}"
    return MeasureResult(
        name=name, duration_s=elapsed_s, energy_j=energy, basis=s.basis, gross_energy_j=s.gross_energy_j,
        net_energy_j=s.net_energy_j, method=s.method, sensor=s.sensor, meter=meter, meter_reason=reason,
        mean_power_w=s.mean_power_w, co2e_g=co2e, grid_g_per_kwh=s.grid_g_per_kwh, grid_region=s.grid_region,
        co2e_source=source, error=s.error, summary=s,
    )  # fmt: skip


def num_or_dash(value: float | None) -> str:
    """``value`` formatted by :func:`e3bench.core.fmt.num`, or "–" for None."""
    from e3bench.core.fmt import num

    return "–" if value is None else num(value)


def default_sync(device: str) -> Callable[[], None] | None:
    """``torch.cuda.synchronize`` on ``device`` when it is a CUDA device and the caller's code
    already imported torch (queued GPU work then ends inside the window, as in ``e3bench run``);
    None otherwise (torch is never imported here)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None or not device.startswith("cuda"):
        return None
    return functools.partial(torch.cuda.synchronize, device)


def _check_args(o: MeasureOptions) -> None:
    """Reject the keyword values no meter could use, each named as the caller passed it."""
    import math

    from e3bench.core.devices import device_problem

    def bad(key: str, problem: str, fix: str) -> E3Error:
        return E3Error(f"measure({key}=...): {problem}", fix)

    idle, timeout, device = o.idle_seconds, o.timeout_s, o.device
    if not isinstance(idle, (int, float)) or isinstance(idle, bool) or not math.isfinite(idle) or idle < 0:
        raise bad("idle_seconds", f"must be a number of seconds ≥ 0 (got {idle!r})", "pass 0 for no idle baseline")
    if timeout is not None and (not isinstance(timeout, (int, float)) or isinstance(timeout, bool)
                                or not math.isfinite(timeout) or timeout <= 0):  # fmt: skip
        raise bad("timeout_s", f"must be a number of seconds > 0 (got {timeout!r})", "pass None for the default")
    if device_problem(device) is not None:
        raise bad("device", f"{device!r} is not cpu, cuda or cuda:<index>", "pass device='cpu' or 'cuda:0'")
    pue = o.pue
    if not isinstance(pue, (int, float)) or isinstance(pue, bool) or not math.isfinite(pue) or pue < 1.0:
        raise bad("pue", f"a PUE is facility energy / IT energy, a number ≥ 1.0 (got {pue!r})", "e.g. pue=1.2, or 1.0")


class Measurement:
    """The context manager :func:`measure` returns; after the block, ``m.result`` (a
    :class:`MeasureResult`) and its fields on ``m`` itself (``m.energy_j``, ...).

    Work counts for per-token figures can be set inside the block (``m.input_tokens``,
    ``m.output_tokens``, ``m.requests``). If the block raises, the meters are still stopped and
    closed, ``m.result`` still holds what was measured, and the exception propagates.
    """

    def __init__(self, name: str = "measure", **options: Any) -> None:
        self.name = name
        self._opts = MeasureOptions.of(options)
        self.input_tokens = 0
        self.output_tokens = 0
        self.requests = 0
        self.result: MeasureResult | None = None
        self._window: Any = None
        self._open: Any = None
        self._metered: Any = None

    def __enter__(self) -> Measurement:
        from e3bench.energy import carbon
        from e3bench.energy.meters.bounded import DEFAULT_TIMEOUT_S
        from e3bench.energy.window import MeteredWindow

        if self._window is not None:
            raise E3Error(f"measure({self.name!r}) is already running", "use a new e3bench.measure(...) per block")
        o = self._opts
        _check_args(o)
        carbon.lookup(o.region)  # an unknown region fails here, before anything is metered
        timeout = DEFAULT_TIMEOUT_S if o.timeout_s is None else o.timeout_s
        try:
            window = MeteredWindow.create(o.meter, device=o.device, cpu_tdp_w=o.cpu_tdp_w, region=o.region,
                                          sync=o.sync or default_sync(o.device), timeout_s=timeout, pue=o.pue)  # fmt: skip
        except E3Error as err:  # the meters name the CLI flag; here the caller passed a keyword
            if not err.problem.startswith("--meter "):
                raise
            flag = f"--meter {o.meter}"
            raise E3Error(f"measure(meter={o.meter!r})" + err.problem[len(flag):], err.fix) from err
        try:
            window.measure_idle(o.idle_seconds, IDLE_STATE)
            self._open = window.open(self.name)
            self._metered = self._open.__enter__()
        except BaseException:
            window.close()
            raise
        self._window = window
        self.result = None
        return self

    def __exit__(self, *exc: object) -> bool:
        window, self._window = self._window, None
        try:
            self._open.__exit__(*exc)
            m = self._metered
            summary = window.summarize(m.reading, input_tokens=self.input_tokens,
                                       output_tokens=self.output_tokens, requests=self.requests)  # fmt: skip
            self.result = _result(self.name, m.elapsed_s, summary, window.name, window.meter_reason)
        finally:
            window.close()
        return False

    def start(self) -> Measurement:
        """Begin metering without a ``with`` block (as CodeCarbon's ``tracker.start()``)."""
        return self.__enter__()

    def stop(self) -> MeasureResult:
        """End the window :meth:`start` began and return its :class:`MeasureResult`."""
        if self._window is None:
            raise E3Error(f"measure({self.name!r}).stop() without start()", "call start() first, or use a with block")
        self.__exit__(None, None, None)
        assert self.result is not None
        return self.result

    def __getattr__(self, attr: str) -> Any:
        # the result's fields on the measurement itself, once the block has ended
        if attr in MeasureResult.__dataclass_fields__ or attr == "line":
            result = self.__dict__.get("result")
            if result is None:
                raise AttributeError(f"measure(...).{attr} exists once the with block has ended")
            return getattr(result, attr)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {attr!r}")


def measure(name: str = "measure", **options: Any) -> Measurement:
    """Meter the ``with`` block as one window named ``name``; see the module docstring. The
    keywords (``meter``, ``device``, ``region``, ``cpu_tdp_w``, ``idle_seconds``, ``sync``,
    ``timeout_s``, ``pue``) are :class:`MeasureOptions`'s fields. Unknown keywords, unknown names and
    unusable requested meters raise :class:`~e3bench.core.errors.E3Error` (the keywords here,
    the others on entering the block)."""
    return Measurement(name, **options)
