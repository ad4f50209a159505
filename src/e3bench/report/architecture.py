"""The architecture comparison in ``e3bench report``: one table and three figures for a folder
holding an architecture comparison (``e3bench sweep`` with an ``architectures:`` block,
:mod:`e3bench.sweep.architectures`). Nothing here when the folder has none.

The comparison record (:mod:`e3bench.results.architectures`) names, per model, its run record
(inference at the sweep's input length: encoders' forward pass, generators' TTFT / TPOT, and
the generators' few-shot scores) and its fine-tuning records (one per task). One table row per
model and task:

* **inference** (run record, smallest batch measured): ``latency`` is the forward latency of one
  sequence (encoder-only) or the TTFT (generators), both at the same input length; ``J/request``
  the energy of one request of that window (a forward pass; a generation of the run's output
  length); TPOT for generators;
* **the task** (fine-tuning record, last evaluation; the same held-out items for every model):
  milliseconds and joules per item of the fine-tuned classifier;
* **fine-tuning**: training time, energy and samples to the target accuracy (the first
  evaluation at or above it; "-" when not reached), and the energy of the whole budget;
* **effectiveness**: the best fine-tuned accuracy and the generators' few-shot accuracy, each
  with its 95 % Wilson interval over the held-out items, the majority class beside them, and
  accuracy per kJ of fine-tuning (best accuracy ÷ the budget's training energy in kJ).

A model whose weights are random (a test fixture: the comparison record says so and how it knows)
is labelled ``(fixture)`` in the table and every figure, and a note says its numbers measure the
code path, not the architecture.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e3bench.core.fmt import num
from e3bench.report.compare import pareto_front
from e3bench.report.figures import Figure, Mark, Panel
from e3bench.report.stats import Interval, proportion_ci
from e3bench.report.tables import ci_cell
from e3bench.results.architectures import KIND, ArchitecturesRecord
from e3bench.results.labels import model_display

_NAN = float("nan")
COLUMNS = [
    "model", "weights", "architecture", "params (M)", "task", "latency is", "latency (ms)", "TPOT (ms)",
    "J/request (inference)", "ms/item (task)", "J/item (task)", "s to target", "J to target", "samples to target",
    "fine-tune J (budget)", "fine-tuned acc [95% CI]", "few-shot acc [95% CI]", "majority class", "final − majority [95% CI]", "acc per kJ (fine-tune)",
]  # fmt: skip
#: How a random-weights model is marked beside its name, in this section and every other one.
FIXTURE_TAG = "(fixture)"
#: The table's heading.
HEADING = "Architecture comparison (encoder vs encoder-decoder vs decoder)"


@dataclass
class Row:
    """One model on one task, as numbers (the table row is :meth:`cells`)."""

    label: str
    fixture: bool
    architecture: str
    params: int | None
    task: str
    latency_is: str | None = None
    latency_ms: float | None = None
    tpot_ms: float | None = None
    j_per_request: float | None = None
    ms_per_item: float | None = None
    j_per_item: float | None = None
    s_to_target: float | None = None
    j_to_target: float | None = None
    samples_to_target: int | None = None
    train_j: float | None = None
    finetuned: Interval | None = None
    fewshot: Interval | None = None
    fewshot_j_per_item: float | None = None
    majority: float | None = None
    #: the last evaluation's accuracy minus the majority class, 95 % Wilson interval shifted by it
    #: (the fine-tuning record's ``vs_majority``: did it learn?)
    vs_majority: Interval | None = None

    @property
    def acc_per_kj(self) -> float | None:
        """Best fine-tuned accuracy ÷ the fine-tuning budget's training energy (kJ); None for a
        fixture (random weights: its accuracy is chance, its joules are those of a toy size)."""
        if self.fixture or self.finetuned is None or not self.train_j:
            return None
        return self.finetuned.estimate / (self.train_j / 1000)

    def cells(self) -> dict[str, Any]:
        """The row under :data:`COLUMNS` (accuracies as ``"0.74 [0.65, 0.81]"``)."""
        vals = [self.label, "random fixture" if self.fixture else "pretrained", self.architecture,
                None if self.params is None else self.params / 1e6, self.task, self.latency_is, self.latency_ms,
                self.tpot_ms, self.j_per_request, self.ms_per_item, self.j_per_item, self.s_to_target,
                self.j_to_target, self.samples_to_target, self.train_j, _ci(self.finetuned), _ci(self.fewshot),
                self.majority, _margin(self.vs_majority), self.acc_per_kj]  # fmt: skip
        return dict(zip(COLUMNS, vals, strict=True))


@dataclass
class Section:
    """The comparison's rows, figures and notes (false when the folder has no comparison)."""

    rows: list[Row] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: one sentence per random-weights model (also in ``notes``)
    fixtures: list[str] = field(default_factory=list)
    #: config hashes of the fixtures' run and fine-tuning records: the report's other sections
    #: label those ``(fixture)`` too (:func:`mark_fixtures`)
    fixture_hashes: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.rows)

    def lines(self) -> list[str]:
        """Executive-summary lines: per task, each model's best fine-tuned (and few-shot) accuracy
        with its interval and the training energy it took; then one line per fixture."""
        out = []
        for task in dict.fromkeys(r.task for r in self.rows):
            rows = [r for r in self.rows if r.task == task]
            parts = [f"{r.label} ({r.architecture}) fine-tuned {ci_cell(r.finetuned)}"
                     + (f", few-shot {ci_cell(r.fewshot)}" if r.fewshot else "")
                     + (f", {num(r.train_j)} J fine-tuning" if r.train_j is not None else "") for r in rows]  # fmt: skip
            major = f"; majority class {rows[0].majority:.3f}" if rows[0].majority is not None else ""
            out.append(f"- **Architectures, {task}:** accuracy [95 % CI]: {'; '.join(parts)}{major}.")
        out += [f"- **Fixture:** {n}" for n in self.fixtures]
        return out

    def tables(self) -> list[tuple[str, list[dict], list[str]]]:
        """``(heading, rows, columns)`` for the summary, the page and ``table.tex`` (none when empty)."""
        return [(HEADING, [r.cells() for r in self.rows], COLUMNS)] if self.rows else []


