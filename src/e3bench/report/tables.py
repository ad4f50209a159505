"""Flat tables from stored records: one row per (run, batch size), units in column names.

Used by the SQLite index, CSV/Parquet export, `e3bench ls` and the report. Reads records only.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from e3bench.energy.accounting import EnergySummary
from e3bench.results.schema import ResultRecord

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
TASK_COLUMNS: tuple[str, ...] = ("run_id", "task", "metric", "value", "stderr", "n_items", "engine")


def _stat(stats: Any, key: str) -> float | None:
    return None if stats is None else getattr(stats, key)


def run_rows(rec: ResultRecord, sweep: str = "") -> list[dict[str, Any]]:
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
    rows = []
    for t in rec.effectiveness:
        for metric, value in t.metrics.items():
            rows.append({"run_id": rec.run_id, "task": t.task, "metric": metric, "value": value,
                         "stderr": t.stderr.get(metric), "n_items": t.n_items, "engine": t.engine})  # fmt: skip
    return rows


def to_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    return buf.getvalue()


def to_parquet(rows: Sequence[dict[str, Any]], columns: Sequence[str], path: Path) -> None:
    from e3bench.core.errors import require

    pa = require("pyarrow", "report", "Parquet export")
    import pyarrow.parquet as pq

    table = pa.table({c: [r.get(c) for r in rows] for c in columns})
    pq.write_table(table, path)


def fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)


def latex_table(rows: Iterable[dict[str, Any]], columns: Sequence[str], caption: str) -> str:
    def esc(s: str) -> str:
        return s.replace("\\", r"\textbackslash{}").replace("_", r"\_").replace("%", r"\%").replace("&", r"\&")

    out = [r"\begin{table}[t]", r"\centering", r"\small", r"\begin{tabular}{" + "l" * len(columns) + "}",
           r"\toprule", " & ".join(esc(c) for c in columns) + r" \\", r"\midrule"]  # fmt: skip
    for r in rows:
        out.append(" & ".join(esc(fmt(r.get(c))) for c in columns) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{esc(caption)}}}", r"\end{table}"]
    return "\n".join(out) + "\n"
