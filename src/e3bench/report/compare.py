"""One summary per configuration, computed from stored records only, with its uncertainty.

A configuration is a :func:`~e3bench.report.workload.record_key` (its config, fields a record
predates filled in: older records join new ones even where their stored ``config_hash``
differs); several records of one configuration are repeats and are aggregated: figures are the
mean over the runs with a 95 % Student-t interval across runs, on the log scale for these
quantities that cannot be negative (:func:`e3bench.report.stats.t_interval`). With one run the interval is over that run's measured iterations (latency, decode speed) or absent
(throughput and energy are one figure per run). Every configuration belongs to one workload
(:mod:`e3bench.report.workload`); rankings and Pareto fronts are computed per workload and per
batch size. Variants against their full-precision reference: :mod:`e3bench.report.variants`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e3bench.core.fmt import count
from e3bench.core.timing import Stats, summarize
from e3bench.report.stats import Interval, proportion_ci, t_interval
from e3bench.report.workload import Workload, record_key, workload_of
from e3bench.results import store
from e3bench.results.labels import distinct_labels
from e3bench.results.schema import BatchResult, ResultRecord

PRIMARY_METRICS = ("acc_norm", "acc", "exact_match_flexible", "exact_match", "f1")
#: Primary metrics that score each item right or wrong (their mean is a proportion).
BINARY_METRICS = frozenset({"acc_norm", "acc", "exact_match_flexible", "exact_match"})


def interval(stats: Stats | None, basis: str) -> Interval | None:
    """``stats`` of a quantity that cannot be negative (a time, a rate, joules) as an
    :class:`Interval`: its mean and 95 % Student-t CI on the log scale
    (:func:`e3bench.report.stats.t_interval`: never below zero, even over 2 runs); NaN ends
    below two samples. ``basis`` names what the samples are (``"iterations"``, ``"runs"``)."""
    if stats is None:
        return None
    return t_interval(stats.mean, stats.std, stats.n, positive=True, over=basis)


@dataclass
class BatchFigures:
    """Speed and energy of one configuration at one batch size, as :class:`Stats` of the samples
    the uncertainty comes from: the iterations of the one run, or the per-run means of repeats
    (``basis`` says which). Throughput and energy per token are one value per run."""

    batch_size: int
    runs: int
    basis: str
    decode_tokens_per_s: Stats | None
    ttft_ms: Stats | None
    tpot_ms: Stats | None
    throughput_tokens_per_s: Stats | None
    ept_total_j_per_token: Stats | None
    energy_method: str | None

    def ci(self, metric: str) -> Interval | None:
        """The 95 % interval of ``metric`` (a field name above)."""
        st = getattr(self, metric)
        basis = "runs" if self.runs > 1 or metric in ("throughput_tokens_per_s", "ept_total_j_per_token") else "iterations"
        return interval(st, basis)


@dataclass
class TaskScore:
    """A task's primary metric: mean over runs, standard error over items (of one run: runs of
    one configuration score the same items), item count and the runs' samples files found."""

    task: str
    metric: str
    value: float
    stderr: float | None
    n_items: int
    samples: list[Path] = field(default_factory=list)

    def ci(self) -> Interval:
        """The score's 95 % interval over its items, inside [0, 1]
        (:func:`e3bench.report.stats.proportion_ci`): Wilson for right/wrong metrics
        (:data:`BINARY_METRICS`), else ±1.96 × stderr clipped to [0, 1] (NaN ends without one)."""
        return proportion_ci(self.value, self.n_items, self.stderr, binary=self.metric in BINARY_METRICS)


