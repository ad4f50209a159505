"""Prefill vs decode energy of one window, and how it was obtained.

A request's *prefill* runs from its start to its first token, its *decode* from the first token
to its end. How a window's energy is split between them depends on the sensor's resolution
(the poll interval, or the counter's own update period when that is longer), and the record
says which way was used (``phase_method``, ``phase_attribution``, a note):

* ``integrated`` — the typical prefill and decode spans are at least ``RESOLVED_FACTOR`` ×
  the resolution: the power series is integrated over each phase's spans.
* ``apportioned`` — shorter phases: the power series cannot see them, so the window's energy
  (exact: a counter difference) is split by a model. Best available: a least-squares fit of
  one power per phase over the sensor's intervals,

      ΔE_k = P_prefill·a_k + P_decode·b_k + P_other·c_k

  with a_k, b_k, c_k the seconds of prefill, decode and neither inside interval k. A counter
  that advances in steps (NVML, every ~100 ms) is read some time after it last changed; that
  lag is fitted too (grid search over one update period). The fitted powers times the phase
  durations, scaled so the parts add up to the measured window energy, are the phase figures.
  When there are too few intervals or prefill and decode always come in the same proportion
  (nothing to fit), the fallback is ``time-weighted``: the power series integrated over the
  spans, i.e. each sample's energy shared by time — and labelled as such.

Overlapping requests (batches) are not double counted: each phase is the union of its spans,
and time that is prefill for one request and decode for another counts as prefill.
"""

from __future__ import annotations

import bisect
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from e3bench.core.api import EnergyReading, PowerSample

Interval = tuple[float, float, float]  # (t_start_s, t_first_token_s, t_end_s)
Segments = list[tuple[float, float]]

#: phases at least this many sensor periods long are resolved by the power series
RESOLVED_FACTOR = 10.0
#: a fit needs this many sensor intervals per fitted power
MIN_OBS_PER_PARAM = 3
#: prefill and decode columns whose normalised condition number exceeds this cannot be separated
MAX_CONDITION = 50.0
#: ... and the prefill share of busy time must vary by this much between intervals
MIN_MIX_SPREAD = 0.02
#: ... and their standard errors must be within this fraction of the larger fitted power
MAX_REL_SE = 0.15
#: a fit explaining less of the interval-to-interval variation than this is not used
MIN_R2 = 0.5
#: offsets tried for the update grid of a stepped counter (per update period)
LAG_STEPS = 20
PhaseMethod = Literal["integrated", "apportioned"]


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


# ------------------------------------------------------------------------- segments
def _union(segments: Segments) -> Segments:
    out: Segments = []
    for a, b in sorted(s for s in segments if s[1] > s[0]):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _subtract(segments: Segments, holes: Segments) -> Segments:
    out: Segments = []
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


def phase_segments(intervals: Sequence[Interval]) -> tuple[Segments, Segments]:
    """(prefill spans, decode spans), each a sorted union; raises ValueError unless every
    interval has t_start <= t_first_token <= t_end."""
    for start, first, end in intervals:
        if not start <= first <= end:
            raise ValueError(f"need t_start <= t_first_token <= t_end, got {(start, first, end)}")
    prefill = _union([(s, f) for s, f, _ in intervals])
    decode = _subtract(_union([(f, e) for _, f, e in intervals]), prefill)
    return prefill, decode


def attribute_phases(
    samples: Sequence[PowerSample], intervals: Sequence[Interval], domain: str = "total"
) -> tuple[float, float]:
    """(prefill_j, decode_j): the power series integrated over each phase's spans."""
    prefill, decode = phase_segments(intervals)
    prefill_j = sum(integrate_power(samples, a, b, domain) for a, b in prefill)
    decode_j = sum(integrate_power(samples, a, b, domain) for a, b in decode)
    return prefill_j, decode_j


def phase_durations(intervals: Sequence[Interval]) -> tuple[float, float]:
    """(prefill_s, decode_s) covered by the same spans that :func:`attribute_phases` uses."""
    prefill, decode = phase_segments(intervals)
    return sum(b - a for a, b in prefill), sum(b - a for a, b in decode)


# --------------------------------------------------------------------------- split
@dataclass(frozen=True)
class PhaseSplit:
    """The window's prefill/decode energy (J) and durations (s), how they were obtained
    (``method``; ``attribution`` one line; ``note`` for the record when apportioned) and, for a
    fit, the fitted mean powers (W)."""

    prefill_j: float
    decode_j: float
    prefill_s: float
    decode_s: float
    method: PhaseMethod
    attribution: str
    note: str | None = None
    prefill_power_w: float | None = None
    decode_power_w: float | None = None


def sensor_resolution_s(reading: EnergyReading) -> float:
    """Seconds the sensor needs to see a change: the longer of the median spacing of its reads
    and the update period it declares (``details["sensor_update_period_s"]``)."""
    ts = [t for t, _ in reading.cumulative_j] or sorted({s.t_s for s in reading.samples})
    gaps = [b - a for a, b in zip(ts, ts[1:], strict=False) if b > a]
    spacing = statistics.median(gaps) if gaps else float(reading.details.get("sample_interval_s") or 0.0)  # type: ignore[arg-type]
    declared = reading.details.get("sensor_update_period_s")
    return max(spacing, float(declared) if isinstance(declared, (int, float)) else 0.0)


