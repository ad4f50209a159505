"""The figures of one compared pair (:class:`e3bench.report.diff.Pair`), B against A, each with
its difference, the 95 % CI of the difference and a verdict (:mod:`e3bench.report.stats`).

Rows, by section:

* effectiveness: each task both ran, its primary metric ± standard error. When both sides
  logged samples (``--log-samples``) over the same items, the difference is paired
  (:func:`e3bench.report.stats.paired_diff_ci`, as the report's variants): for 0/1 scores the
  Agresti–Min CI and McNemar's exact test, else a paired bootstrap CI of the mean difference;
  otherwise unpaired (Welch from each side's standard error and item count). ``how`` says which.
* efficiency, at every batch size both measured: TTFT, TPOT, decode tokens/s and throughput
  (per-iteration output tokens ÷ E2E, so it has a spread); encoders: forward latency and input
  tokens/s (per iteration: batch × input tokens ÷ latency).
* energy, at every batch size both measured: net and gross J per token (prompt + output tokens),
  with the method and sensor of each side. Energy obtained differently on the two sides
  (measured against estimated, or two sensors) is INCONCLUSIVE whatever the numbers.
* memory: peak RSS of the measured phase, peak device memory, bytes of the weights.

Spread: one run gives a figure per measured iteration (speed) or one reading (energy, memory);
repeats of a configuration (several records of one ``record_key``) give one figure per repeat,
and the CI is then across repeats. A single reading on either side has no spread: its CI is
unknown and the verdict INCONCLUSIVE (``--repeats`` fixes that), except for the weights' size,
which is exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e3bench.core.fmt import count, num
from e3bench.core.timing import Stats, summarize
from e3bench.report import stats
from e3bench.report.compare import primary_metric
from e3bench.report.diff import Config, Pair
from e3bench.report.items import item_stats, paired_problem, paired_scores, read_items
from e3bench.report.llshift import loglik_shift
from e3bench.results.schema import ResultRecord, TaskResult

SECTIONS = ("effectiveness", "efficiency", "energy", "memory")
_MIB = 2**20


@dataclass
class Row:
    """One compared figure: A's and B's value ± standard error, ``diff`` = B − A with its 95 %
    CI, ``pct`` = 100 (B − A) / |A| with that CI rescaled, ``verdict`` for B against A, ``how`` they were
    obtained. ``batch_size`` None: not per batch (tasks, memory)."""

    section: str
    metric: str
    unit: str
    higher_is_better: bool
    a: float | None
    b: float | None
    a_se: float | None = None
    b_se: float | None = None
    batch_size: int | None = None
    diff: stats.Interval | None = None
    pct: float | None = None
    pct_low: float | None = None
    pct_high: float | None = None
    verdict: str = "–"
    how: str = ""

    def as_dict(self) -> dict[str, Any]:
        """A flat JSON-able dict (CSV columns, JSON rows)."""
        d = self.diff
        return {"section": self.section, "metric": self.metric, "unit": self.unit, "batch_size": self.batch_size,
                "higher_is_better": self.higher_is_better, "a": self.a, "a_stderr": self.a_se, "b": self.b,
                "b_stderr": self.b_se, "diff": d.estimate if d else None, "diff_ci95_low": d.low if d else None,
                "diff_ci95_high": d.high if d else None, "diff_pct": self.pct, "diff_pct_ci95_low": self.pct_low,
                "diff_pct_ci95_high": self.pct_high, "verdict": self.verdict, "how": self.how}  # fmt: skip


@dataclass
class PairRows:
    """The rows of one pair, and notes on what was not compared (a batch size on one side)."""

    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def compare_pair(p: Pair) -> PairRows:
    """Every row of pair ``p`` (see the module docstring), in section order."""
    out = PairRows()
    _effectiveness(p, out)
    _speed(p, out)
    _memory(p, out)
    out.rows.sort(key=lambda r: SECTIONS.index(r.section))
    if len(p.a.records) == 1 or len(p.b.records) == 1:
        out.notes.append(ONE_RUN_NOTE)
    return out


#: said under every pair where a side is one run: what its speed CIs leave out
ONE_RUN_NOTE = ("speed CIs over the iterations of one run leave out run-to-run variation (machine state, other "
                "load): two runs of one configuration can differ by more; repeats (compare --with-repeats, or "
                "sweeps/folders holding repeats) give CIs across runs")  # fmt: skip


def _point(v: float) -> Stats:
    """One reading as :class:`Stats` (n = 1, no spread)."""
    return Stats(n=1, mean=v, std=0.0, min=v, p50=v, p90=v, p99=v, max=v, ci95_low=None, ci95_high=None)


def _se(s: Stats | None) -> float | None:
    return s.std / math.sqrt(s.n) if s is not None and s.n > 1 else None


def _aggregate(cfg: Config, get: Callable[[ResultRecord], Stats | float | None]) -> tuple[Stats | None, str]:
    """One configuration's figure: the record's own samples (one run), or one value per repeat."""
    vals = [v for v in (get(r) for _, r in cfg.records) if v is not None]
    if not vals:
        return None, ""
    if len(vals) == 1:
        v = vals[0]
        return (v, count(v.n, "iteration")) if isinstance(v, Stats) else (_point(v), "1 reading")
    return summarize([v.mean if isinstance(v, Stats) else v for v in vals]), f"{len(vals)} repeats"


def _row(section: str, metric: str, unit: str, hib: bool, sa: Stats | None, sb: Stats | None,
         how: str, batch_size: int | None = None) -> Row:  # fmt: skip
    """A row from two summaries: Welch CI of B − A (:func:`e3bench.report.stats.diff_ci`);
    one side missing: values only, no verdict."""
    r = Row(section, metric, unit, hib, sa.mean if sa else None, sb.mean if sb else None, _se(sa), _se(sb), batch_size)
    if sa is None or sb is None:
        r.how = "measured on neither side" if sa is None and sb is None else "measured on one side only"
        return r
    r.diff = stats.diff_ci(sa, sb)
    _percent(r, sa.mean)
    r.verdict = stats.verdict(r.diff, higher_is_better=hib)
    r.how = f"{r.diff.method}; {how}"
    if not r.diff.known and min(sa.n, sb.n) < 2:
        r.how += "; repeats of each configuration give a CI"
    return r


def _percent(r: Row, reference: float) -> None:
    """``r.pct`` and its CI: the difference and its CI as a percentage of A's value (the same
    interval, rescaled, so the verdict and the percentages never disagree)."""
    if r.diff is None or not reference:
        return
    r.pct, r.pct_low, r.pct_high = (100 * v / abs(reference) if math.isfinite(v) else None
                                    for v in (r.diff.estimate, r.diff.low, r.diff.high))  # fmt: skip


def _by_batch(cfg: Config, kind: str) -> set[int]:
    return {x.batch_size for _, r in cfg.records for x in getattr(r.efficiency, kind)}


def _batch(rec: ResultRecord, kind: str, bs: int):
    return next((x for x in getattr(rec.efficiency, kind) if x.batch_size == bs), None)


def _speed(p: Pair, out: PairRows) -> None:
    """Efficiency and energy rows at every batch size both sides measured."""
    for kind in ("generation", "forward"):
        sa, sb = _by_batch(p.a, kind), _by_batch(p.b, kind)
        for side, only in (("A", sa - sb), ("B", sb - sa)):
            if only:
                out.notes.append(f"{kind} batch {', '.join(map(str, sorted(only)))} measured only in {side}: not compared")
        for bs in sorted(sa & sb):
            figures = _GEN if kind == "generation" else _FWD
            for metric, unit, hib, get in figures:
                ga, how_a = _aggregate(p.a, lambda r: get(_batch(r, kind, bs)))
                gb, how_b = _aggregate(p.b, lambda r: get(_batch(r, kind, bs)))
                out.rows.append(_row("efficiency", metric, unit, hib, ga, gb, f"A {how_a}, B {how_b}", bs))
            for basis in ("net", "gross"):
                out.rows.append(_energy_row(p, kind, bs, basis))


def _per_iteration_throughput(g) -> Stats | None:
    """Output tokens per second of each measured iteration: batch × tokens ÷ E2E."""
    if g is None:
        return None
    return summarize([g.batch_size * o / (e / 1000) for e, o in zip(g.raw.e2e_ms, g.raw.output_tokens, strict=False) if e > 0])


_GEN = (
    ("TTFT", "ms", False, lambda g: g and g.ttft_ms),
    ("TPOT", "ms", False, lambda g: g and g.tpot_ms),
    ("decode", "tokens/s", True, lambda g: g and g.decode_tokens_per_s),
    ("throughput", "tokens/s", True, _per_iteration_throughput),
)  # fmt: skip
_FWD = (
    ("forward latency", "ms", False, lambda f: f and f.latency_ms),
    ("forward", "tokens/s", True, lambda f: f and summarize(
        [f.batch_size * f.input_tokens_per_request_mean / (x / 1000) for x in f.raw_latency_ms if x > 0])),
)  # fmt: skip


def _energy_row(p: Pair, kind: str, bs: int, basis: str) -> Row:
    """Net or gross J per token (prompt + output) at batch ``bs``; INCONCLUSIVE when the two
    sides obtained energy differently (method or sensor)."""

    def value(r: ResultRecord) -> float | None:
        e = getattr(_batch(r, kind, bs), "energy", None)
        return None if e is None or e.method == "missing" else getattr(e, basis).ept_total_j_per_token

    def method(cfg: Config) -> str:
        e = next((getattr(_batch(r, kind, bs), "energy", None) for _, r in reversed(cfg.records)), None)
        return "none" if e is None else f"{e.method}: {e.sensor}"

    ma, mb = method(p.a), method(p.b)
    ga, how_a = _aggregate(p.a, value)
    gb, how_b = _aggregate(p.b, value)
    how = f"A {how_a} ({ma}), B {how_b} ({mb})" if ma != mb else f"A {how_a}, B {how_b}; both {ma}"
    r = _row("energy", f"{basis} energy", "J/in+out-tok", False, ga, gb, how, bs)
    if ma != mb and r.diff is not None:
        r.verdict = stats.INCONCLUSIVE
        r.how = f"energy obtained differently on the two sides, not comparable; {r.how}"
    return r


def _memory(p: Pair, out: PairRows) -> None:
    """Peak RSS of the measured phase, peak device memory and the weights' size (exact)."""
    def rss(r: ResultRecord) -> float:
        return r.efficiency.peak_rss_bytes / _MIB

    def device(r: ResultRecord) -> float | None:
        b = r.efficiency.peak_device_memory_bytes
        return None if b is None else b / _MIB

    ra, how_a = _aggregate(p.a, rss)
    rb, how_b = _aggregate(p.b, rss)
    what = {r.efficiency.peak_rss_method for c in (p.a, p.b) for _, r in c.records}
    row = _row("memory", "peak RSS", "MiB", False, ra, rb, f"A {how_a}, B {how_b}", None)
    if len(what) > 1 and row.diff is not None:
        row.verdict = stats.INCONCLUSIVE
        row.how = f"peak RSS read differently on the two sides ({' / '.join(sorted(what))}); {row.how}"
    out.rows.append(row)
    da, how_a = _aggregate(p.a, device)
    db, how_b = _aggregate(p.b, device)
    if da is not None or db is not None:
        out.rows.append(_row("memory", "peak device memory", "MiB", False, da, db, f"A {how_a}, B {how_b}", None))
    wa, wb = (c.records[-1][1].model for c in (p.a, p.b))
    if wa is not None and wb is not None:
        a, b = wa.weights_bytes / _MIB, wb.weights_bytes / _MIB
        r = Row("memory", "weights", "MiB", False, a, b)
        r.diff = stats.Interval(b - a, b - a, b - a, 1, "exact (bytes of the weights as loaded)")
        _percent(r, a)
        r.verdict = stats.verdict(r.diff, higher_is_better=False)
        r.how = r.diff.method
        out.rows.append(r)


