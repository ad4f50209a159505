"""Comparing configurations of the suite with the baseline at equal training tokens."""

from __future__ import annotations

import math
from typing import Any

from e3bench.train.records import ConfigResult, CurvePoint, SuiteRecord


def interp(curve: list[CurvePoint], tokens: float) -> float | None:
    """The curve's loss at ``tokens`` by linear interpolation between its finite points; None
    outside the curve's token range."""
    pts = [(p.tokens, p.loss) for p in curve if math.isfinite(p.loss)]
    if not pts or tokens > pts[-1][0] or tokens < pts[0][0]:
        return None
    for (t0, l0), (t1, l1) in zip(pts, pts[1:], strict=False):
        if t0 <= tokens <= t1:
            return l0 if t1 == t0 else l0 + (l1 - l0) * (tokens - t0) / (t1 - t0)
    return pts[-1][1]


def tokens_to_loss(curve: list[CurvePoint], target: float) -> float | None:
    """Tokens at which the curve first reaches ``target`` (interpolated); None if never."""
    pts = [(p.tokens, p.loss) for p in curve if math.isfinite(p.loss)]
    for (t0, l0), (t1, l1) in zip(pts, pts[1:], strict=False):
        if l1 <= target:
            if l0 <= target:
                return float(t0)
            return t0 + (t1 - t0) * (l0 - target) / (l0 - l1)
    return None


def _ratio(a, b) -> float | None:
    if a is None or b is None or not b:
        return None
    return a / b


def compare(base: ConfigResult, res: ConfigResult) -> dict[str, Any]:
    """Figures of ``res`` relative to the baseline ``base`` (see :class:`ConfigResult`):
    validation loss at equal tokens, tokens and time to the baseline's final loss, and ratios
    of tokens/s, optimizer state, peak device memory and energy per token."""
    out: dict[str, Any] = {"baseline": base.name}
    if not base.val_loss_curve or not res.val_loss_curve:
        return out
    common_tokens = min(base.val_loss_curve[-1].tokens, res.val_loss_curve[-1].tokens)
    lb, lc = interp(base.val_loss_curve, common_tokens), interp(res.val_loss_curve, common_tokens)
    out["equal_tokens"] = common_tokens
    out["val_loss_at_equal_tokens"] = lc
    out["baseline_val_loss_at_equal_tokens"] = lb
    out["delta_val_loss_at_equal_tokens"] = None if lb is None or lc is None else lc - lb
    out["per_eval_delta"] = [
        (p.tokens, None if (x := interp(res.val_loss_curve, p.tokens)) is None else x - p.loss)
        for p in base.val_loss_curve
    ]
    target = base.final_val_loss
    needed = tokens_to_loss(res.val_loss_curve, target) if target is not None else None
    out["tokens_to_baseline_final_loss"] = needed
    out["token_efficiency"] = _ratio(base.tokens, needed) if needed else None
    out["tokens_per_s_ratio"] = _ratio(res.tokens_per_s, base.tokens_per_s)
    out["tokens_per_s_median_step_ratio"] = _ratio(res.tokens_per_s_median_step, base.tokens_per_s_median_step)
    if needed and res.tokens_per_s:
        out["time_to_baseline_final_loss_s"] = needed / res.tokens_per_s
        out["time_efficiency"] = _ratio(base.train_time_s, out["time_to_baseline_final_loss_s"])
    out["optimizer_state_ratio"] = _ratio(res.optimizer_state_bytes, base.optimizer_state_bytes)
    if res.memory and base.memory:
        out["peak_rss_delta_bytes"] = (res.memory.peak_rss_bytes - res.memory.rss_start_bytes) - (
            base.memory.peak_rss_bytes - base.memory.rss_start_bytes
        )
        if res.memory.peak_device_memory_bytes and base.memory.peak_device_memory_bytes:
            out["peak_device_memory_ratio"] = _ratio(
                res.memory.peak_device_memory_bytes, base.memory.peak_device_memory_bytes
            )
    if res.train_energy and base.train_energy:
        out["j_per_token_ratio"] = _ratio(res.train_energy.ept_total_j_per_token, base.train_energy.ept_total_j_per_token)
    return out


def attach_comparisons(record: SuiteRecord, base_name: str) -> None:
    """Set ``vs_baseline`` of every configuration that ran, when the baseline ran ``ok``."""
    base = next((c for c in record.configs if c.name == base_name), None)
    for c in record.configs:
        if base is None or c is base or base.status != "ok" or c.status in ("skipped", "failed"):
            continue
        c.vs_baseline = compare(base, c)