def _ci(iv: Interval | None) -> str | None:
    """``"0.74 [0.65, 0.81]"``; None (an empty cell, ``-`` in the tables) when there is no score."""
    return None if iv is None else ci_cell(iv)


def _latest(items):
    return max(items, key=lambda r: r.created_utc) if items else None


def load(records, others: Mapping[str, list[tuple[Path, dict]]]) -> Section:
    """The section from one results scan: ``records`` (``(path, ResultRecord)``) and ``others``
    (``{kind: [(path, parsed JSON)]}``). Documents that do not validate are named in ``notes``."""
    out = Section()
    docs = others.get(KIND, [])
    if not docs:
        return out
    from e3bench.train.records import FinetuneRecord

    runs: dict[str, list] = {}
    for _, r in records:
        if r.status == "ok":
            runs.setdefault(r.config_hash, []).append(r)
    tunes: dict[str, list] = {}
    for p, d in others.get("finetune", []):
        try:
            ft = FinetuneRecord.model_validate(d)
        except ValueError:
            continue  # report.training names it
        tunes.setdefault(ft.config_hash, []).append(ft)
    for p, d in sorted(docs, key=lambda x: x[0]):
        try:
            comp = ArchitecturesRecord.model_validate(d)
        except ValueError as exc:
            out.notes.append(f"{p}: invalid architecture comparison ({str(exc).splitlines()[0]})")
            continue
        out.rows += rows_of(comp, {h: _latest(v) for h, v in runs.items()}, {h: _latest(v) for h, v in tunes.items()})
        by_note: dict[str, list[str]] = {}
        for m in comp.models:
            if m.fixture:
                by_note.setdefault(m.fixture_note or "random weights", []).append(_label(m.model, True))
                out.fixture_hashes |= {h for h in (m.inference_hash, *m.finetune_hashes.values()) if h}
        out.fixtures += [f"{', '.join(names)} {'is a fixture' if len(names) == 1 else 'are fixtures'} "
                         f"({note if len(names) == 1 else note.replace('its folder holds', 'each folder holds')}): "
                         f"{'its' if len(names) == 1 else 'their'} numbers measure the code path and the cost of "
                         f"{'its' if len(names) == 1 else 'their'} size, not what the architecture can learn."
                         for note, names in by_note.items()]  # fmt: skip
    out.notes += out.fixtures
    out.figures = figures(out.rows)
    return out