def _latest_task(cfg: Config, task: str) -> tuple[Path, TaskResult] | None:
    """The record path and result of ``task`` in the newest record of ``cfg`` that ran it."""
    for path, rec in reversed(cfg.records):
        for t in rec.effectiveness:
            if t.task == task:
                return path, t
    return None


def _effectiveness(p: Pair, out: PairRows) -> None:
    """One row per task both sides ran: its primary metric, paired when samples allow."""
    tasks_a = {t.task for _, r in p.a.records for t in r.effectiveness}
    tasks_b = {t.task for _, r in p.b.records for t in r.effectiveness}
    for side, only in (("A", tasks_a - tasks_b), ("B", tasks_b - tasks_a)):
        if only:
            out.notes.append(f"task {', '.join(sorted(only))} only in {side}: not compared")
    for task in sorted(tasks_a & tasks_b):
        ta, tb = _latest_task(p.a, task), _latest_task(p.b, task)
        assert ta is not None and tb is not None
        metric = primary_metric(ta[1].metrics) or next((m for m in ta[1].metrics if m in tb[1].metrics), None)
        if metric is None or metric not in tb[1].metrics:
            out.notes.append(f"task {task}: no metric both sides report: not compared")
            continue
        hib = not any(w in metric for w in ("perplexity", "bits_per", "loss"))
        out.rows.append(_task_row(task, metric, hib, ta, tb))