def split_phases(reading: EnergyReading, intervals: Sequence[Interval]) -> PhaseSplit | None:
    """Prefill/decode energy of ``reading`` for requests ``intervals`` (see the module doc);
    None when the reading has neither a power series nor counter reads, or is missing."""
    if reading.method == "missing" or reading.total_j is None or not intervals:
        return None
    if not reading.samples and len(reading.cumulative_j) < 2:
        return None
    prefill, decode = phase_segments(intervals)
    pre_s, dec_s = sum(b - a for a, b in prefill), sum(b - a for a, b in decode)
    res = sensor_resolution_s(reading)
    spans = [f - s for s, f, _ in intervals] + [e - f for _, f, e in intervals if e > f]
    pre_med = statistics.median([f - s for s, f, _ in intervals])
    dec_lens = [e - f for _, f, e in intervals if e > f]
    dec_med = statistics.median(dec_lens) if dec_lens else None
    shortest = min(x for x in (pre_med, dec_med) if x is not None) if spans else 0.0
    if reading.samples and shortest >= RESOLVED_FACTOR * res:
        pre_j, dec_j = attribute_phases(reading.samples, intervals)
        return PhaseSplit(
            pre_j, dec_j, pre_s, dec_s, "integrated",
            f"power series integrated over each phase's spans (median prefill {pre_med * 1e3:.0f} ms, "
            f"decode {(dec_med or 0) * 1e3:.0f} ms >= {RESOLVED_FACTOR:g} × the sensor's {res * 1e3:.0f} ms)",
        )  # fmt: skip
    why = (
        f"phases (median prefill {pre_med * 1e3:.0f} ms"
        + (f", decode {dec_med * 1e3:.0f} ms" if dec_med is not None else "")
        + f") are shorter than {RESOLVED_FACTOR:g} × the sensor's ~{res * 1e3:.0f} ms resolution"
    )
    fit = _fit(reading, prefill, decode)
    if fit is not None:
        p_pre, p_dec, p_oth, n_obs, r2, lag_s, other_s = fit
        parts = p_pre * pre_s + p_dec * dec_s + p_oth * other_s
        scale = reading.total_j / parts if parts > 0 else 1.0
        lag = f", counter update grid offset {lag_s * 1e3:.0f} ms" if lag_s is not None else ""
        how = (
            f"least-squares power per phase over {n_obs} sensor intervals: prefill {p_pre:.3g} W, "
            f"decode {p_dec:.3g} W, other {p_oth:.3g} W (R² {r2:.3f}{lag}); scaled ×{scale:.3f} to the window total"
        )
        return PhaseSplit(
            p_pre * pre_s * scale, p_dec * dec_s * scale, pre_s, dec_s, "apportioned", how,
            f"prefill/decode energy is apportioned, not measured: {why}; {how}",
            p_pre * scale, p_dec * scale,
        )  # fmt: skip
    if not reading.samples:
        return None
    pre_j, dec_j = attribute_phases(reading.samples, intervals)
    how = "time-weighted: the power series integrated over each phase's spans (too few intervals or no contrast to fit)"
    return PhaseSplit(
        pre_j, dec_j, pre_s, dec_s, "apportioned", how,
        f"prefill/decode energy is apportioned, not measured: {why}; {how}; treat the split as rough",
    )  # fmt: skip


# ----------------------------------------------------------------------------- fit
def _time_in(segments: Segments, xs):  # noqa: ANN001, ANN202 - numpy arrays
    """Seconds of ``segments`` (sorted, disjoint) before each x of the array ``xs``."""
    import numpy as np

    if not segments:
        return np.zeros_like(xs)
    a = np.array([s for s, _ in segments])
    b = np.array([e for _, e in segments])
    before = np.concatenate([[0.0], np.cumsum(b - a)[:-1]])
    i = np.searchsorted(a, xs, side="right") - 1
    inside = np.clip(xs - a[np.maximum(i, 0)], 0.0, (b - a)[np.maximum(i, 0)])
    return np.where(i < 0, 0.0, before[np.maximum(i, 0)] + inside)


def _nnls(x, y):  # noqa: ANN001, ANN202
    """Non-negative least squares for a few columns, by trying every support set."""
    import numpy as np

    n = x.shape[1]
    best, best_ss = np.zeros(n), float((y**2).sum())
    for mask in range(1, 2**n):
        cols = [j for j in range(n) if mask >> j & 1]
        coef = np.linalg.lstsq(x[:, cols], y, rcond=None)[0]
        if (coef < 0).any():
            continue
        full = np.zeros(n)
        full[cols] = coef
        ss = float(((x @ full - y) ** 2).sum())
        if ss < best_ss - 1e-15:
            best, best_ss = full, ss
    return best, best_ss