@dataclass
class ConfigSummary:
    """One configuration (one :func:`~e3bench.report.workload.record_key`) over all its successful runs.

    ``label`` never collides with another configuration's in the same report; ``workload`` says
    what it was asked to do; ``batches``: batch size → :class:`BatchFigures`; ``task_scores``:
    task → :class:`TaskScore`; memory: the largest peak RSS of the measured phase over the runs
    (``peak_rss_lifetime``: True for records made before the measured phase was metered apart,
    whose peak is the process lifetime's, load included) beside the model's weight bytes; ``warnings``: what
    the runs reported that a reader must know (busy machine, estimated energy, cut iterations,
    truncated prompts), each once; ``fixture``: a random-weights test model (labelled so, and not
    ranked beside real models in the summary).
    """

    label: str
    model: str
    backend: str
    dtype: str
    device: str
    config_hash: str
    config: dict[str, Any]
    workload: Workload
    run_ids: list[str]
    batches: dict[int, BatchFigures] = field(default_factory=dict)
    task_scores: dict[str, TaskScore] = field(default_factory=dict)
    peak_rss_bytes: int | None = None
    peak_rss_lifetime: bool = False
    weights_bytes: int | None = None
    peak_device_memory_bytes: int | None = None
    warnings: list[str] = field(default_factory=list)
    fixture: bool = False

    @property
    def runs(self) -> int:
        """Number of successful runs aggregated (repeats)."""
        return len(self.run_ids)

    @property
    def run_id(self) -> str:
        """The latest run's id."""
        return self.run_ids[-1]

    @property
    def accuracy(self) -> float | None:
        """Mean primary metric over the tasks (None without tasks)."""
        vals = [s.value for s in self.task_scores.values()]
        return sum(vals) / len(vals) if vals else None

    # --- figures at the smallest batch measured (plots and one-line summaries) ---
    @property
    def min_batch_size(self) -> int | None:
        """Smallest batch size measured (None when none was)."""
        return min(self.batches, default=None)

    def at_min_batch(self, metric: str) -> float | None:
        """Mean of ``metric`` (a :class:`BatchFigures` field: ``decode_tokens_per_s``, ``ttft_ms``,
        ``tpot_ms``, ``ept_total_j_per_token``, …) at :attr:`min_batch_size`; None when not measured."""
        b = self.batches.get(self.min_batch_size) if self.batches else None
        st = getattr(b, metric) if b is not None else None
        return st.mean if st is not None else None

    @property
    def energy_method(self) -> str | None:
        """How energy was obtained (``"measured: rapl"``), from the smallest batch."""
        b = self.batches.get(self.min_batch_size) if self.batches else None
        return b.energy_method if b else None

    @property
    def throughput_by_batch(self) -> dict[int, float]:
        """Batch size → mean throughput (tokens/s)."""
        return {k: b.throughput_tokens_per_s.mean for k, b in self.batches.items() if b.throughput_tokens_per_s}

    @property
    def peak_rss_mib(self) -> float | None:
        """:attr:`peak_rss_bytes` in MiB."""
        return None if self.peak_rss_bytes is None else self.peak_rss_bytes / 2**20


def primary_metric(metrics: dict[str, float]) -> str | None:
    """The first of :data:`PRIMARY_METRICS` present in ``metrics`` (None if none is)."""
    for m in PRIMARY_METRICS:
        if m in metrics:
            return m
    return None


def headline_metric(metrics: dict[str, float]) -> str | None:
    """The metric that stands for a task wherever one figure is shown (run summary, report,
    compare): :func:`primary_metric`, else the task's first metric (None without metrics)."""
    return primary_metric(metrics) or next(iter(metrics), None)


def _across(recs: list[ResultRecord], get) -> Stats | None:
    return summarize([v for v in (get(r) for r in recs) if v is not None])


