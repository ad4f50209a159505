"""Energy arithmetic the runner embeds in a result: idle baseline and the typed summary.

Pure functions plus pydantic models; every field carries its unit in its name. Per-unit figures
(per request, per token, tokens per joule, Wh per 1000 queries) use the idle-subtracted *net*
energy when an idle baseline from the same sensor exists, and say so in ``basis``; the gross
variants are always in ``gross``. CO2e is computed on gross energy (all of it came from the
grid) and on net energy. The prefill/decode split is :mod:`e3bench.energy.phases`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

from pydantic import BaseModel, ConfigDict

from e3bench.core.api import EnergyMeter, EnergyReading, Method
from e3bench.energy import carbon
from e3bench.energy.phases import PhaseMethod, PhaseSplit

IDLE_WINDOW = "idle-baseline"
ESTIMATE_IDLE_NOTE = (
    "for the tdp-model estimate, idle power is the model's floor (0.1 × TDP_eff) plus RAM at "
    "the RSS while idle; subtracting it leaves the load-dependent part 0.9 × TDP_eff × u³ "
    "(plus RAM for memory the work added), which is the intended net figure"
)


# ---------------------------------------------------------------------------- models
class IdleBaseline(BaseModel):
    """Power drawn while the loaded model sits idle, from the run's own meter.

    ``state`` says what was resident while idle was metered (e.g. "model loaded, before
    warm-up"): only what differs between that state and the workload counts as net energy.
    """

    model_config = ConfigDict(frozen=True)

    method: Method
    sensor: str
    duration_s: float
    power_w: float | None  # total
    power_by_domain_w: dict[str, float] = {}
    energy_j: float | None = None
    error: str | None = None
    note: str | None = None
    state: str | None = None


class PerUnitEnergy(BaseModel):
    """Energy normalised by work, on one basis (gross or net)."""

    model_config = ConfigDict(frozen=True)

    energy_j: float | None = None
    energy_per_request_j: float | None = None
    ept_in_j_per_token: float | None = None  # E / input tokens
    ept_out_j_per_token: float | None = None  # E / output tokens
    ept_total_j_per_token: float | None = None  # E / (input + output tokens)
    tokens_per_j: float | None = None  # output tokens per joule
    wh_per_1000_queries: float | None = None


class EnergySummary(BaseModel):
    """Everything the result record says about energy for one measured window."""

    model_config = ConfigDict(frozen=True)

    window: str
    method: Method
    sensor: str
    error: str | None = None
    basis: str  # "net" or "gross (<why no net>)": which energy the flat per-unit fields use
    duration_s: float | None = None
    gross_energy_j: float | None = None
    idle_power_w: float | None = None
    idle_method: Method | None = None
    idle_state: str | None = None  # what was loaded while the subtracted idle was metered
    net_energy_j: float | None = None
    net_clamped_to_zero: bool = False
    energy_by_domain_j: dict[str, float] = {}
    mean_power_w: float | None = None
    # per-unit figures on ``basis``
    energy_per_request_j: float | None = None
    ept_in_j_per_token: float | None = None
    ept_out_j_per_token: float | None = None
    ept_total_j_per_token: float | None = None
    tokens_per_j: float | None = None
    wh_per_1000_queries: float | None = None
    gross: PerUnitEnergy = PerUnitEnergy()
    net: PerUnitEnergy = PerUnitEnergy()
    # phases (gross, and net of idle power over each phase's duration); how they were split:
    # "integrated" (the power series resolves the phases) or "apportioned" (a model split the
    # window's energy: ``phase_attribution`` says which, a note says why)
    prefill_energy_j: float | None = None
    decode_energy_j: float | None = None
    prefill_net_energy_j: float | None = None
    decode_net_energy_j: float | None = None
    prefill_duration_s: float | None = None
    decode_duration_s: float | None = None
    phase_method: PhaseMethod | None = None
    phase_attribution: str | None = None
    prefill_power_w: float | None = None  # fitted mean power of each phase (apportioned by a fit)
    decode_power_w: float | None = None
    # carbon: CO2e of facility energy = the measured (IT) energy × ``pue`` (CodeCarbon's PUE)
    pue: float | None = None  # None: a record made before PUE existed (= 1.0)
    facility_energy_j: float | None = None  # gross IT energy × pue
    co2e_g: float | None = None  # on gross energy × pue
    co2e_net_g: float | None = None  # on net energy × pue
    grid_g_per_kwh: float | None = None
    grid_region: str | None = None
    grid_source: str | None = None
    grid_year: int | None = None
    grid_is_default: bool | None = None
    # work
    input_tokens: int = 0
    output_tokens: int = 0
    requests: int = 0
    formula: str | None = None
    details: dict[str, object] = {}
    notes: list[str] = []


class EnergyRun(BaseModel):
    """Run-level energy facts: which meter and why, its idle baseline, and the optional
    cross-check meter (a second meter over the same windows) with its own baseline."""

    meter: str
    meter_choice_reason: str
    idle: IdleBaseline | None = None
    cross_check_meter: str | None = None
    cross_check_idle: IdleBaseline | None = None
    power_trace_file: str | None = None


# ------------------------------------------------------------------------ baseline
def measure_idle_baseline(
    meter: EnergyMeter,
    seconds: float = 3.0,
    *,
    state: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> IdleBaseline:
    """Meter ``seconds`` of doing nothing; return mean power (W) per domain and in total.

    ``state`` (what is loaded now, e.g. "model loaded, before warm-up") is kept in the
    baseline. A missing reading, a zero-length window or a non-finite energy gives a baseline
    with method ``missing`` and the reason, never a number.
    """
    meter.begin(IDLE_WINDOW)
    sleep(max(seconds, 0.0))
    reading = meter.end(IDLE_WINDOW)
    bad = _bad_reading(reading) or ("zero-length idle window" if reading.duration_s <= 0 else None)
    if bad:
        return IdleBaseline(
            method="missing",
            sensor=reading.sensor,
            duration_s=reading.duration_s,
            power_w=None,
            error=bad,
            state=state,
        )
    by_domain = {d: e / reading.duration_s for d, e in reading.energy_j.items() if d != "total"}
    total_j = reading.total_j or 0.0
    return IdleBaseline(
        method=reading.method,
        sensor=reading.sensor,
        duration_s=reading.duration_s,
        power_w=total_j / reading.duration_s,
        power_by_domain_w=by_domain,
        energy_j=total_j,
        note=ESTIMATE_IDLE_NOTE if reading.sensor == "tdp-model" else None,
        state=state,
    )


def _bad_reading(reading: EnergyReading) -> str | None:
    """Why a reading carries no usable energy (missing, or a NaN/inf value), else None."""
    if reading.method == "missing":
        return reading.error or "energy not measured"
    bad = sorted(d for d, v in reading.energy_j.items() if not math.isfinite(v))
    if bad or not reading.energy_j:
        what = ", ".join(bad) if bad else "no domain"
        return f"the meter returned a non-finite energy ({what}); treated as missing"
    if not math.isfinite(reading.duration_s):
        return "the meter returned a non-finite duration; treated as missing"
    return None


def merge_readings(readings: Sequence[EnergyReading], window: str) -> EnergyReading:
    """One reading for several windows of the same meter (a training bucket): durations and
    joules per domain add up; power samples are dropped (phases are not split across windows).

    Any missing window makes the merge missing (its error is kept): a partial sum would be
    reported as the whole. An empty sequence is missing ("no window was metered").
    """
    if not readings:
        return EnergyReading(window, 0.0, {}, "missing", "", error="no window was metered")
    first = readings[0]
    bad = next((r for r in readings if _bad_reading(r)), None)
    duration = sum(r.duration_s for r in readings)
    if bad is not None:
        return EnergyReading(window, duration, {}, "missing", bad.sensor, error=_bad_reading(bad))
    energy: dict[str, float] = {}
    for r in readings:
        for domain, joules in r.energy_j.items():
            energy[domain] = energy.get(domain, 0.0) + joules
    details = dict(first.details)
    details["windows"] = len(readings)
    short = [r for r in readings if r.details.get("short_window")]
    if short:
        details["short_window"] = True
        details["short_window_note"] = (
            f"{len(short)} of {len(readings)} windows were shorter than the sensor's update period: "
            + str(short[0].details.get("short_window_note", ""))
        )
    return EnergyReading(window, duration, energy, first.method, first.sensor, details=details)


# --------------------------------------------------------------------------- summary
def _div(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def _per_unit(energy_j: float | None, t_in: int, t_out: int, requests: int) -> PerUnitEnergy:
    per_request = _div(energy_j, requests)
    return PerUnitEnergy(
        energy_j=energy_j,
        energy_per_request_j=per_request,
        ept_in_j_per_token=_div(energy_j, t_in),
        ept_out_j_per_token=_div(energy_j, t_out),
        ept_total_j_per_token=_div(energy_j, t_in + t_out),
        tokens_per_j=_div(t_out, energy_j) if t_out else None,
        wh_per_1000_queries=None if per_request is None else per_request * 1000 / 3600,
    )


def summarize(
    reading: EnergyReading,
    idle: IdleBaseline | None,
    *,
    input_tokens: int,
    output_tokens: int,
    requests: int,
    phases: PhaseSplit | None = None,
    region: str | carbon.GridIntensity | None = None,
    pue: float = 1.0,
) -> EnergySummary:
    """Turn one window's reading into the record's energy figures (see the module doc).

    ``idle``: the baseline to subtract (only if from the same method and sensor); ``phases``:
    the window's prefill/decode split (:func:`e3bench.energy.phases.split_phases`); ``pue``: the
    data centre's Power Usage Effectiveness (CO2e is of facility energy = IT energy × PUE). A
    missing reading or one with a non-finite value gives method ``missing`` with the reason.
    """
    grid = region if isinstance(region, carbon.GridIntensity) else carbon.lookup(region)
    common: dict[str, object] = {
        "window": reading.window,
        "sensor": reading.sensor,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "requests": requests,
        "grid_g_per_kwh": grid.g_per_kwh,
        "grid_region": grid.region,
        "grid_source": grid.source,
        "grid_year": grid.year,
        "grid_is_default": grid.is_default,
        "pue": pue,
        "details": dict(reading.details),
        "formula": _str_or_none(reading.details.get("formula")),
    }
    gross_j = reading.total_j
    bad = _bad_reading(reading)
    if bad or gross_j is None:
        return EnergySummary(
            method="missing",
            error=bad or "energy not measured",
            basis="none (energy missing)",
            duration_s=reading.duration_s or None,
            **common,  # type: ignore[arg-type]
        )

    notes: list[str] = []
    duration_s = reading.duration_s
    idle_w, idle_method, basis = _usable_idle(reading, idle, notes)
    net_j: float | None = None
    clamped = False
    if idle_w is not None:
        net_j = gross_j - idle_w * duration_s
        if net_j < 0:
            clamped = True
            notes.append(
                f"net energy {net_j:.3g} J was below zero (idle {idle_w:.3g} W × "
                f"{duration_s:.3g} s > gross {gross_j:.3g} J) and is clamped to 0"
            )
            net_j = 0.0
    if reading.details.get("short_window"):
        notes.append(str(reading.details.get("short_window_note", "window shorter than sensor")))
    meter_notes = reading.details.get("notes")
    if isinstance(meter_notes, list):
        notes.extend(str(n) for n in meter_notes)

    gross = _per_unit(gross_j, input_tokens, output_tokens, requests)
    net = _per_unit(net_j, input_tokens, output_tokens, requests)
    chosen = net if basis == "net" else gross

    phase_fields: dict[str, object] = {}
    if phases is not None:
        phase_fields = {
            "prefill_energy_j": phases.prefill_j,
            "decode_energy_j": phases.decode_j,
            "prefill_duration_s": phases.prefill_s,
            "decode_duration_s": phases.decode_s,
            "phase_method": phases.method,
            "phase_attribution": phases.attribution,
            "prefill_power_w": phases.prefill_power_w,
            "decode_power_w": phases.decode_power_w,
        }
        if idle_w is not None:
            phase_fields["prefill_net_energy_j"] = max(phases.prefill_j - idle_w * phases.prefill_s, 0.0)
            phase_fields["decode_net_energy_j"] = max(phases.decode_j - idle_w * phases.decode_s, 0.0)
        if phases.note:
            notes.append(phases.note)

    return EnergySummary(
        method=reading.method,
        basis=basis,
        duration_s=duration_s,
        gross_energy_j=gross_j,
        idle_power_w=idle_w,
        idle_method=idle_method,
        idle_state=idle.state if idle is not None and idle_w is not None else None,
        net_energy_j=net_j,
        net_clamped_to_zero=clamped,
        energy_by_domain_j={d: e for d, e in reading.energy_j.items() if d != "total"},
        mean_power_w=_div(gross_j, duration_s),
        energy_per_request_j=chosen.energy_per_request_j,
        ept_in_j_per_token=chosen.ept_in_j_per_token,
        ept_out_j_per_token=chosen.ept_out_j_per_token,
        ept_total_j_per_token=chosen.ept_total_j_per_token,
        tokens_per_j=chosen.tokens_per_j,
        wh_per_1000_queries=chosen.wh_per_1000_queries,
        gross=gross,
        net=net,
        facility_energy_j=carbon.facility_j(gross_j, pue),
        co2e_g=carbon.co2e_g(gross_j, grid, pue),
        co2e_net_g=None if net_j is None else carbon.co2e_g(net_j, grid, pue),
        notes=notes,
        **phase_fields,  # type: ignore[arg-type]
        **common,  # type: ignore[arg-type]
    )


def _usable_idle(
    reading: EnergyReading, idle: IdleBaseline | None, notes: list[str]
) -> tuple[float | None, Method | None, str]:
    """Idle power to subtract, its method, and the basis label; never mixes sensors."""
    if idle is None:
        return None, None, "gross (no idle baseline)"
    if idle.method == "missing" or idle.power_w is None:
        return None, idle.method, f"gross (idle baseline missing: {idle.error})"
    if idle.method != reading.method or idle.sensor != reading.sensor:
        notes.append(
            f"idle baseline came from {idle.method}/{idle.sensor}, the window from "
            f"{reading.method}/{reading.sensor}: not subtracted"
        )
        return None, idle.method, "gross (idle baseline from a different sensor)"
    if idle.note:
        notes.append(idle.note)
    if idle.state:
        notes.append(f"idle power was metered in this state: {idle.state}")
    return idle.power_w, idle.method, "net"


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)
