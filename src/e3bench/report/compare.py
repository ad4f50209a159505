"""Comparisons the user actually asks for, computed from stored records only:

* one summary row per configuration (model × backend × precision × device),
* quantized variants against their full-precision reference (quality retained %, speed-up,
  energy saved; MLPerf's rule of thumb: a variant is "quality-ok" at ≥ 99% of the reference),
* Pareto fronts (maximise accuracy, minimise J/token or latency).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from e3bench.results.labels import distinct_labels
from e3bench.results.schema import ResultRecord

PRIMARY_METRICS = ("acc_norm", "acc", "exact_match_flexible", "exact_match", "f1")
REFERENCE_ORDER = ("fp32", "bf16", "fp16")
MLPERF_QUALITY_TARGET = 0.99


@dataclass
class ConfigSummary:
    """One configuration (model × backend × dtype × device) as its latest successful record
    shows it.

    ``*_at_min_batch`` figures come from the smallest batch size the run measured,
    ``min_batch_size`` (which is 1 only when batch 1 was measured: every label that shows them
    says the batch, see :func:`batch_label`). ``*_by_batch``: batch size → value, for
    comparisons at a batch size two configurations share. ``task_scores``: task → (primary
    metric, value, standard error).
    """

    label: str
    model: str
    backend: str
    dtype: str
    device: str
    run_id: str
    min_batch_size: int | None = None
    decode_tokens_per_s_at_min_batch: float | None = None
    ttft_ms_at_min_batch: float | None = None
    tpot_ms_at_min_batch: float | None = None
    peak_rss_mib: float | None = None
    ept_total_j_per_token_at_min_batch: float | None = None
    energy_method: str | None = None
    throughput_by_batch: dict[int, float] = field(default_factory=dict)
    decode_tokens_per_s_by_batch: dict[int, float] = field(default_factory=dict)
    ept_total_j_per_token_by_batch: dict[int, float] = field(default_factory=dict)
    task_scores: dict[str, tuple[str, float, float | None]] = field(default_factory=dict)

    @property
    def accuracy(self) -> float | None:
        """Mean primary metric over the tasks (None without tasks)."""
        vals = [v for _, v, _ in self.task_scores.values()]
        return sum(vals) / len(vals) if vals else None


def primary_metric(metrics: dict[str, float]) -> str | None:
    """The first of :data:`PRIMARY_METRICS` present in ``metrics`` (None if none is)."""
    for m in PRIMARY_METRICS:
        if m in metrics:
            return m
    return None


def summarize_configs(records: Sequence[ResultRecord]) -> list[ConfigSummary]:
    """Latest successful record per configuration, each labelled by
    :func:`e3bench.results.labels.distinct_labels` (no two configurations share a label)."""
    latest: dict[str, ResultRecord] = {}
    for rec in records:
        if rec.status != "ok" or rec.efficiency is None:
            continue
        key = rec.config_hash
        if key not in latest or rec.created_utc > latest[key].created_utc:
            latest[key] = rec
    out = []
    recs = list(latest.values())
    labels = distinct_labels([r.config for r in recs], model_names=[r.model.name if r.model else None for r in recs])
    for rec, label in zip(recs, labels, strict=True):
        c = rec.config
        model = rec.model.name if rec.model else c["model"]
        s = ConfigSummary(
            label=label,
            model=model, backend=c["backend"], dtype=c["dtype"], device=c["device"], run_id=rec.run_id,
            peak_rss_mib=rec.efficiency.peak_rss_bytes / 2**20,
        )  # fmt: skip
        gens = sorted(rec.efficiency.generation, key=lambda g: g.batch_size)
        if gens:
            g = gens[0]
            s.min_batch_size = g.batch_size
            s.decode_tokens_per_s_at_min_batch = g.decode_tokens_per_s.mean if g.decode_tokens_per_s else None
            s.ttft_ms_at_min_batch = g.ttft_ms.mean if g.ttft_ms else None
            s.tpot_ms_at_min_batch = g.tpot_ms.mean if g.tpot_ms else None
            e = g.energy
            s.ept_total_j_per_token_at_min_batch = e.ept_total_j_per_token if e is not None else None
            s.energy_method = f"{e.method}: {e.sensor}" if e is not None else None
            s.throughput_by_batch = {x.batch_size: x.throughput_tokens_per_s for x in gens}
            s.decode_tokens_per_s_by_batch = {
                x.batch_size: x.decode_tokens_per_s.mean for x in gens if x.decode_tokens_per_s is not None}
            s.ept_total_j_per_token_by_batch = {
                x.batch_size: x.energy.ept_total_j_per_token for x in gens
                if x.energy is not None and x.energy.ept_total_j_per_token is not None}  # fmt: skip
        for t in rec.effectiveness:
            m = primary_metric(t.metrics)
            if m is not None:
                s.task_scores[t.task] = (m, t.metrics[m], t.stderr.get(m))
        out.append(s)
    return sorted(out, key=lambda s: (s.model, s.backend, s.device, _dtype_rank(s.dtype)))


def batch_label(configs: Sequence[ConfigSummary]) -> str:
    """What ``*_at_min_batch`` figures of ``configs`` were measured at, for titles and labels:
    ``"batch 4"`` when every configuration's smallest batch is 4, ``"smallest batch measured
    (1–8)"`` when they differ, ``"no batch measured"`` when none was."""
    sizes = sorted({c.min_batch_size for c in configs if c.min_batch_size is not None})
    if not sizes:
        return "no batch measured"
    if len(sizes) == 1:
        return f"batch {sizes[0]}"
    return f"smallest batch measured ({sizes[0]}–{sizes[-1]})"


