"""Reduced-precision variants against their full-precision reference, judged with statistics.

A variant's reference is the configuration that differs from it only in ``dtype`` (same
workload, model, backend, device, options, seed and meter; batch sizes and measuring time may
differ), the first of
:data:`REFERENCE_ORDER` present; a configuration is never compared with itself or with another
configuration of its own precision.

Quality, per common task: with samples files on both sides (``--log-samples``) the comparison
is paired over the items both scored: for right/wrong items the exact McNemar test and the
Agresti–Min 95 % CI of the accuracy difference (retained = 1 + difference ÷ reference score),
for other per-item scores paired bootstrap CIs of the difference and of the ratio. Without them it is unpaired: Welch/delta-method intervals from each task's standard error.
"Retained ≥ 99 %" (MLPerf's rule of thumb) is PASS when the whole CI lies at or above 99 %,
FAIL when it lies below, INCONCLUSIVE when it spans 99 % (40 items cannot establish 99 %).

Speed and energy, at every batch size both measured: decode speed-up and energy-per-token ratio
(variant ÷ reference) with delta-method CIs (:func:`e3bench.report.stats.ratio_ci`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from e3bench.core.timing import Stats
from e3bench.report.compare import ConfigSummary, TaskScore
from e3bench.report.llshift import LoglikShift, loglik_shift
from e3bench.report.items import Items, item_stats, paired_problem, paired_scores, read_items
from e3bench.report.stats import (
    INCONCLUSIVE,
    Interval,
    clipped,
    diff_ci,
    meets,
    paired_bootstrap_ratio_ci,
    paired_diff_ci,
    ratio_ci,
    verdict,
)
from e3bench.report.workload import MEASURING, config_key

REFERENCE_ORDER = ("fp32", "bf16", "fp16")
MLPERF_QUALITY_TARGET = 0.99


@dataclass
class TaskComparison:
    """One task: the accuracy difference (variant − reference, in the metric's unit) and the
    retained fraction (variant ÷ reference) with 95 % CIs; ``paired`` says whether they come
    from the same items' samples (then McNemar's ``discordant`` counts (only reference right,
    only variant right) and ``p_value`` are set) or from each side's standard error."""

    task: str
    metric: str
    reference_value: float
    variant_value: float
    difference: Interval
    retained: Interval
    paired: bool
    n_items: int
    retained_verdict: str
    discordant: tuple[int, int] | None = None
    p_value: float | None = None
    #: |Δ loglik| against the reference over the paired items (report.llshift), None without samples
    ll_shift: LoglikShift | None = None


@dataclass
class SpeedComparison:
    """At one batch size both measured: decode speed-up and energy-per-token ratio, variant ÷
    reference, with 95 % CIs and verdicts (``better`` is faster / less energy)."""

    batch_size: int
    speedup: Interval | None
    speedup_verdict: str | None
    energy_ratio: Interval | None
    energy_verdict: str | None


@dataclass
class VariantComparison:
    """A variant against its reference: per-task quality comparisons, per-batch speed and energy,
    and the overall "retained ≥ 99 %" word (PASS only when every task passes, FAIL when any
    fails, INCONCLUSIVE otherwise, None without common tasks)."""

    variant: str
    reference: str
    tasks: list[TaskComparison] = field(default_factory=list)
    speed: list[SpeedComparison] = field(default_factory=list)

    @property
    def quality_verdict(self) -> str | None:
        """PASS / FAIL / INCONCLUSIVE over the tasks (None: no common task)."""
        words = {t.retained_verdict for t in self.tasks}
        if not words:
            return None
        if "FAIL" in words:
            return "FAIL"
        return "PASS" if words == {"PASS"} else INCONCLUSIVE


def _identity(c: ConfigSummary) -> str:
    """What a variant shares with its reference: everything but the precision, where results go
    and which batch sizes were measured for how long (:mod:`e3bench.report.workload`)."""
    return config_key(c.config, ignore=("dtype", *MEASURING))


def compare_to_reference(configs: Sequence[ConfigSummary]) -> list[VariantComparison]:
    """Every configuration that has a reference (same everything but ``dtype``; the first of
    :data:`REFERENCE_ORDER` present, of another precision) compared with it."""
    groups: dict[str, list[ConfigSummary]] = {}
    for c in configs:
        if not c.workload.unknown:  # what it was asked to do is not known: compared with nothing
            groups.setdefault(_identity(c), []).append(c)
    out = []
    for members in groups.values():
        ref = next((m for d in REFERENCE_ORDER for m in members if m.dtype == d), None)
        if ref is None:
            continue
        for v in members:
            if v.dtype == ref.dtype or v.config_hash == ref.config_hash:
                continue
            out.append(_compare(ref, v))
    return out


