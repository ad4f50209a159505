"""``e3bench compare A B``: what A and B are, which configurations pair, and whether they may.

A side is a run (its run id, or the path of its record), a sweep (its folder, or its name inside
the results directory) or a whole results folder: :func:`resolve` turns what the user typed into
the successful records it names. :func:`pair` groups each side's records into configurations
(records of one configuration, :func:`~e3bench.report.workload.record_key`, are repeats) and pairs them:

* when each side holds one configuration, those two are compared, whatever differs between them
  (that is what the user asked: fp32 against int8, one machine against another);
* otherwise configurations pair by identity: the same model, backend, backend options, dtype
  and device, and the same workload (:data:`e3bench.report.workload.IDENTITY`,
  :data:`~e3bench.report.workload.WORKLOAD_FIELDS`: the report's one definition); what pairs
  with nothing is listed. Records of one configuration are those with one
  :func:`~e3bench.report.workload.record_key` (older records included).

Comparisons that say nothing are refused (:class:`E3Error`, exit 2): A and B the same records,
or a pair whose workloads differ (other prompt or output lengths, prompt source, tasks, limits)
unless ``force`` (then each difference becomes a warning). The figures of each pair and their
statistics are :mod:`e3bench.report.diff_rows`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e3bench.core.errors import E3Error
from e3bench.core.fmt import count
from e3bench.core.fsutil import component_problem
from e3bench.report.compare import run_warnings
from e3bench.report.workload import IDENTITY, NOT_COMPARED, WORKLOAD_FIELDS, complete, missing, record_key, workload_values
from e3bench.results import store
from e3bench.results.labels import config_label
from e3bench.results.schema import ResultRecord



@dataclass
class Side:
    """What one argument of ``compare`` named: ``kind`` ``run`` / ``repeats`` / ``sweep`` / ``folder``,
    ``where`` it lies, its successful ``records`` and ``notes`` on what was left out."""

    spec: str
    kind: str
    where: Path
    records: list[tuple[Path, ResultRecord]]
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """``"run 2026…-ab12 (results/runs/….json)"`` / ``"sweep results/prec (6 records)"``."""
        if self.kind == "run":
            return f"run {self.records[0][1].run_id} in {self.where.parent}"
        if self.kind == "repeats":
            return f"{count(len(self.records), 'run')} of the configuration of {self.spec} in {self.where.parent}"
        return f"{self.kind} {self.where} ({count(len(self.records), 'record')})"


def resolve(spec: str, results_dir: str | os.PathLike = "results", *, with_repeats: bool = False) -> Side:
    """The records ``spec`` names: a record file, a sweep or results folder (a path, or a sweep
    name inside ``results_dir``), or a run id (looked up in ``results_dir``'s index). Failed runs
    are left out (named in ``notes``). ``with_repeats``: a run stands for every record of its
    configuration (:func:`~e3bench.report.workload.record_key`) in its folder, its repeats. :class:`E3Error` naming ``spec``
    and how to list runs when it names nothing, or nothing successful."""
    root = Path(results_dir)
    path = Path(spec)
    if path.is_file():
        return _run(spec, path, with_repeats)
    if path.is_dir():
        return _folder(spec, path)
    if os.sep not in spec and (root / spec).is_dir() and store.sweep_name_problem(spec) is None:
        return _folder(spec, root / spec)
    found = _find_run(spec, root)
    if found is None:
        raise E3Error(f"no run, sweep or results folder named '{spec}' (no such file or folder, no sweep "
                      f"'{spec}' in {root}, no run with that id in {root})",
                      f"list runs with `e3bench ls {root}` (first column: run id), or pass a record's .json "
                      "path, a sweep folder or a results folder; other results: --results-dir DIR")  # fmt: skip
    return _run(spec, found, with_repeats)


def _run(spec: str, path: Path, with_repeats: bool) -> Side:
    """One run's record, or (``with_repeats``) every record of its configuration beside it."""
    rec = store.load(path)
    if not with_repeats:
        return _side(spec, "run", path, [(path, rec)])
    key = record_key(rec)
    same = [(p, r) for p, r in store.scan(path.parent).records if record_key(r) == key and p.parent == path.parent]
    return _side(spec, "repeats", path, same)


def _folder(spec: str, folder: Path) -> Side:
    """A sweep folder (records right inside it) or a results folder (sweeps inside it)."""
    found = store.scan(folder)
    if not found.records and found.problems:
        raise store.no_results_error(folder, found.problems)
    kind = "sweep" if any(p.parent == folder for p, _ in found.records) else "folder"
    side = _side(spec, kind, folder, found.records)
    side.notes += [f"skipped {p}" for p in found.problems]
    return side


def _side(spec: str, kind: str, where: Path, records: list[tuple[Path, ResultRecord]]) -> Side:
    ok = [(p, r) for p, r in records if r.status == "ok" and r.efficiency is not None]
    notes = [f"left out failed run {r.run_id} ({p.name}): {r.error}" for p, r in records if r.status != "ok"]
    if not ok:
        one = len(records) == 1
        why = (f"its {count(len(records), 'record')} {'is of a failed run' if one else 'are of failed runs'}"
               if records else "it holds no e3bench records")  # fmt: skip
        raise E3Error(f"nothing to compare in '{spec}' ({where}): {why}",
                      f"pass a successful run, sweep or results folder (list them with `e3bench ls {where}`)")  # fmt: skip
    return Side(spec, kind, where, ok, notes)


def _find_run(run_id: str, root: Path) -> Path | None:
    """The record file of run ``run_id`` under ``root``: ``<sweep>/<run_id>.json`` for a single
    run, else the index's row (sweeps name records by config hash). None when there is none."""
    if component_problem(run_id) is not None or not root.is_dir():
        return None
    direct = sorted(root.glob(f"*/{run_id}.json"))
    if direct:
        return direct[0]
    from e3bench.results.index import query

    try:
        rows = query(root, [f"run_id={run_id}"], ["sweep", "config_hash"])
    except E3Error:
        return None
    for r in rows:
        p = root / str(r["sweep"]) / f"{r['config_hash']}.json"
        if p.is_file():
            return p
    return None


@dataclass
class Config:
    """One configuration of a side: its records (repeats: one ``record_key``), the
    config they share, a label and the key configurations pair by."""

    label: str
    config: dict[str, Any]
    records: list[tuple[Path, ResultRecord]]
    #: ``field=value`` of the other config fields that tell it from a configuration of its
    #: side with the same identity and workload (``threads=2``); part of :meth:`key`
    extra: tuple[str, ...] = ()

    @property
    def model_name(self) -> str:
        """The model's name as the record gives it, last path part (the same model at two
        paths on two machines pairs)."""
        rec = self.records[0][1]
        return str(rec.model.name if rec.model else self.config.get("model")).rstrip("/").split("/")[-1]

    def key(self) -> tuple[str, ...]:
        """What pairs this configuration with one of the other side: identity and workload."""
        c = {**complete(self.config), **workload_values(self.config), "model": self.model_name}
        return tuple(_show(c.get(k)) for k in (*IDENTITY, *WORKLOAD_FIELDS)) + self.extra

    @property
    def run_ids(self) -> list[str]:
        """Run ids of the records, oldest first."""
        return [r.run_id for _, r in self.records]


def configurations(side: Side) -> list[Config]:
    """``side``'s records grouped by configuration (repeats together, oldest first; one
    :func:`~e3bench.report.workload.record_key`, so older records join new ones)."""
    groups: dict[str, list[tuple[Path, ResultRecord]]] = {}
    for p, r in sorted(side.records, key=lambda pr: pr[1].created_utc):
        groups.setdefault(record_key(r), []).append((p, r))
    out = []
    for recs in groups.values():
        rec = recs[-1][1]
        out.append(Config(config_label(rec.config, model_name=rec.model.name if rec.model else None), rec.config, recs))
    same: dict[tuple[str, ...], list[Config]] = {}
    for c in out:
        same.setdefault(c.key(), []).append(c)
    for group in (g for g in same.values() if len(g) > 1):
        full = [complete(c.config) for c in group]
        fields = sorted({k for f in full for k in f} - set(NOT_COMPARED))
        differ = [k for k in fields if len({_show(f.get(k)) for f in full}) > 1]
        for c, f in zip(group, full, strict=True):
            c.extra = tuple(f"{k}={_show(f.get(k))}" for k in differ)
            c.label += f" ({', '.join(c.extra)})"
    return out


def _show(v: Any) -> str:
    """A config value as text for keys and messages (lists comma-joined, dicts as JSON)."""
    if v is None:
        return "(none)"
    if isinstance(v, (list, tuple)):
        return ",".join(map(str, v)) or "(none)"
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True) if v else "(none)"
    return str(v)


