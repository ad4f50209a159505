"""Training results for ``e3bench report``: ``e3bench finetune`` records and ``e3bench train``
suites found by the report's one scan of the results directory, as rows (CSV, Markdown, HTML).

Like the rest of the report, this only reads stored records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FINETUNE_COLUMNS = [
    "run_id", "model", "task", "mode", "status", "steps", "final_accuracy", "best_accuracy",
    "target_accuracy", "target_reached", "time_to_target_s", "energy_to_target_j", "train_tokens_per_s",
    "train_net_energy_j", "energy_method",
]  # fmt: skip
SUITE_COLUMNS = ["suite", "device", "config", "status", "final_val_loss", "delta", "tokens_per_s", "opt_state_kib",
                 "energy_j"]  # fmt: skip


@dataclass
class Training:
    finetune_rows: list[dict[str, Any]] = field(default_factory=list)
    suite_rows: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.finetune_rows or self.suite_rows)


def _finetune_row(rec) -> dict[str, Any]:
    t = rec.target
    e = rec.train_energy
    return {
        "run_id": rec.run_id,
        "model": rec.model.get("name", rec.config.get("model")),
        "task": rec.config.get("task"),
        "mode": rec.config.get("mode"),
        "status": rec.status,
        "steps": rec.steps,
        "final_accuracy": rec.final_accuracy,
        "best_accuracy": rec.best_accuracy,
        "target_accuracy": t.target_accuracy if t else None,
        "target_reached": t.reached if t else None,
        "time_to_target_s": t.time_to_target_s if t else None,
        "energy_to_target_j": t.energy_to_target_j if t else None,
        "train_tokens_per_s": rec.train_tokens_per_s,
        "train_net_energy_j": e.net_energy_j if e else None,
        "energy_method": f"{e.method}: {e.sensor}" if e else None,
    }


def load_training(records: list[tuple[Path, dict]]) -> Training:
    """Rows from the finetune and train-suite records a results scan found (parsed JSON; a bad
    one is listed, not fatal)."""
    from e3bench.train.records import FinetuneRecord, SuiteRecord
    from e3bench.train.suite.report import summary_rows

    out = Training()
    for p, data in records:
        kind = data.get("kind")
        try:
            if kind == "finetune":
                out.finetune_rows.append(_finetune_row(FinetuneRecord.model_validate(data)))
            elif kind == "train-suite":
                suite = SuiteRecord.model_validate(data)
                for row in summary_rows(suite):
                    out.suite_rows.append({"suite": suite.suite_id, "device": suite.device, **row})
        except ValueError as exc:
            out.problems.append(f"{p}: invalid {kind} record ({str(exc).splitlines()[0]})")
    return out