def _compare(ref: ConfigSummary, v: ConfigSummary) -> VariantComparison:
    comp = VariantComparison(variant=v.label, reference=ref.label)
    for task in sorted(set(v.task_scores) & set(ref.task_scores)):
        a, b = ref.task_scores[task], v.task_scores[task]
        if a.metric == b.metric:
            items = _items(a, b)  # each samples file read once for both figures
            comp.tasks.append(compare_tasks(a, b, items))
            comp.tasks[-1].ll_shift = loglik_shift(*items)
    for bs in sorted(set(v.batches) & set(ref.batches)):
        ra, rb = ref.batches[bs], v.batches[bs]
        sp = _ratio(ra.decode_tokens_per_s, rb.decode_tokens_per_s)
        en = _ratio(ra.ept_total_j_per_token, rb.ept_total_j_per_token)
        comp.speed.append(SpeedComparison(
            bs, sp, None if sp is None else verdict(sp, higher_is_better=True, threshold=1.0),
            en, None if en is None else verdict(en, higher_is_better=False, threshold=1.0)))  # fmt: skip
    return comp


def _ratio(a: Stats | None, b: Stats | None) -> Interval | None:
    return None if a is None or b is None else ratio_ci(a, b)


def _items(a: TaskScore, b: TaskScore) -> tuple[Items | None, Items | None]:
    """The logged items of each side (its first samples file), (None, None) unless both logged."""
    if not a.samples or not b.samples:
        return None, None
    return read_items(a.samples[:1]), read_items(b.samples[:1])


def _paired(a: TaskScore, b: TaskScore, ia: Items | None, ib: Items | None) -> tuple[list[float], list[float]] | None:
    """Scores of the items both scored (``ia``, ``ib``: :func:`_items`), or None when they
    cannot be paired (:func:`e3bench.report.items.paired_problem`)."""
    if paired_problem(ia, ib, a.metric) is not None or a.metric != b.metric:
        return None
    assert ia is not None and ib is not None
    return paired_scores(ia, ib, a.metric)


def compare_tasks(a: TaskScore, b: TaskScore, items: tuple[Items | None, Items | None] | None = None) -> TaskComparison:
    """Task score ``b`` against ``a`` (the same task and metric): paired over the items both
    scored when both logged samples, else from each side's standard error (module doc). The one
    comparison of two scores: variants against their reference, and ties for "most accurate".
    ``items``: both sides' logged items when the caller has read them (:func:`_items`)."""
    pair = _paired(a, b, *(_items(a, b) if items is None else items))
    if pair is not None:
        xa, xb = pair
        ra, rb = sum(xa) / len(xa), sum(xb) / len(xb)
        diff, mc = paired_diff_ci(xa, xb)
        if mc is None:
            retained = paired_bootstrap_ratio_ci(xa, xb)
        elif ra > 0:  # right/wrong items: retained from the Agresti-Min interval of the difference
            retained = clipped(Interval(rb / ra, 1 + diff.low / ra, 1 + diff.high / ra, diff.n,
                                        diff.method + ", as a fraction of the reference's score"))  # fmt: skip
        else:
            retained = Interval(float("nan"), float("nan"), float("nan"), diff.n, "reference score 0")
        return TaskComparison(a.task, a.metric, ra, rb, diff, retained, True, len(xa), _retained_word(retained),
                              mc[:2] if mc else None, mc[2] if mc else None)  # fmt: skip
    sa, sb = item_stats(a.value, a.stderr, a.n_items), item_stats(b.value, b.stderr, b.n_items)
    if sa is None or sb is None:
        nan = float("nan")
        diff = Interval(b.value - a.value, nan, nan, min(a.n_items, b.n_items), "no standard error: no interval")
        retained = Interval(b.value / a.value if a.value else nan, nan, nan, diff.n, diff.method)
    else:
        diff, retained = diff_ci(sa, sb), ratio_ci(sa, sb)
    return TaskComparison(a.task, a.metric, a.value, b.value, diff, retained, False, min(a.n_items, b.n_items),
                          _retained_word(retained))  # fmt: skip


def _retained_word(retained: Interval) -> str:
    """PASS when the retained interval lies at or above 99 %, FAIL below, else INCONCLUSIVE."""
    return meets(retained, MLPERF_QUALITY_TARGET)