def differences(a: dict[str, Any], b: dict[str, Any], fields: tuple[str, ...] | None = None) -> list[str]:
    """``"max_new_tokens 32 → 64"`` for every field (default: all but where results go) whose
    value differs between configs ``a`` and ``b``."""
    keys = fields or tuple(sorted((set(a) | set(b)) - set(NOT_COMPARED)))
    return [f"{k} {_show(a.get(k))} → {_show(b.get(k))}" for k in keys if _show(a.get(k)) != _show(b.get(k))]


def _workload_differences(a: Config, b: Config) -> list[str]:
    """How the workloads of ``a`` and ``b`` differ (:func:`differences` over their workload
    values); a side whose record lacks a field that defines its workload says so."""
    unknown = [f"{side}'s record lacks {', '.join(m)}: its workload is unknown"
               for side, c in (("A", a), ("B", b)) if (m := missing(c.config))]  # fmt: skip
    return unknown + differences(workload_values(a.config), workload_values(b.config), WORKLOAD_FIELDS)


@dataclass
class Pair:
    """Configuration ``a`` of side A against ``b`` of side B: what else differs between their
    configs (``differs``), their machines (``machines``) and warnings: a forced workload, and
    the warnings the runs themselves recorded (busy machine, cut by the time cap, …)."""

    a: Config
    b: Config
    differs: list[str] = field(default_factory=list)
    machines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        """``"A-label"`` when both share it, else ``"A-label → B-label"``."""
        return self.a.label if self.a.label == self.b.label else f"{self.a.label} → {self.b.label}"


