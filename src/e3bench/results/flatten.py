"""Stored records as flat rows: one row per (run, batch size), one row per (run, task, metric).

Units are in the column names. The one flattener behind the SQLite index (``e3bench ls``), CSV and
Parquet export, the report's ``runs.csv``/``tasks.csv`` and the experiment trackers' metrics. It
only reads records.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from e3bench.energy.accounting import EnergySummary, PerUnitEnergy
from e3bench.results.schema import ResultRecord

#: Columns of a run row, in table order. A run with no measurements (a failed run) still gets one
#: row, with ``None`` for everything it did not measure. Workload: ``prompt_source`` (synthetic or
#: the prompts file), ``prompt_tokens_per_request`` / ``new_tokens_per_request`` (measured means
#: per request), ``tasks``, ``limit``, ``num_fewshot`` (as configured). Energy per token names
#: its energy (``net`` of the idle baseline, or ``gross``) and the tokens it divides by, counted
#: over the whole metered window (``metered_input_tokens`` / ``metered_output_tokens``):
#: ``ept_<basis>_j_per_input_token``, ``ept_<basis>_j_per_output_token``,
#: ``ept_<basis>_j_per_token_in_out`` (input + output tokens) and its non-reciprocal companion
#: ``output_tokens_per_<basis>_j`` (output tokens only). ``energy_basis`` says which energy the
#: record's own headline figures use ("net", or "gross (<why no net>)").
RUN_COLUMNS: tuple[str, ...] = (
    "run_id", "sweep", "status", "error", "config_hash", "model", "backend", "dtype", "device",
    "architecture", "parameters", "prompt_source", "tasks", "limit", "num_fewshot", "batch_size",
    "iterations", "prompt_tokens_per_request", "new_tokens_per_request", "load_time_s", "peak_rss_bytes",
    "peak_device_memory_bytes", "ttft_ms_mean", "ttft_ms_p50", "ttft_ms_p99", "tpot_ms_mean",
    "tpot_ms_p50", "itl_ms_p50", "itl_ms_p99", "e2e_ms_mean", "e2e_ms_p99", "prefill_tokens_per_s_mean",
    "decode_tokens_per_s_mean", "decode_tokens_per_s_ci95_low", "decode_tokens_per_s_ci95_high",
    "throughput_tokens_per_s", "roofline_fraction", "energy_method", "energy_sensor", "energy_basis",
    "metered_input_tokens", "metered_output_tokens", "metered_requests", "gross_energy_j", "net_energy_j",
    "mean_power_w", "net_energy_per_request_j", "gross_energy_per_request_j", "ept_net_j_per_input_token",
    "ept_net_j_per_output_token", "ept_net_j_per_token_in_out", "output_tokens_per_net_j",
    "ept_gross_j_per_input_token", "ept_gross_j_per_output_token", "ept_gross_j_per_token_in_out",
    "output_tokens_per_gross_j", "gross_co2e_g", "net_co2e_g", "created_utc",
)  # fmt: skip
#: Columns of a task row: one per (run, task, metric).
TASK_COLUMNS: tuple[str, ...] = ("run_id", "task", "metric", "value", "stderr", "n_items", "engine")
#: Run columns of earlier versions and what replaced them: the old per-token columns followed the
#: record's basis (net when an idle baseline was subtracted, else gross) and did not say so.
RENAMED: dict[str, tuple[str, ...]] = {
    "ept_in_j_per_token": ("ept_net_j_per_input_token", "ept_gross_j_per_input_token"),
    "ept_out_j_per_token": ("ept_net_j_per_output_token", "ept_gross_j_per_output_token"),
    "ept_total_j_per_token": ("ept_net_j_per_token_in_out", "ept_gross_j_per_token_in_out"),
    "tokens_per_j": ("output_tokens_per_net_j", "output_tokens_per_gross_j"),
    "energy_per_request_j": ("net_energy_per_request_j", "gross_energy_per_request_j"),
    "co2e_g": ("gross_co2e_g", "net_co2e_g"),
}
#: What the per-token energy figures count, for printed labels (tables, summaries, plots).
PER_TOKEN_LABELS: dict[str, str] = {
    "ept_j_per_input_token": "J per input token",
    "ept_j_per_output_token": "J per output token",
    "ept_j_per_token_in_out": "J per token (input + output)",
    "output_tokens_per_j": "output tokens per J",
}


def _stat(stats: Any, key: str) -> float | None:
    return None if stats is None else getattr(stats, key)


def run_rows(rec: ResultRecord, sweep: str = "") -> list[dict[str, Any]]:
    """One dict per batch size measured (generation, then forward), keys exactly ``RUN_COLUMNS``.

    ``sweep`` names the folder the record was found in (default: the config's ``sweep``). A record
    without efficiency results (a failed run) gives one row of run facts.
    """
    cfg = rec.config
    tasks = cfg.get("tasks")
    base: dict[str, Any] = {
        "run_id": rec.run_id,
        "sweep": sweep or cfg.get("sweep", ""),
        "status": rec.status,
        "error": rec.error,
        "config_hash": rec.config_hash,
        "model": rec.model.name if rec.model else cfg.get("model"),
        "backend": cfg.get("backend"),
        "dtype": cfg.get("dtype"),
        "device": cfg.get("device"),
        "architecture": rec.model.architecture if rec.model else None,
        "parameters": rec.model.parameters if rec.model else None,
        "tasks": ",".join(map(str, tasks)) if isinstance(tasks, (list, tuple)) else tasks or None,
        "limit": cfg.get("limit"),
        "num_fewshot": cfg.get("num_fewshot"),
        "created_utc": rec.created_utc,
    }
    eff = rec.efficiency
    if eff is None:
        return [{c: base.get(c) for c in RUN_COLUMNS}]
    base.update(
        prompt_source=eff.prompt_source,
        load_time_s=eff.load_time_s,
        peak_rss_bytes=eff.peak_rss_bytes,
        peak_device_memory_bytes=eff.peak_device_memory_bytes,
    )
    rows = []
    for g in eff.generation:
        rows.append({**base, **_energy(g.energy), **{
            "batch_size": g.batch_size, "iterations": g.iterations,
            "prompt_tokens_per_request": g.input_tokens_per_request_mean,
            "new_tokens_per_request": g.output_tokens_per_request,
            "ttft_ms_mean": _stat(g.ttft_ms, "mean"), "ttft_ms_p50": _stat(g.ttft_ms, "p50"),
            "ttft_ms_p99": _stat(g.ttft_ms, "p99"), "tpot_ms_mean": _stat(g.tpot_ms, "mean"),
            "tpot_ms_p50": _stat(g.tpot_ms, "p50"), "itl_ms_p50": _stat(g.itl_ms, "p50"),
            "itl_ms_p99": _stat(g.itl_ms, "p99"), "e2e_ms_mean": _stat(g.e2e_ms, "mean"),
            "e2e_ms_p99": _stat(g.e2e_ms, "p99"),
            "prefill_tokens_per_s_mean": _stat(g.prefill_tokens_per_s, "mean"),
            "decode_tokens_per_s_mean": _stat(g.decode_tokens_per_s, "mean"),
            "decode_tokens_per_s_ci95_low": _stat(g.decode_tokens_per_s, "ci95_low"),
            "decode_tokens_per_s_ci95_high": _stat(g.decode_tokens_per_s, "ci95_high"),
            "throughput_tokens_per_s": g.throughput_tokens_per_s, "roofline_fraction": g.roofline_fraction,
        }})  # fmt: skip
    for f in eff.forward:
        rows.append({**base, **_energy(f.energy), "batch_size": f.batch_size, "iterations": f.iterations,
                     "prompt_tokens_per_request": f.input_tokens_per_request_mean, "new_tokens_per_request": 0,
                     "e2e_ms_mean": f.latency_ms.mean, "e2e_ms_p99": f.latency_ms.p99})  # fmt: skip
    if not rows:
        rows.append(base)
    return [{c: r.get(c) for c in RUN_COLUMNS} for r in rows]


def _per_unit(e: EnergySummary, basis: str) -> PerUnitEnergy:
    """``e``'s per-unit figures on ``basis`` ("net" / "gross"); records without the ``net`` /
    ``gross`` blocks carry them in the flat fields, on ``e.basis``."""
    block: PerUnitEnergy = getattr(e, basis)
    if block.energy_j is None and e.basis.split(" ")[0] == basis:
        return PerUnitEnergy(**{k: getattr(e, k, None) for k in PerUnitEnergy.model_fields})
    return block


def _energy(e: EnergySummary | None) -> dict[str, Any]:
    if e is None:
        return {}
    out: dict[str, Any] = {
        "energy_method": e.method, "energy_sensor": e.sensor, "energy_basis": e.basis,
        "metered_input_tokens": e.input_tokens, "metered_output_tokens": e.output_tokens,
        "metered_requests": e.requests, "gross_energy_j": e.gross_energy_j, "net_energy_j": e.net_energy_j,
        "mean_power_w": e.mean_power_w, "gross_co2e_g": e.co2e_g, "net_co2e_g": e.co2e_net_g,
    }  # fmt: skip
    for basis in ("net", "gross"):
        u = _per_unit(e, basis)
        out[f"{basis}_energy_per_request_j"] = u.energy_per_request_j
        out[f"ept_{basis}_j_per_input_token"] = u.ept_in_j_per_token
        out[f"ept_{basis}_j_per_output_token"] = u.ept_out_j_per_token
        out[f"ept_{basis}_j_per_token_in_out"] = u.ept_total_j_per_token
        out[f"output_tokens_per_{basis}_j"] = u.tokens_per_j
    return out


def task_rows(rec: ResultRecord) -> list[dict[str, Any]]:
    """One dict per (task, metric) of the record, keys exactly ``TASK_COLUMNS``."""
    rows = []
    for t in rec.effectiveness:
        for metric, value in t.metrics.items():
            rows.append({"run_id": rec.run_id, "task": t.task, "metric": metric, "value": value,
                         "stderr": t.stderr.get(metric), "n_items": t.n_items, "engine": t.engine})  # fmt: skip
    return rows


def metric_column(task: str, metric: str) -> str:
    """The run-table column of one task metric: ``<task>_<metric>`` with every run of characters
    other than letters, digits and ``_`` as one ``_`` (``hellaswag_acc_norm``,
    ``gsm8k_exact_match_strict_match``); its standard error is the same name + ``_stderr``."""
    return re.sub(r"[\W_]*\W[\W_]*", "_", f"{task}_{metric}").strip("_")


def metric_columns(tasks: Iterable[dict[str, Any]]) -> dict[str, tuple[str, str, str]]:
    """Task-metric columns of ``tasks`` (task rows) in first-seen order: column name →
    ``(task, metric, "value" | "stderr")``, each metric followed by its ``_stderr`` column."""
    out: dict[str, tuple[str, str, str]] = {}
    for t in tasks:
        name = metric_column(t["task"], t["metric"])
        if name not in out and name not in RUN_COLUMNS:
            out[name] = (t["task"], t["metric"], "value")
            out[name + "_stderr"] = (t["task"], t["metric"], "stderr")
    return out


def with_metrics(runs: list[dict[str, Any]], tasks: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """(columns, rows): the run rows with one column per task metric and one per its standard
    error (:func:`metric_columns`) after ``RUN_COLUMNS``; a run without that metric has None."""
    cols = metric_columns(tasks)
    by_run: dict[str, dict[str, Any]] = {}
    for t in tasks:
        got = by_run.setdefault(t["run_id"], {})
        name = metric_column(t["task"], t["metric"])
        got.setdefault(name, t["value"])
        got.setdefault(name + "_stderr", t["stderr"])
    rows = [{**r, **{c: by_run.get(r["run_id"], {}).get(c) for c in cols}} for r in runs]
    return [*RUN_COLUMNS, *cols], rows


def rows_of(found: Iterable[tuple[Path, ResultRecord]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(run rows, task rows) of ``(path, record)`` pairs as :func:`e3bench.results.store.scan`
    finds them; each run row's ``sweep`` is the folder its record file lies in."""
    runs: list[dict[str, Any]] = []
    tasks: list[dict[str, Any]] = []
    for path, rec in found:
        runs.extend(run_rows(rec, path.parent.name))
        tasks.extend(task_rows(rec))
    return runs, tasks
