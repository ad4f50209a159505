"""Stored records as flat rows: one row per (run, batch size), one row per (run, task, metric).

Units are in the column names. The one flattener behind the SQLite index (``e3bench ls``), CSV and
Parquet export, the report's ``runs.csv``/``tasks.csv`` and the experiment trackers' metrics. It
only reads records.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from e3bench.energy.accounting import EnergySummary
from e3bench.results.schema import ResultRecord

#: Columns of a run row, in table order. A run with no measurements (a failed run) still gets one
#: row, with ``None`` for everything it did not measure.
RUN_COLUMNS: tuple[str, ...] = (
    "run_id", "sweep", "status", "error", "config_hash", "model", "backend", "dtype", "device",
    "architecture", "parameters", "batch_size", "iterations", "load_time_s", "peak_rss_bytes",
    "peak_device_memory_bytes", "ttft_ms_mean", "ttft_ms_p50", "ttft_ms_p99", "tpot_ms_mean",
    "tpot_ms_p50", "itl_ms_p50", "itl_ms_p99", "e2e_ms_mean", "e2e_ms_p99", "prefill_tokens_per_s_mean",
    "decode_tokens_per_s_mean", "decode_tokens_per_s_ci95_low", "decode_tokens_per_s_ci95_high",
    "throughput_tokens_per_s", "roofline_fraction", "energy_method", "energy_sensor", "gross_energy_j",
    "net_energy_j", "mean_power_w", "energy_per_request_j", "ept_in_j_per_token", "ept_out_j_per_token",
    "ept_total_j_per_token", "tokens_per_j", "co2e_g", "created_utc",
)  # fmt: skip
#: Columns of a task row: one per (run, task, metric).
TASK_COLUMNS: tuple[str, ...] = ("run_id", "task", "metric", "value", "stderr", "n_items", "engine")


def _stat(stats: Any, key: str) -> float | None:
    return None if stats is None else getattr(stats, key)


def run_rows(rec: ResultRecord, sweep: str = "") -> list[dict[str, Any]]:
    """One dict per batch size measured (generation, then forward), keys exactly ``RUN_COLUMNS``.

    ``sweep`` names the folder the record was found in (default: the config's ``sweep``). A record
    without efficiency results (a failed run) gives one row of run facts.
    """
    cfg = rec.config
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
        "created_utc": rec.created_utc,
    }
    eff = rec.efficiency
    if eff is None:
        return [{c: base.get(c) for c in RUN_COLUMNS}]
    base.update(
        load_time_s=eff.load_time_s,
        peak_rss_bytes=eff.peak_rss_bytes,
        peak_device_memory_bytes=eff.peak_device_memory_bytes,
    )
    rows = []
    for g in eff.generation:
        rows.append({**base, **_energy(g.energy), **{
            "batch_size": g.batch_size, "iterations": g.iterations,
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
                     "e2e_ms_mean": f.latency_ms.mean, "e2e_ms_p99": f.latency_ms.p99})  # fmt: skip
    if not rows:
        rows.append(base)
    return [{c: r.get(c) for c in RUN_COLUMNS} for r in rows]


def _energy(e: EnergySummary | None) -> dict[str, Any]:
    if e is None:
        return {}
    return {
        "energy_method": e.method,
        "energy_sensor": e.sensor,
        **{k: getattr(e, k) for k in ("gross_energy_j", "net_energy_j", "mean_power_w", "energy_per_request_j",
                                 "ept_in_j_per_token", "ept_out_j_per_token", "ept_total_j_per_token",
                                 "tokens_per_j", "co2e_g")},  # fmt: skip
    }


def task_rows(rec: ResultRecord) -> list[dict[str, Any]]:
    """One dict per (task, metric) of the record, keys exactly ``TASK_COLUMNS``."""
    rows = []
    for t in rec.effectiveness:
        for metric, value in t.metrics.items():
            rows.append({"run_id": rec.run_id, "task": t.task, "metric": metric, "value": value,
                         "stderr": t.stderr.get(metric), "n_items": t.n_items, "engine": t.engine})  # fmt: skip
    return rows


def rows_of(found: Iterable[tuple[Path, ResultRecord]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(run rows, task rows) of ``(path, record)`` pairs as :func:`e3bench.results.store.scan`
    finds them; each run row's ``sweep`` is the folder its record file lies in."""
    runs: list[dict[str, Any]] = []
    tasks: list[dict[str, Any]] = []
    for path, rec in found:
        runs.extend(run_rows(rec, path.parent.name))
        tasks.extend(task_rows(rec))
    return runs, tasks