def mark_fixtures(section: Section, configs, finetune_rows: list[dict]) -> None:
    """Label the fixtures ``(fixture)`` wherever else the report names them: the configurations'
    labels and model names (``ConfigSummary``: tables, figures, summary lines) and the fine-tuning
    rows of the training section (by their ``config_hash``), as the comparison's table does.
    A model outside any comparison is a fixture too when its folder still holds
    :data:`~e3bench.results.architectures.FIXTURE_MARKER` (``model_path`` of a fine-tuning row)."""
    for c in configs:
        if (c.config_hash in section.fixture_hashes or _marked(c.config.get("model"))) and FIXTURE_TAG not in c.label:
            name = str(c.model).rstrip("/").split("/")[-1]  # the label's model part (config_label's rule)
            at = len(name) if c.label.startswith(name) else len(c.label)  # a name may hold spaces
            c.label = f"{c.label[:at]} {FIXTURE_TAG}{c.label[at:]}"
            c.fixture = True
    for r in finetune_rows:
        if (r.get("config_hash") in section.fixture_hashes or _marked(r.get("model_path"))) \
                and FIXTURE_TAG not in str(r.get("model")):
            r["model"] = f"{r['model']} {FIXTURE_TAG}"


def _marked(model: Any) -> bool:
    """True when ``model`` is a folder holding the fixture marker (scripts/tiny_models.py's)."""
    from e3bench.results.architectures import FIXTURE_MARKER

    if not isinstance(model, str) or not model:
        return False
    try:
        return (Path(model).expanduser() / FIXTURE_MARKER).is_file()
    except OSError:
        return False


def _margin(iv: Interval | None) -> str | None:
    """``"+0.052 [+0.004, +0.099]"`` (signed: a margin over the majority class)."""
    return None if iv is None else f"{iv.estimate:+.3f} [{iv.low:+.3f}, {iv.high:+.3f}]"


def _label(model: str, fixture: bool) -> str:
    name = model_display(model)
    return f"{name} {FIXTURE_TAG}" if fixture else name


def _energy_j(e) -> float | None:
    if e is None:
        return None
    return e.net_energy_j if e.net_energy_j is not None else e.gross_energy_j


def rows_of(comp: ArchitecturesRecord, runs: Mapping[str, Any], tunes: Mapping[str, Any]) -> list[Row]:
    """One :class:`Row` per model and task of ``comp``, from the run records (by config hash) and
    fine-tuning records (by config hash) it names; what is missing stays None."""
    out = []
    for m in comp.models:
        rec = runs.get(m.inference_hash or "")
        for t in comp.tasks:
            ft = tunes.get(m.finetune_hashes.get(t.task, ""))
            arch = rec.model.architecture if rec and rec.model else (ft.model.get("architecture") if ft else "?")
            params = rec.model.parameters if rec and rec.model else (ft.total_parameters if ft else None)
            row = Row(_label(m.model, m.fixture), m.fixture, arch, params, t.task, majority=t.majority_class_accuracy)
            if rec is not None and rec.efficiency is not None:
                _inference(row, rec, t.fewshot_label)
            if ft is not None:
                _finetune(row, ft)
            out.append(row)
    return out


def _inference(row: Row, rec, fewshot_label: str) -> None:
    eff = rec.efficiency
    if eff.forward:
        f = min(eff.forward, key=lambda b: b.batch_size)
        row.latency_is, row.latency_ms = f"forward, bs{f.batch_size}", f.latency_ms.mean
        row.j_per_request = f.energy.energy_per_request_j if f.energy else None
    elif eff.generation:
        g = min(eff.generation, key=lambda b: b.batch_size)
        row.latency_is = f"TTFT, bs{g.batch_size}"
        row.latency_ms = g.ttft_ms.mean if g.ttft_ms else None
        row.tpot_ms = g.tpot_ms.mean if g.tpot_ms else None
        row.j_per_request = g.energy.energy_per_request_j if g.energy else None
    task = next((t for t in rec.effectiveness if t.task == fewshot_label), None)
    if task is not None and "acc" in task.metrics:
        row.fewshot = proportion_ci(task.metrics["acc"], task.n_items)
        e = _energy_j(task.energy)
        row.fewshot_j_per_item = e / task.n_items if e is not None and task.n_items else None


def _finetune(row: Row, ft) -> None:
    from e3bench.train.records import basis_energy_j

    if ft.evals:
        best = max(ft.evals, key=lambda e: (e.accuracy, -e.step))
        row.finetuned = proportion_ci(best.accuracy, best.n_items)
        last = ft.evals[-1]
        if last.n_items:
            row.ms_per_item = 1000 * last.eval_s / last.n_items
            row.j_per_item = None if last.eval_energy_j is None else last.eval_energy_j / last.n_items
    m = ft.vs_majority
    if m is not None:
        row.vs_majority = Interval(m.margin, m.ci95_low, m.ci95_high, m.n_items, m.method)
    t = ft.target
    if t is not None and t.reached and t.reached_at_step:  # met at step 0: training did not get it there
        row.s_to_target, row.j_to_target, row.samples_to_target = t.time_to_target_s, t.energy_to_target_j, t.samples_to_target
    row.train_j = t.budget_energy_j if t is not None and t.budget_energy_j is not None else basis_energy_j(ft.train_energy)