def _task_row(task: str, metric: str, hib: bool, ta: tuple[Path, TaskResult], tb: tuple[Path, TaskResult]) -> Row:
    """A task's row: paired over the logged samples when both sides have them for the same
    items, else unpaired from each side's standard error (``how`` says which and why)."""
    (pa, a), (pb, b) = ta, tb
    sa, sb = (_task_stats(t, metric) for t in (a, b))
    items_a, items_b = _samples(pa, a), _samples(pb, b)
    why = paired_problem(items_a, items_b, metric)
    if why is not None:
        r = _row("effectiveness", f"{task} {metric}", "", hib, sa, sb, "")
        method = r.diff.method if r.diff is not None else "no interval"
        r.how = f"unpaired ({why}): {method} from each side's stderr, {a.n_items} vs {b.n_items} items"
        return r
    assert items_a is not None and items_b is not None
    xa, xb = paired_scores(items_a, items_b, metric)
    r = Row("effectiveness", f"{task} {metric}", "", hib, a.metrics[metric], b.metrics[metric], _se_of(a, metric),
            _se_of(b, metric))  # fmt: skip
    r.diff, mc = stats.paired_diff_ci(xa, xb)
    r.verdict = stats.verdict(r.diff, higher_is_better=hib)
    _percent(r, sum(xa) / len(xa))
    r.how = f"paired over the same {len(xa)} items: {r.diff.method}"
    if mc is not None:
        b_only, c_only, pval = mc
        r.how += f"; McNemar exact: {b_only} right only in A, {c_only} only in B, p = {pval:.3g}"
    shift = loglik_shift(items_a, items_b)
    if shift is not None:  # report.llshift: how far B moved A's log-likelihoods, item by item
        r.how += f"; |Δ loglik| B vs A per item: median {num(shift.median_nats)}, p90 {num(shift.p90_nats)} nats"
    return r


def _se_of(t: TaskResult, metric: str) -> float | None:
    se = t.stderr.get(metric)
    return se if se is not None and math.isfinite(se) else None


def _task_stats(t: TaskResult, metric: str) -> Stats:
    """A task's score as :class:`Stats` over its items (:func:`items.item_stats`); no stderr: one reading."""
    return item_stats(t.metrics[metric], _se_of(t, metric), t.n_items) or _point(t.metrics[metric])


def _samples(record_path: Path, t: TaskResult) -> dict[Any, dict] | None:
    """The logged samples of task ``t`` by ``doc_id``: the file the record names, else the file
    of that name in the record's own ``samples`` folder (a results folder moved or copied);
    None when not logged or unreadable."""
    if not t.samples_file:
        return None
    return read_items((Path(t.samples_file), record_path.parent / "samples" / Path(t.samples_file).name))