@dataclass
class Pairing:
    """The pairs of A and B and what could not be paired (one line each, saying why)."""

    pairs: list[Pair]
    unpaired: list[str]


_MACHINE = ("cpu_model", "cpu_cores_logical", "e3bench_version", "git_sha", "hostname")


def _machines(a: ResultRecord, b: ResultRecord) -> list[str]:
    """How the machines and software of two records differ (CPU, GPUs, e3bench version)."""
    ma, mb = a.manifest, b.manifest
    out = [f"{k} {getattr(ma, k)} → {getattr(mb, k)}" for k in _MACHINE if getattr(ma, k) != getattr(mb, k)]
    ga, gb = [g.name for g in ma.gpus], [g.name for g in mb.gpus]
    if ga != gb:
        out.append(f"gpus {', '.join(ga) or '(none)'} → {', '.join(gb) or '(none)'}")
    return out


def pair(a: Side, b: Side, *, force: bool = False) -> Pairing:
    """Pair ``a``'s configurations with ``b``'s (see the module docstring). :class:`E3Error`
    when A and B are the same records, when nothing pairs, or (without ``force``) when a pair's
    workloads differ."""
    if {r.run_id for _, r in a.records} == {r.run_id for _, r in b.records}:
        raise E3Error(f"A and B are the same {count(len(a.records), 'record')} ('{a.spec}' and '{b.spec}'): comparing "
                      "something with itself says nothing",
                      "compare two different runs, sweeps or folders (two repeats of one configuration are two runs)")  # fmt: skip
    ca, cb = configurations(a), configurations(b)
    unpaired: list[str] = []
    if len(ca) == 1 and len(cb) == 1:
        matches = [(ca[0], cb[0])]
    else:
        by_key = {c.key(): c for c in cb}
        matches = [(x, by_key[x.key()]) for x in ca if x.key() in by_key]
        taken_a = {id(x) for x, _ in matches}
        taken_b = {id(y) for _, y in matches}
        rest_a = [x for x in ca if id(x) not in taken_a]
        rest_b = [y for y in cb if id(y) not in taken_b]
        for x in rest_a:
            twin = [y for y in rest_b if y.key()[: len(IDENTITY)] == x.key()[: len(IDENTITY)]]
            if len(twin) == 1 and force:
                matches.append((x, twin[0]))
                rest_b.remove(twin[0])
            elif len(twin) == 1:
                unpaired.append(f"{x.label}: B runs it with another workload "
                                f"({'; '.join(_workload_differences(x, twin[0]))}; --force pairs them)")  # fmt: skip
                rest_b.remove(twin[0])
            else:
                unpaired.append(f"{x.label}: only in A")
        unpaired += [f"{y.label}: only in B" for y in rest_b]
    pairs: list[Pair] = []
    for x, y in matches:
        if x.run_ids == y.run_ids:
            unpaired.append(f"{x.label}: the same records on both sides (not compared with itself)")
            continue
        p = Pair(x, y, differences(complete(x.config), complete(y.config)), _machines(x.records[-1][1], y.records[-1][1]))
        work = _workload_differences(x, y)
        if work and not force:
            raise E3Error(f"A and B measure different workloads ({p.label}: {'; '.join(work)}): their figures "
                          "are not comparable", "compare runs of one workload, or pass --force to compare anyway")  # fmt: skip
        p.warnings += [f"different workloads, compared because of --force: {w}" for w in work]
        shared = sorted(set(x.run_ids) & set(y.run_ids))
        if shared:
            p.warnings.append(f"{count(len(shared), 'run')} on both sides ({', '.join(shared)}): the difference is understated")
        for side, c in (("A", x), ("B", y)):
            seen = dict.fromkeys(w for _, r in c.records for w in run_warnings(r))
            p.warnings += [f"{side}: {w}" for w in seen]
        pairs.append(p)
    if not pairs:
        raise E3Error(f"nothing to compare: no configuration of '{a.spec}' pairs with one of '{b.spec}' "
                      f"({'; '.join(unpaired)})",
                      "configurations pair when model, backend, options, dtype, device and workload agree; "
                      "compare two single runs to compare anything else")  # fmt: skip
    return Pairing(pairs, unpaired)
