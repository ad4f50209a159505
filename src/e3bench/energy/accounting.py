"""Energy arithmetic the runner embeds in a result: idle baseline, integration, phases, summary.

Pure functions plus pydantic models; every field carries its unit in its name. Per-unit figures
(per request, per token, tokens per joule, Wh per 1000 queries) use the idle-subtracted *net*
energy when an idle baseline from the same sensor exists, and say so in ``basis``; the gross
variants are always in ``gross``. CO2e is computed on gross energy (all of it came from the
grid) and on net energy.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Sequence

from pydantic import BaseModel, ConfigDict

from e3bench.core.api import EnergyMeter, EnergyReading, Method, PowerSample
from e3bench.energy import carbon

IDLE_WINDOW = "idle-baseline"
ESTIMATE_IDLE_NOTE = (
    "for the tdp-model estimate, idle power is the model's floor (0.1 × TDP_eff) plus RAM at "
    "the current RSS; subtracting it leaves the load-dependent part 0.9 × TDP_eff × u³, "
    "which is the intended net figure"
)


# ---------------------------------------------------------------------------- models
class IdleBaseline(BaseModel):
    """Power drawn while the loaded model sits idle, from the run's own meter."""

    model_config = ConfigDict(frozen=True)

    method: Method
    sensor: str
    duration_s: float
    power_w: float | None  # total
    power_by_domain_w: dict[str, float] = {}
    energy_j: float | None = None
    error: str | None = None
    note: str | None = None


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
    # phases (gross; net when phase durations are known)
    prefill_energy_j: float | None = None
    decode_energy_j: float | None = None
    prefill_net_energy_j: float | None = None
    decode_net_energy_j: float | None = None
    # carbon
    co2e_g: float | None = None  # on gross energy
    co2e_net_g: float | None = None
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
    sleep: Callable[[float], None] = time.sleep,
) -> IdleBaseline:
    """Meter ``seconds`` of doing nothing; return mean power per domain and in total."""
    meter.begin(IDLE_WINDOW)
    sleep(max(seconds, 0.0))
    reading = meter.end(IDLE_WINDOW)
    if reading.method == "missing" or reading.duration_s <= 0:
        return IdleBaseline(
            method="missing",
            sensor=reading.sensor,
            duration_s=reading.duration_s,
            power_w=None,
            error=reading.error or "zero-length idle window",
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
    )


def merge_readings(readings: Sequence[EnergyReading], window: str) -> EnergyReading:
    """One reading for several windows of the same meter (a training bucket): durations and
    joules per domain add up; power samples are dropped (phases are not split across windows).

    Any missing window makes the merge missing (its error is kept): a partial sum would be
    reported as the whole. An empty sequence is missing ("no window was metered").
    """
    if not readings:
        return EnergyReading(window, 0.0, {}, "missing", "", error="no window was metered")
    first = readings[0]
    bad = next((r for r in readings if r.method == "missing"), None)
    duration = sum(r.duration_s for r in readings)
    if bad is not None:
        return EnergyReading(window, duration, {}, "missing", bad.sensor, error=bad.error or "energy not measured")
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


# ---------------------------------------------------------------------- integration
def integrate_power(
    samples: Sequence[PowerSample], t0_s: float, t1_s: float, domain: str = "total"
) -> float:
    """Joules in [t0_s, t1_s] from power samples of ``domain`` (trapezoidal).

    Power is linear between samples (irregular spacing is fine), linearly interpolated at the
    window edges and held constant beyond the first/last sample. Raises ValueError when the
    domain has no samples.
    """
    pts = sorted((s.t_s, s.power_w) for s in samples if s.domain == domain)
    if not pts:
        raise ValueError(f"no power samples for domain '{domain}'")
    if t1_s <= t0_s:
        return 0.0
    ts = [t for t, _ in pts]
    ps = [p for _, p in pts]

    def power_at(t: float) -> float:
        i = bisect.bisect_left(ts, t)
        if i <= 0:
            return ps[0]
        if i >= len(ts):
            return ps[-1]
        ta, tb = ts[i - 1], ts[i]
        if tb == ta:
            return ps[i]
        return ps[i - 1] + (ps[i] - ps[i - 1]) * (t - ta) / (tb - ta)

    lo = bisect.bisect_right(ts, t0_s)
    hi = bisect.bisect_left(ts, t1_s)
    xs = [t0_s, *ts[lo:hi], t1_s]
    ys = [power_at(t0_s), *ps[lo:hi], power_at(t1_s)]
    return sum((xs[i + 1] - xs[i]) * (ys[i] + ys[i + 1]) / 2 for i in range(len(xs) - 1))