def _batch(gs: list[BatchResult]) -> BatchFigures:
    """One batch size over runs: iteration stats of one run, or stats of the per-run means."""
    if len(gs) == 1:
        g = gs[0]
        dec, ttft, tpot, basis = g.decode_tokens_per_s, g.ttft_ms, g.tpot_ms, f"{count(g.iterations, 'iteration')} of 1 run"
    else:
        def over(attr: str) -> Stats | None:
            return summarize([getattr(g, attr).mean for g in gs if getattr(g, attr) is not None])

        dec, ttft, tpot, basis = over("decode_tokens_per_s"), over("ttft_ms"), over("tpot_ms"), f"{len(gs)} runs"
    epts = [g.energy.ept_total_j_per_token for g in gs if g.energy and g.energy.ept_total_j_per_token is not None]
    e = next((g.energy for g in gs if g.energy is not None), None)
    return BatchFigures(
        batch_size=gs[0].batch_size, runs=len(gs), basis=basis, decode_tokens_per_s=dec, ttft_ms=ttft, tpot_ms=tpot,
        throughput_tokens_per_s=summarize([g.throughput_tokens_per_s for g in gs]),
        ept_total_j_per_token=summarize(epts), energy_method=f"{e.method}: {e.sensor}" if e else None,
    )  # fmt: skip


def run_warnings(rec: ResultRecord) -> list[str]:
    """What a reader must know about one run, from its record: the run's own warnings (busy
    machine, iterations cut by the time cap, meter problems), energy that was estimated rather
    than measured, and prompts truncated to fit the context."""
    out = list(rec.warnings)
    for g in rec.efficiency.generation if rec.efficiency else []:
        if g.cut_by_max_seconds and not any(g.cut_by_max_seconds in w for w in out):
            out.append(f"bs{g.batch_size}: {g.cut_by_max_seconds}")
        if g.energy is not None and g.energy.method == "estimated":
            w = f"energy estimated, not measured ({g.energy.sensor})"
            if w not in out:
                out.append(w)
    for t in rec.effectiveness:
        if t.truncated_items:
            out.append(f"task {t.task}: {t.truncated_items} of {t.n_items} prompts truncated to fit the context")
    return out


def summarize_configs(records: Sequence[ResultRecord | tuple[Path, ResultRecord]]) -> list[ConfigSummary]:
    """One :class:`ConfigSummary` per configuration over its successful runs (repeats
    aggregated), labelled by what differs (:func:`_label`). Records given with
    their file path (as :func:`e3bench.results.store.scan` finds them) also find their samples
    files (``--log-samples``), for paired comparisons."""
    groups: dict[str, list[tuple[Path | None, ResultRecord]]] = {}
    for item in records:
        path, rec = item if isinstance(item, tuple) else (None, item)
        if rec.status == "ok" and rec.efficiency is not None:
            groups.setdefault(record_key(rec), []).append((path, rec))
    members = [sorted(g, key=lambda pr: pr[1].created_utc) for g in groups.values()]
    out = [_summary(m, "") for m in members]
    _label(out, [m[-1][1] for m in members])
    return sorted(out, key=lambda s: (s.workload, s.model, s.backend, s.device, _dtype_rank(s.dtype), s.label))


def _label(out: list[ConfigSummary], latest: list[ResultRecord]) -> None:
    """Labels by what differs: :func:`distinct_labels` inside each workload (the workload is said
    once, in its section), then, where a label recurs in another workload, the workload's short
    tag (``[64→16 tokens, hellaswag×40]``); labels still alike get ``#`` and the config hash's
    first 6 hex, so no two configurations of a report share one."""
    by_w: dict[Workload, list[int]] = {}
    for i, s in enumerate(out):
        by_w.setdefault(s.workload, []).append(i)
    for idx in by_w.values():
        recs = [latest[i] for i in idx]
        names = [r.model.name if r.model else None for r in recs]
        for i, label in zip(idx, distinct_labels([r.config for r in recs], model_names=names), strict=True):
            out[i].label = label
    seen: dict[str, set[Workload]] = {}
    for s in out:
        seen.setdefault(s.label, set()).add(s.workload)
    for s in out:
        if len(seen[s.label]) > 1:
            s.label = f"{s.label} [{s.workload.short}]"
    count: dict[str, int] = {}
    for s in out:
        count[s.label] = count.get(s.label, 0) + 1
    for s in out:  # still alike (e.g. two model folders of one name): the configuration hash tells them apart
        if count[s.label] > 1:
            s.label = f"{s.label} #{s.config_hash[:6]}"