def _dtype_rank(d: str) -> int:
    order = ("fp32", "bf16", "fp16", "int8", "int4")
    return order.index(d) if d in order else len(order)


@dataclass
class VariantComparison:
    """A reduced-precision variant against its reference (same model, backend, device):
    percentages are of the reference, ``speedup`` is decode tokens/s variant ÷ reference and
    ``energy_saved_pct`` compares J/token, both at ``batch_size``: the smallest batch size both
    measured (None when they share none: then neither figure is given)."""

    variant: str
    reference: str
    quality_retained_pct: float | None
    speedup: float | None
    energy_saved_pct: float | None
    quality_ok: bool | None  # ≥ 99% of the reference on every common task (None: no tasks)
    per_task_retained_pct: dict[str, float]
    batch_size: int | None = None


def compare_to_reference(configs: Sequence[ConfigSummary]) -> list[VariantComparison]:
    """Every non-reference member of each (model, backend, device) group against the group's
    reference, the first of :data:`REFERENCE_ORDER` present (groups without one are skipped)."""
    groups: dict[tuple[str, str, str], list[ConfigSummary]] = {}
    for c in configs:
        groups.setdefault((c.model, c.backend, c.device), []).append(c)
    out = []
    for members in groups.values():
        ref = next((m for d in REFERENCE_ORDER for m in members if m.dtype == d), None)
        if ref is None:
            continue
        for v in members:
            if v is ref:
                continue
            common = set(v.task_scores) & set(ref.task_scores)
            per_task = {
                t: 100 * v.task_scores[t][1] / ref.task_scores[t][1]
                for t in sorted(common)
                if ref.task_scores[t][1] > 0
            }
            retained = sum(per_task.values()) / len(per_task) if per_task else None
            common_bs = min(set(v.throughput_by_batch) & set(ref.throughput_by_batch), default=None)
            v_ept = v.ept_total_j_per_token_by_batch.get(common_bs)
            ref_ept = ref.ept_total_j_per_token_by_batch.get(common_bs)
            out.append(
                VariantComparison(
                    variant=v.label,
                    reference=ref.label,
                    quality_retained_pct=retained,
                    speedup=_ratio(v.decode_tokens_per_s_by_batch.get(common_bs),
                                   ref.decode_tokens_per_s_by_batch.get(common_bs)),  # fmt: skip
                    energy_saved_pct=100 * (1 - v_ept / ref_ept) if v_ept and ref_ept else None,
                    quality_ok=(all(p >= 100 * MLPERF_QUALITY_TARGET for p in per_task.values()) if per_task else None),
                    per_task_retained_pct=per_task,
                    batch_size=common_bs,
                )
            )
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def pareto_front(points: Sequence[tuple[Any, float, float]]) -> list[Any]:
    """Keys of points not dominated when minimising x (cost) and maximising y (quality)."""
    front = []
    for key, x, y in points:
        dominated = any(
            (x2 <= x and y2 >= y) and (x2 < x or y2 > y) for k2, x2, y2 in points if k2 != key
        )
        if not dominated:
            front.append(key)
    return front
