"""Optional experiment trackers: log each stored run's config and metrics to W&B and/or MLflow.

Trackers only read the finished record (like the report); a tracker failure never loses the
record, it is reported as a warning. W&B honours ``WANDB_MODE=offline``; MLflow logs to
``MLFLOW_TRACKING_URI`` (default here: ``sqlite:///<output_dir>/mlflow.db``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from e3bench.core.errors import E3Error, require
from e3bench.results.schema import ResultRecord

TRACKERS = ("wandb", "mlflow")


def metrics_of(rec: ResultRecord) -> dict[str, float]:
    """Flat numeric metrics with units in their names, e.g. ``bs1/decode_tokens_per_s_mean``."""
    from e3bench.results.flatten import run_rows

    out: dict[str, float] = {}
    for row in run_rows(rec):
        bs = row.get("batch_size")
        for k, v in row.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("batch_size",):
                out[f"bs{bs}/{k}" if bs is not None else k] = float(v)
    for t in rec.effectiveness:
        for m, v in t.metrics.items():
            out[f"task/{t.task}/{m}"] = float(v)
            if m in t.stderr:
                out[f"task/{t.task}/{m}_stderr"] = float(t.stderr[m])
    return out


def params_of(rec: ResultRecord) -> dict[str, Any]:
    p = {k: (",".join(map(str, v)) if isinstance(v, (list, tuple)) else v) for k, v in rec.config.items()}
    p["config_hash"] = rec.config_hash
    p["e3bench_version"] = rec.manifest.e3bench_version
    p["cpu_model"] = rec.manifest.cpu_model
    return {k: ("" if v is None else v) for k, v in p.items()}


def _wandb(rec: ResultRecord, project: str) -> str:
    wandb = require("wandb", "trackers", "W&B logging")
    run = wandb.init(project=project, name=rec.run_id, config=params_of(rec), reinit="finish_previous")
    try:
        run.log(metrics_of(rec))
        return f"wandb run {run.id} ({os.environ.get('WANDB_MODE', 'online')})"
    finally:
        run.finish()


def _mlflow(rec: ResultRecord, project: str, output_dir: str) -> str:
    mlflow = require("mlflow", "trackers", "MLflow logging")
    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(output_dir).resolve() / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(project)
    with mlflow.start_run(run_name=rec.run_id) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in params_of(rec).items()})
        mlflow.log_metrics({k.replace("/", ".") : v for k, v in metrics_of(rec).items()})
        return f"mlflow run {run.info.run_id} at {uri}"


def check(names: tuple[str, ...]) -> None:
    for n in names:
        if n not in TRACKERS:
            raise E3Error(f"unknown tracker '{n}'", f"use one or more of: {', '.join(TRACKERS)}")


def log(rec: ResultRecord, names: tuple[str, ...], *, project: str = "e3bench", output_dir: str = "results") -> list[str]:
    """Log to each tracker; returns one line per tracker (what was logged, or why it failed)."""
    lines = []
    for n in names:
        try:
            lines.append(_wandb(rec, project) if n == "wandb" else _mlflow(rec, project, output_dir))
        except E3Error as exc:
            lines.append(f"{n}: not logged — {exc.one_line()}")
        except Exception as exc:  # noqa: BLE001 - a tracker must never lose a stored record
            lines.append(f"{n}: not logged — {type(exc).__name__}: {str(exc)[:200]}")
    return lines
