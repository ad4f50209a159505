"""Machine-readable performance claims of suite configurations, and their verdicts.

A configuration's TOML names what it is expected to do, under ``[claims]``, one line per
metric (:data:`METRICS`; an unknown name fails when the file is loaded)::

    [claims]
    optimizer_state_bytes = "-86% ±10"      # ratio metric: % change against the baseline
    val_loss_at_equal_tokens = "+0.00 ±0.05"  # delta metric: difference, in the metric's unit
    token_efficiency = "+15%..+20%"          # a range
    tokens_per_s = "< 0%"                    # one-sided: fewer tokens/s
    gpu_utilization = ">= 90"                # absolute metric: this configuration's own value

Forms: ``C ±T`` (range C−T..C+T), ``A..B``, ``< X`` / ``<= X`` / ``> X`` / ``>= X``. Ratio
metrics are written in % (change against the baseline), delta metrics without %, absolute
metrics in their unit (% optional where the unit is %).

**Reference.** Ratio and delta claims compare with the suite's baseline, or with the
configuration named after ``vs`` (``backward_time_ms = "< 0% vs mtp_only"``): the run that
differs from this one only by the technique the claim is about. A reference that was not run
leaves the claim INCONCLUSIVE, saying which file to add.

**Measured value and uncertainty.** With ``--seeds N`` every configuration runs once per seed
(configurations interleaved seed by seed), each run is compared with the baseline run of the
same round, and the value is the mean over seeds ± the 95% Student-t half-width of the mean.
With one seed the uncertainty is the metric's one-run noise (:attr:`Metric.noise`): 0 for
bytes measured from tensors; an assumed 0.02 nats for a loss difference and 10 points for token
efficiency (run-to-run noise of one seed on the default model; ``--seeds 3`` measures it);
for the share of steps in the gradient-norm band, its 95% Wilson interval over the steps;
for times, the 95% CIs of both step-time means combined, at least 5%.

**Machine load.** Time and energy metrics are compared only between runs whose load from other
processes (cores busy outside this process, recorded per run) differs by at most
:data:`MAX_LOAD_DIFFERENCE` cores; without such a pair the verdict is INCONCLUSIVE.

**Verdict** (:func:`verdict`): INCONCLUSIVE when the claim asserts an effect (its range
excludes 0) but the measured interval includes 0 — the difference is within run-to-run noise —
or when the value was not measured; INCONCLUSIVE too when a one-sided claim (``>= 90``,
``< 5``) holds for the measured value but not for its whole interval; SUPPORTED when the
measured value lies in the claimed range; NOT SUPPORTED when the whole measured interval lies outside it; else INCONCLUSIVE.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from e3bench.core.errors import E3Error, unknown_name

MAX_LOAD_DIFFERENCE = 0.5  # cores
SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "SUPPORTED", "NOT SUPPORTED", "INCONCLUSIVE"


def _bytes_per_param(c) -> float | None:
    return None if not c.optimizer_state_bytes or not c.parameters else c.optimizer_state_bytes / c.parameters


def _mem(key: str) -> Callable[[Any], float | None]:
    return lambda c: (c.memory_breakdown or {}).get(key)


def _band_share(c) -> float | None:
    b = c.grad_norm_band or {}
    return None if b.get("share_in_band") is None else 100 * b["share_in_band"]


@dataclass(frozen=True)
class Metric:
    """A claimable metric: ``mode`` ratio (% change vs the baseline), delta (difference vs the
    baseline) or absolute (own value); ``value(ConfigResult)`` its raw value (ratio/absolute);
    ``noise`` the kind of one-run uncertainty; ``needs`` the feature a claim on it requires."""

    description: str
    unit: str
    mode: str
    value: Callable[[Any], float | None] | None
    noise: str = "exact"
    needs: str | None = None
    timed: bool = False


METRICS: dict[str, Metric] = {
    "optimizer_state_bytes": Metric("bytes of every optimizer-state tensor after the last step", "%", "ratio",
                                    lambda c: c.optimizer_state_bytes),
    "optimizer_state_bytes_per_param": Metric("optimizer-state bytes ÷ trainable parameters (fair across "
                                              "models with extra heads)", "%", "ratio", _bytes_per_param),
    "training_memory_bytes": Metric("weights + gradients + optimizer state + activations at peak (memory "
                                    "breakdown)", "%", "ratio", _mem("total_bytes"), noise="memory"),
    "activation_bytes": Metric("activation memory at peak (memory breakdown)", "%", "ratio",
                               _mem("activations_bytes"), noise="memory"),
    "val_loss_at_equal_tokens": Metric("validation loss minus the baseline's at equal tokens", "nats", "delta",
                                       None, noise="loss"),
    "token_efficiency": Metric("baseline tokens ÷ tokens this config needs to reach the baseline's final "
                               "validation loss", "%", "ratio", None, noise="efficiency"),
    "tokens_per_s": Metric("tokens per step ÷ median step time", "%", "ratio",
                           lambda c: c.tokens_per_s_median_step, noise="time", timed=True),
    "backward_time_ms": Metric("median backward-pass time per step", "%", "ratio",
                               lambda c: None if c.backward_time_ms is None else c.backward_time_ms.p50,
                               noise="time", timed=True),
    "energy_per_token": Metric("training energy per token (J/token, the energy basis of the run)", "%", "ratio",
                               lambda c: None if c.train_energy is None else c.train_energy.ept_total_j_per_token,
                               noise="time", timed=True),
    "token_sparsity": Metric("share of tokens Collider dropped (mean over steps)", "%", "absolute",
                             lambda c: None if not c.collider or c.collider.get("token_sparsity") is None
                             else 100 * c.collider["token_sparsity"], noise="count", needs="collider"),
    "gpu_utilization": Metric("mean NVML GPU utilization while training (CUDA only)", "%", "absolute",
                              lambda c: (c.gpu_utilization or {}).get("mean"), noise="count"),
    "grad_norm_in_band": Metric("share of steps whose gradient norm lies in train.grad_norm_band", "%",
                                "absolute", _band_share, noise="share"),
    "grad_norm_spikes": Metric("gradient-norm spikes (> train.spike_factor × the recent median)", "count",
                               "absolute", lambda c: None if c.grad_norm is None else len(c.grad_norm.spikes),
                               noise="count"),
}  # fmt: skip

_NUM = r"([+-]?\d+(?:\.\d+)?)"
_PLUSMINUS = re.compile(rf"^{_NUM}\s*(%?)\s*(?:±|\+-|\+/-)\s*(\d+(?:\.\d+)?)\s*(%?)$")
_RANGE = re.compile(rf"^{_NUM}\s*(%?)\s*\.\.\s*{_NUM}\s*(%?)$")
_SIDED = re.compile(rf"^(<=|>=|<|>)\s*{_NUM}\s*(%?)$")
_VS = re.compile(r"^(.*?)\s+vs\s+([A-Za-z0-9_.-]+)$")


@dataclass(frozen=True)
class Claim:
    """A parsed claim: ``lo``..``hi`` in the metric's measured unit (% change for ratio
    metrics), the text as written and the direction it asserts."""

    metric: str
    text: str
    lo: float
    hi: float
    strict: bool = False  # "<" / ">": the bound itself is excluded
    ref: str | None = None  # "vs NAME": the configuration compared with (None: the baseline)

    def asserts_effect(self) -> bool:
        """True when the claim excludes "no difference" (0) — for ratio and delta metrics."""
        if METRICS[self.metric].mode == "absolute":
            return False
        return not (self.lo <= 0 <= self.hi) or (self.strict and 0 in (self.lo, self.hi))

    @property
    def direction(self) -> str:
        """lower / higher (than the baseline), same (range around 0), or within (absolute)."""
        if METRICS[self.metric].mode == "absolute":
            return "within"
        return "lower" if self.hi <= 0 else "higher" if self.lo >= 0 else "same"


def parse_claim(metric: str, text: str) -> Claim:
    """Parse one ``[claims]`` line; :class:`E3Error` naming the key for an unknown metric or a
    value that is not one of the forms (or uses % where the metric's mode forbids it)."""
    if metric not in METRICS:
        err = unknown_name("claim metric", metric, METRICS, fix=f"valid metrics: {', '.join(METRICS)}")
        raise E3Error(f"claims.{metric}: {err.problem}", err.fix)
    m = METRICS[metric]
    if not isinstance(text, str):
        raise E3Error(f"claims.{metric} must be a string such as \"-20% ±5\"", "quote the value")
    s = text.strip()
    strict = False
    fix = 'write "C ±T", "A..B", "< X" or ">= X"' + (" with % (change against the baseline)"
                                                     if m.mode == "ratio" else "")  # fmt: skip
    ref = None
    if mt := _VS.match(s):
        s, ref = mt[1].strip(), mt[2]
        if m.mode == "absolute":
            raise E3Error(f"claims.{metric} = \"{text}\": {metric} is this configuration's own value, "
                          "compared with no other configuration", "drop the 'vs ...'")  # fmt: skip
    if mt := _PLUSMINUS.match(s):
        c, p1, t, p2 = float(mt[1]), mt[2], float(mt[3]), mt[4]
        lo, hi, pcts = c - t, c + t, [p1, p2]
    elif mt := _RANGE.match(s):
        lo, hi, pcts = float(mt[1]), float(mt[3]), [mt[2], mt[4]]
        lo, hi = min(lo, hi), max(lo, hi)
    elif mt := _SIDED.match(s):
        op, x, pcts = mt[1], float(mt[2]), [mt[3]]
        lo, hi = (-math.inf, x) if op.startswith("<") else (x, math.inf)
        strict = op in ("<", ">")
    else:
        raise E3Error(f"claims.{metric} = \"{text}\" is not a claim", fix)
    has_pct = any(pcts)
    if m.mode == "ratio" and not pcts[0]:
        raise E3Error(f"claims.{metric} = \"{text}\": {metric} is compared as a % change against the baseline", fix)
    if has_pct and m.unit != "%":
        raise E3Error(f"claims.{metric} = \"{text}\": {metric} is in {m.unit}, not %", "drop the %")
    return Claim(metric, text.strip(), lo, hi, strict, ref)


def verdict(claim: Claim, measured: float | None, u: float | None) -> tuple[str, str]:
    """(verdict, why) for ``measured`` ± ``u`` against ``claim`` (see the module docstring)."""
    if measured is None or u is None or not math.isfinite(measured):
        return INCONCLUSIVE, "not measured"
    lo_i, hi_i = measured - u, measured + u
    if claim.asserts_effect() and u > 0 and lo_i <= 0 <= hi_i:  # an exact 0 (u = 0) is no effect, not noise
        return INCONCLUSIVE, "difference within run-to-run noise"
    inside = claim.lo < measured < claim.hi if claim.strict else claim.lo <= measured <= claim.hi
    if inside and u > 0 and ((math.isinf(claim.hi) and lo_i < claim.lo) or (math.isinf(claim.lo) and hi_i > claim.hi)):
        # a one-sided claim (">= 90") holds only when the whole measured interval is past its bound
        return INCONCLUSIVE, "measured value past the bound, but its interval reaches across it"
    if inside:
        return SUPPORTED, "measured value in the claimed range"
    if hi_i < claim.lo or lo_i > claim.hi:
        return NOT_SUPPORTED, "measured interval outside the claimed range"
    return INCONCLUSIVE, "outside the claimed range, but within noise of it"


def missing_references(specs) -> list[str]:
    """One line per claim of ``specs`` (suite configurations) whose ``vs`` reference is not among
    them: said before training, since the claim will be INCONCLUSIVE."""
    names = {s.name for s in specs}
    out = []
    for s in specs:
        for metric, text in s.claims.items():
            ref = parse_claim(metric, text).ref
            if ref and ref not in names:
                out.append(f"claim {s.name}: {metric} = \"{text}\" compares with '{ref}', which is not in this "
                           f"suite: it will be INCONCLUSIVE (add {ref}'s TOML file to judge it)")
    return out


def _raw(metric: str, c, base, compare: Callable[[Any, Any], dict]) -> float | None:
    """The measured value of one run (``base``: the baseline run of the same round)."""
    m = METRICS[metric]
    if metric in ("val_loss_at_equal_tokens", "token_efficiency"):
        v = compare(base, c)
        if metric == "token_efficiency":
            eff = v.get("token_efficiency")
            return None if eff is None else 100 * (eff - 1)
        return v.get("delta_val_loss_at_equal_tokens")
    own = m.value(c) if m.value else None
    if m.mode == "absolute" or own is None:
        return own
    ref = m.value(base) if m.value else None
    return None if not ref else 100 * (own / ref - 1)


def _one_run_noise(metric: str, c, base) -> float:
    kind = METRICS[metric].noise
    if kind == "loss":
        return 0.02
    if kind == "efficiency":
        return 10.0
    if kind == "share":  # a share of n steps: the distance to the 95 % Wilson bound farther from it
        from e3bench.core.timing import wilson_interval

        b = c.grad_norm_band or {}
        share, n = b.get("share_in_band"), b.get("steps") or 0
        if share is None or n < 1:
            return 0.0
        low, high = wilson_interval(share, n)
        return 100 * max(share - low, high - share)
    if kind == "memory":
        return 2.0 if (c.memory_breakdown or {}).get("device", "cpu").startswith("cuda") else 10.0
    if kind == "time":
        rel = []
        for r in (c, base):
            st = r.step_time_ms
            if st is None or st.ci95_low is None or not st.mean:
                return 5.0
            rel.append((st.ci95_high - st.ci95_low) / 2 / st.mean)
        return max(5.0, 100 * math.hypot(*rel))
    return 0.0


def _load(c) -> float | None:
    return (c.load or {}).get("other_cores")


def judge(configs: list, base_name: str, compare: Callable[[Any, Any], dict]) -> list[dict[str, Any]]:
    """One row per claim of every configuration in ``configs`` (all runs, every seed): claim,
    measured value ± uncertainty over seeds, seeds used, verdict and why. ``compare(base, run)``
    gives the equal-tokens figures (:func:`e3bench.train.suite.compare.compare`)."""
    from e3bench.core.timing import t_critical_95

    by_name: dict[str, list] = {}
    for c in configs:
        by_name.setdefault(c.name, []).append(c)
    rows = []
    for name, runs in by_name.items():
        claims = (runs[0].spec or {}).get("claims") or {}
        for metric, text in claims.items():
            claim = parse_claim(metric, text)
            m = METRICS[metric]
            ref = claim.ref or base_name
            base_runs = by_name.get(ref, [])  # round j of a config is paired with round j of its reference
            row: dict[str, Any] = {"config": name, "metric": metric, "claim": claim.text, "direction": claim.direction,
                                   "unit": m.unit, "mode": m.mode, "reference": ref}  # fmt: skip
            values, noise, notes, upper = [], [], [], []
            if m.mode != "absolute" and not base_runs:
                notes.append(f"reference configuration '{ref}' was not run in this suite (add its TOML file)")
            for j, r in enumerate(runs):
                if r.status != "ok":
                    notes.append(f"seed {r.seed}: {r.status}")
                    continue
                base = base_runs[j] if j < len(base_runs) and base_runs[j].status == "ok" else None
                if m.mode != "absolute" and (base is None or name == ref):
                    if name == ref:
                        notes.append("the configuration is its own reference")
                    elif base_runs:
                        notes.append(f"no ok run of '{ref}' for seed {r.seed}")
                    continue
                if m.timed and m.mode != "absolute":
                    lc, lb = _load(r), _load(base)
                    if lc is not None and lb is not None and abs(lc - lb) > MAX_LOAD_DIFFERENCE:
                        notes.append(f"seed {r.seed}: machine load differed ({lc:.1f} vs {lb:.1f} other cores busy)")
                        continue
                v = _raw(metric, r, base, compare)
                if v is None and metric == "token_efficiency" and r.val_loss_curve and base.tokens and r.tokens:
                    upper.append(100 * (base.tokens / r.tokens - 1))  # never reached: efficiency below this
                    continue
                if v is None:
                    continue
                values.append(v)
                noise.append(_one_run_noise(metric, r, base))
            if not values:
                meas = u = None
            elif len(values) == 1:
                meas, u = values[0], noise[0]
            else:
                meas = statistics.fmean(values)
                u = t_critical_95(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
                u = max(u, 0.0 if m.noise in ("exact", "count", "share") else 1e-12)
            v_, why = verdict(claim, meas, u)
            if meas is None and upper:
                meas, u = max(upper), _one_run_noise(metric, runs[0], runs[0])
                v_ = NOT_SUPPORTED if meas + u < claim.lo else INCONCLUSIVE
                why = (f"never reached {ref}'s final validation loss within its budget: efficiency "
                       f"below {meas:+.0f} %")  # fmt: skip
                row["bound"] = "upper"  # measured is an upper bound, over len(upper) runs
                values = upper
            if meas is None and not notes and m.value is not None and metric == "gpu_utilization":
                notes.append("NVML utilization is sampled on CUDA only")
            row.update(measured=meas, uncertainty=u, seeds=len(values), verdict=v_,
                       why="; ".join([why, *dict.fromkeys(notes)]))  # fmt: skip
            rows.append(row)
    return rows