# ------------------------------------------------------------------------------ figures
def _point(v: float | None) -> Interval | None:
    return None if v is None else Interval(v, _NAN, _NAN, 1, "one run, no interval")


def _hover(r: Row, lines: list[str]) -> str:
    return "\n".join([f"{r.label} · {r.architecture} · {r.task}", *lines])


def _scatter(rows: list[Row], name: str, title: str, x_label: str, points) -> Figure | None:
    """One scatter panel per task of ``points(row) -> [(series, x, y)]``, Pareto front marked."""
    panels = []
    for task in dict.fromkeys(r.task for r in rows):
        pts = [(r, s, x, y) for r in rows if r.task == task for s, x, y in points(r) if x is not None and y is not None]
        if not pts:
            continue
        front = set(pareto_front([(i, x.estimate, y.estimate) for i, (_, _, x, y) in enumerate(pts)]))
        marks = [Mark(s, s, y, x, hover=_hover(r, [f"{x_label}: {x.estimate:.4g}", f"accuracy: {ci_cell(y)}"]),
                      front=i in front, number=i + 1) for i, (r, s, x, y) in enumerate(pts)]  # fmt: skip
        xs = [x.estimate for _, _, x, _ in pts]
        log_x = min(xs) > 0 and max(xs) / min(xs) > 20
        panels.append(Panel("scatter", task, x_label + (" (log scale)" if log_x else ""), "accuracy", marks, log_x))
    if not panels:
        return None
    note = ("Error bars: 95 % Wilson intervals over the held-out items (the same items for every model); "
            "energy is one figure per run (no interval). Pareto front: no other point is both cheaper and more accurate.")  # fmt: skip
    return Figure(name, title, note, panels)


def _norm_panel(rows: list[Row], title: str, value, higher: bool) -> Panel | None:
    """Bars of each model's ``value`` (mean over its tasks) normalised so the best model is 1."""
    per: dict[str, list[float]] = {}
    for r in rows:
        v = value(r)
        if v is not None and v > 0:
            per.setdefault(r.label, []).append(v)
    means = {k: sum(v) / len(v) for k, v in per.items()}
    if not means:
        return None
    best = max(means.values()) if higher else min(means.values())
    marks = [Mark(k, k, _point(v / best if higher else best / v), cat=k, hover=f"{k}\n{title}: {v:.4g} (best {best:.4g})")
             for k, v in means.items()]  # fmt: skip
    return Panel("bar", title, "relative to the best model (1 = best)", "", marks)


def figures(rows: list[Row]) -> list[Figure]:
    """Accuracy vs fine-tuning energy, accuracy vs inference energy per item (fine-tuned and
    few-shot), and the three E's per model normalised to the best (small multiples)."""
    if not rows:
        return []
    train = _scatter(rows, "arch_accuracy_vs_training_energy", "Architectures: accuracy vs fine-tuning energy",
                     "fine-tuning energy, whole budget (J)", lambda r: [(r.label, _point(r.train_j), r.finetuned)])  # fmt: skip
    infer = _scatter(rows, "arch_accuracy_vs_inference_energy", "Architectures: accuracy vs inference energy per item",
                     "J per held-out item", lambda r: [(r.label + " fine-tuned", _point(r.j_per_item), r.finetuned),
                                                       (r.label + " few-shot", _point(r.fewshot_j_per_item), r.fewshot)])  # fmt: skip
    panels = [p for p in (
        _norm_panel(rows, "Efficiency: latency at the same input length", lambda r: r.latency_ms, False),
        _norm_panel(rows, "Energy: J per task item (fine-tuned)", lambda r: r.j_per_item, False),
        _norm_panel(rows, "Effectiveness: fine-tuned accuracy", lambda r: r.finetuned.estimate if r.finetuned else None, True),
    ) if p is not None]  # fmt: skip
    three = Figure("arch_three_es", "Architectures: efficiency, energy, effectiveness (1 = best model)",
                   "Each panel divides by the best model (costs: best ÷ value; accuracy: value ÷ best), means over "
                   "tasks; longer bars are better. No error bars: ratios of single runs.", panels) if panels else None  # fmt: skip
    return [f for f in (train, infer, three) if f is not None]