def _summary(runs: list[tuple[Path | None, ResultRecord]], label: str) -> ConfigSummary:
    recs = [r for _, r in runs]
    rec = recs[-1]
    c = rec.config
    s = ConfigSummary(
        label=label, model=rec.model.name if rec.model else c["model"], backend=c["backend"], dtype=c["dtype"],
        device=c["device"], config_hash=rec.config_hash, config=c, workload=workload_of(c),
        run_ids=[r.run_id for r in recs], weights_bytes=rec.model.weights_bytes if rec.model else None,
    )  # fmt: skip
    s.peak_rss_bytes = max(r.efficiency.peak_rss_bytes for r in recs)
    s.peak_rss_lifetime = any(r.efficiency.peak_rss_includes is None for r in recs)
    dev = [r.efficiency.peak_device_memory_bytes for r in recs if r.efficiency.peak_device_memory_bytes]
    s.peak_device_memory_bytes = max(dev) if dev else None
    by_bs: dict[int, list[BatchResult]] = {}
    for r in recs:
        for g in r.efficiency.generation:
            by_bs.setdefault(g.batch_size, []).append(g)
    s.batches = {bs: _batch(gs) for bs, gs in sorted(by_bs.items())}
    for t in rec.effectiveness:
        m = primary_metric(t.metrics)
        if m is None:
            continue
        vals = [x.metrics[m] for r in recs for x in r.effectiveness if x.task == t.task and m in x.metrics]
        s.task_scores[t.task] = TaskScore(t.task, m, sum(vals) / len(vals), t.stderr.get(m), t.n_items,
                                          _samples(runs, t.task))  # fmt: skip
    seen: dict[str, int] = {}
    for r in recs:
        for w in dict.fromkeys(run_warnings(r)):
            seen[w] = seen.get(w, 0) + 1
    s.warnings = [w if len(recs) == 1 else f"{w} (in {n} of {len(recs)} runs)" for w, n in seen.items()]
    if s.workload.unknown:
        s.warnings.insert(0, f"{s.workload.label}: compared with no other configuration")
    return s


def _samples(runs: list[tuple[Path | None, ResultRecord]], task: str) -> list[Path]:
    """The samples file of ``task`` of each run that has one, next to the run's record."""
    out = []
    for path, rec in runs:
        if path is None or not any(t.task == task and t.samples_file for t in rec.effectiveness):
            continue
        p = store.samples_path(path.parent.parent, path.parent.name, rec.run_id, task)
        if p.is_file():
            out.append(p)
    return out


def batch_label(configs: Sequence[ConfigSummary]) -> str:
    """What :meth:`ConfigSummary.at_min_batch` figures of ``configs`` were measured at, for titles and labels:
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


def by_workload(configs: Sequence[ConfigSummary]) -> dict[Workload, list[ConfigSummary]]:
    """``configs`` grouped by workload, in order of first appearance."""
    out: dict[Workload, list[ConfigSummary]] = {}
    for c in configs:
        out.setdefault(c.workload, []).append(c)
    return out


def pareto_front(points: Sequence[tuple[Any, float, float]]) -> list[Any]:
    """Keys of the points no other point dominates when minimising x (cost) and maximising y
    (quality), in input order. Points are compared by position, so two points with the same key
    still dominate each other; identical points are both on the front; NaN x never is.
    O(n log n): sorted by x, a point is on the front when its y beats every cheaper point's."""
    idx = sorted((i for i, (_, x, _) in enumerate(points) if not math.isnan(x)),
                 key=lambda i: (points[i][1], -points[i][2]))  # fmt: skip
    on: set[int] = set()
    best = -math.inf  # highest y among points with strictly smaller x
    k = 0
    while k < len(idx):
        x, end = points[idx[k]][1], k
        while end < len(idx) and points[idx[end]][1] == x:
            end += 1
        same = idx[k:end]  # same x, best y first
        top = points[same[0]][2]
        if top > best:
            on.update(i for i in same if points[i][2] == top)
        best = max(best, top)
        k += len(same)
    return [points[i][0] for i in sorted(on)]
