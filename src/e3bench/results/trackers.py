"""Optional experiment trackers: log each stored run's config and metrics to W&B and/or MLflow.

Trackers only read the finished record (like the report); a tracker failure never loses the
record, it is reported as a warning. W&B honours ``WANDB_MODE=offline``; MLflow logs to
``MLFLOW_TRACKING_URI`` (default here: ``sqlite:///<output_dir>/mlflow.db``).

Trackers live in :data:`e3bench.core.registry.trackers`. A registered tracker (built-in, or
from the ``e3bench.trackers`` entry-point group) is a function
``log(record, *, project, group, output_dir) -> str`` returning one line saying what it logged;
it may raise (the failure becomes that tracker's line, the record is never lost).
Every run is logged under ``project`` (``"e3bench"``), grouped by its sweep name
(:func:`e3bench.sweep.finish.finish_run` is the one caller).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from e3bench.core.errors import E3Error, require
from e3bench.core.registry import trackers as _registry
from e3bench.results.schema import ResultRecord

#: the one project name every run is logged under (the sweep name is the group)
PROJECT = "e3bench"


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
    """The run's config as flat tracker parameters (lists joined by commas, None as ""), plus
    ``config_hash``, ``e3bench_version`` and ``cpu_model``."""
    p = {k: (",".join(map(str, v)) if isinstance(v, (list, tuple)) else v) for k, v in rec.config.items()}
    p["config_hash"] = rec.config_hash
    p["e3bench_version"] = rec.manifest.e3bench_version
    p["cpu_model"] = rec.manifest.cpu_model
    return {k: ("" if v is None else v) for k, v in p.items()}


def log_wandb(rec: ResultRecord, *, project: str, group: str, output_dir: str) -> str:
    """Log one record as a W&B run (name = run_id, group = sweep); ``WANDB_MODE`` is honoured."""
    wandb = require("wandb", "trackers", "W&B logging")
    run = wandb.init(project=project, group=group, name=rec.run_id, config=params_of(rec),
                     reinit="finish_previous")  # fmt: skip
    try:
        run.log(metrics_of(rec))
        return f"wandb run {run.id} ({os.environ.get('WANDB_MODE', 'online')})"
    finally:
        run.finish()


def log_mlflow(rec: ResultRecord, *, project: str, group: str, output_dir: str) -> str:
    """Log one record as an MLflow run in experiment ``project`` (tag ``sweep`` = group)."""
    mlflow = require("mlflow", "trackers", "MLflow logging")
    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(output_dir).resolve() / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(project)
    with mlflow.start_run(run_name=rec.run_id, tags={"sweep": group}) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in params_of(rec).items()})
        mlflow.log_metrics({k.replace("/", "."): v for k, v in metrics_of(rec).items()})
        return f"mlflow run {run.info.run_id} at {uri}"


_registry.builtin("wandb", "e3bench.results.trackers:log_wandb", extra="trackers", requires=("wandb",),
                  description="Weights & Biases (WANDB_MODE=offline works without a login)")  # fmt: skip
_registry.builtin("mlflow", "e3bench.results.trackers:log_mlflow", extra="trackers", requires=("mlflow",),
                  description="MLflow (MLFLOW_TRACKING_URI, default sqlite:///<output_dir>/mlflow.db)")  # fmt: skip


def log(
    rec: ResultRecord, names: tuple[str, ...], *, project: str = PROJECT, group: str = "runs",
    output_dir: str = "results",
) -> list[str]:  # fmt: skip
    """Log to each named tracker; returns one line per tracker (what was logged, or why not).

    Never raises: an unknown name, a missing package or a tracker's own failure becomes that
    tracker's ``"<name>: not logged — ..."`` line.
    """
    lines = []
    for n in names:
        try:
            fn = _registry.get(n)
            lines.append(fn(rec, project=project, group=group, output_dir=output_dir))
        except E3Error as exc:
            lines.append(f"{n}: not logged — {exc.one_line()}")
        except Exception as exc:  # noqa: BLE001 - a tracker must never lose a stored record
            lines.append(f"{n}: not logged — {type(exc).__name__}: {str(exc)[:200]}")
    return lines