def _fit(reading: EnergyReading, prefill: Segments, decode: Segments):  # noqa: ANN202
    """(P_prefill, P_decode, P_other, observations, R², counter grid offset_s or None, seconds of
    the window in neither phase) or None when the fit is not possible or not identifiable.

    For a counter that advances every ``counter_update_period_s`` (P), a read at t reports the
    energy up to the last update g + ⌊(t − g)/P⌋·P; the grid offset g is fitted (smallest
    residual; a coarse then a fine search), so every observation spans the counter's own
    intervals.
    """
    import numpy as np

    cum = sorted(reading.cumulative_j)
    if len(cum) < 2:
        return None
    t = np.array([c[0] for c in cum])
    e = np.array([c[1] for c in cum])
    period = reading.details.get("counter_update_period_s")
    stepped = isinstance(period, (int, float)) and period > 0

    def at(g: float):  # noqa: ANN202
        u, y, penalty = t, np.diff(e), 0.0
        if stepped:
            grid = g + np.floor((t - g) / period) * period
            first = np.concatenate([[True], np.diff(grid) > 0])
            # reads within one counter interval must agree; disagreement says g is wrong
            head = np.maximum.accumulate(np.where(first, np.arange(len(e)), 0))
            penalty = float(((e - e[head]) ** 2).sum())
            u, y = grid[first], np.diff(e[first])
        if len(u) < 2:
            return None
        pre = np.diff(_time_in(prefill, u))
        dec = np.diff(_time_in(decode, u))
        oth = np.diff(u) - pre - dec
        x = np.stack([pre, dec] + ([oth] if oth.sum() > 0.02 * (u[-1] - u[0]) else []), axis=1)
        if len(y) < MIN_OBS_PER_PARAM * x.shape[1] or not _separable(x[:, :2]):
            return None
        coef, ss = _nnls(x, y)
        return ss + penalty, g, coef, ss, y, x

    if stepped:
        step = float(period) / LAG_STEPS
        coarse = [f for f in (at(g) for g in _grid_candidates(t, float(period), step)) if f is not None]
        if not coarse:
            return None
        g0 = min(coarse, key=lambda f: f[0])[1]
        fits = coarse + [f for f in (at(g0 + d) for d in np.linspace(-step / 2, step / 2, 11)) if f is not None]
    else:
        fits = [f for f in (at(0.0),) if f is not None]
    if not fits:
        return None
    _, g, coef, ss, y, x = min(fits, key=lambda f: f[0])
    sst = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - ss / sst if sst > 0 else 1.0
    if r2 < MIN_R2 or not _precise(x, y, coef, ss):
        return None
    other_s = reading.duration_s - sum(b - a for a, b in prefill) - sum(b - a for a, b in decode)
    p_other = float(coef[2]) if x.shape[1] == 3 else (reading.total_j or 0.0) / max(reading.duration_s, 1e-12)
    return float(coef[0]), float(coef[1]), p_other, len(y), r2, (float(g) % period if stepped else None), max(other_s, 0.0)


def _grid_candidates(t, period: float, step: float):  # noqa: ANN001, ANN202
    """Offsets of a stepped counter's update grid worth trying: every ``step`` over one period,
    plus just before and just after each cluster of read phases (reads taken a fraction of a
    millisecond after the counter updates are common: the residual is sharpest there)."""
    import numpy as np

    phase = np.mod(t, period)
    bins = np.floor(phase / (step / 10))
    edges = []
    for b in np.unique(bins)[:400]:
        members = phase[bins == b]
        edges += [members.min() - 1e-4, members.max() + 1e-4]
    return np.concatenate([np.arange(LAG_STEPS) * step, np.mod(edges, period)])


def _precise(x, y, coef, ss: float) -> bool:  # noqa: ANN001
    """The fitted prefill and decode powers have standard errors within ``MAX_REL_SE`` of the
    larger of the two (ordinary least-squares errors from the residual variance)."""
    import numpy as np

    dof = len(y) - x.shape[1]
    if dof <= 0:
        return False
    try:
        cov = ss / dof * np.linalg.inv(x.T @ x)
    except np.linalg.LinAlgError:
        return False
    se = np.sqrt(np.clip(np.diag(cov)[:2], 0.0, None))
    scale = max(float(coef[0]), float(coef[1]), 1e-12)
    return bool((se <= MAX_REL_SE * scale).all())


def _separable(x) -> bool:  # noqa: ANN001
    """Prefill and decode seconds vary independently enough across intervals to fit both: the
    prefill share of the busy time differs between intervals (interquartile range of at
    least ``MIN_MIX_SPREAD``) and the two columns are not near-collinear."""
    import numpy as np

    busy = x.sum(axis=1)
    share = x[busy > 0, 0] / busy[busy > 0]
    if len(share) < 4:
        return False
    q1, q3 = np.percentile(share, [25, 75])
    norms = np.linalg.norm(x, axis=0)
    if q3 - q1 < MIN_MIX_SPREAD or (norms <= 0).any():
        return False
    s = np.linalg.svd(x / norms, compute_uv=False)
    return bool(s[-1] > 0 and s[0] / s[-1] <= MAX_CONDITION)