# ---------------------------------------------------------------------------- phases
Interval = tuple[float, float, float]  # (t_start_s, t_first_token_s, t_end_s)


def _union(segments: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for a, b in sorted(s for s in segments if s[1] > s[0]):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _subtract(
    segments: list[tuple[float, float]], holes: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for a, b in segments:
        cur = a
        for ha, hb in holes:
            if hb <= cur or ha >= b:
                continue
            if ha > cur:
                out.append((cur, ha))
            cur = max(cur, hb)
        if cur < b:
            out.append((cur, b))
    return out


def _phase_segments(
    intervals: Sequence[Interval],
) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    for start, first, end in intervals:
        if not start <= first <= end:
            raise ValueError(f"need t_start <= t_first_token <= t_end, got {(start, first, end)}")
    prefill = _union([(s, f) for s, f, _ in intervals])
    decode = _subtract(_union([(f, e) for _, f, e in intervals]), prefill)
    return prefill, decode


def attribute_phases(
    samples: Sequence[PowerSample], intervals: Sequence[Interval], domain: str = "total"
) -> tuple[float, float]:
    """(prefill_j, decode_j): energy from request start to first token, and after it.

    Overlapping requests (batches) are not double counted: each phase is the union of its
    spans, and time that is prefill for one request and decode for another counts as prefill.
    """
    prefill, decode = _phase_segments(intervals)
    prefill_j = sum(integrate_power(samples, a, b, domain) for a, b in prefill)
    decode_j = sum(integrate_power(samples, a, b, domain) for a, b in decode)
    return prefill_j, decode_j


def phase_durations(intervals: Sequence[Interval]) -> tuple[float, float]:
    """(prefill_s, decode_s) covered by the same spans that :func:`attribute_phases` uses."""
    prefill, decode = _phase_segments(intervals)
    return sum(b - a for a, b in prefill), sum(b - a for a, b in decode)


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
    phases: tuple[float, float] | None = None,
    region: str | carbon.GridIntensity | None = None,
    phase_durations_s: tuple[float, float] | None = None,
) -> EnergySummary:
    """Turn one window's reading into the record's energy figures (see the module doc)."""
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
        "details": dict(reading.details),
        "formula": _str_or_none(reading.details.get("formula")),
    }
    gross_j = reading.total_j
    if reading.method == "missing" or gross_j is None:
        return EnergySummary(
            method="missing",
            error=reading.error or "energy not measured",
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

    gross = _per_unit(gross_j, input_tokens, output_tokens, requests)
    net = _per_unit(net_j, input_tokens, output_tokens, requests)
    chosen = net if basis == "net" else gross

    prefill_j = decode_j = prefill_net_j = decode_net_j = None
    if phases is not None:
        prefill_j, decode_j = phases
        if idle_w is not None and phase_durations_s is not None:
            prefill_net_j = max(prefill_j - idle_w * phase_durations_s[0], 0.0)
            decode_net_j = max(decode_j - idle_w * phase_durations_s[1], 0.0)

    return EnergySummary(
        method=reading.method,
        basis=basis,
        duration_s=duration_s,
        gross_energy_j=gross_j,
        idle_power_w=idle_w,
        idle_method=idle_method,
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
        prefill_energy_j=prefill_j,
        decode_energy_j=decode_j,
        prefill_net_energy_j=prefill_net_j,
        decode_net_energy_j=decode_net_j,
        co2e_g=carbon.co2e_g(gross_j, grid),
        co2e_net_g=None if net_j is None else carbon.co2e_g(net_j, grid),
        notes=notes,
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
    return idle.power_w, idle.method, "net"


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)
