"""Training results for ``e3bench report``: ``e3bench finetune`` records and ``e3bench train``
suites, as rows (CSV, Markdown, HTML).

The result store does not know training records: its scan hands over every JSON document with a
top-level ``kind`` unread, grouped by kind (:attr:`e3bench.results.store.Scan.others`). This
module is the one reader of the training kinds, and the report's only way into ``train``
(the dependency points report → train, never back). What it uses of ``train``:

* ``e3bench.train.records.FinetuneRecord`` (kind ``finetune``) and ``SuiteRecord`` (kind
  ``train-suite``): pydantic models, ``model_validate(parsed JSON)``;
* ``e3bench.train.suite.report.summary_rows(SuiteRecord) -> list[dict]``: one row per configuration
  with the keys of :data:`SUITE_COLUMNS` (less ``suite`` and ``device``);
* ``SuiteRecord.claims``: one dict per claim with the keys of :data:`CLAIM_COLUMNS` (less
  ``suite``), the verdicts of :func:`e3bench.train.shared.claims.judge`.

Like the rest of the report, this only reads stored records.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FINETUNE_COLUMNS = [
    "run_id", "model", "task", "mode", "status", "steps", "final_accuracy", "best_accuracy",
    "target_accuracy", "target_reached", "time_to_target_s", "energy_to_target_j", "train_tokens_per_s",
    "train_net_energy_j", "energy_method",
]  # fmt: skip
SUITE_COLUMNS = ["suite", "device", "config", "status", "final_val_loss", "delta", "tokens_per_s", "opt_state_kib",
                 "energy_j", "claims"]  # fmt: skip
#: ``reference``: the configuration compared with; ``bound``: "upper" when ``measured`` is an upper bound
CLAIM_COLUMNS = ["suite", "config", "metric", "claim", "reference", "measured", "bound", "uncertainty", "unit", "seeds",
                 "verdict", "why"]  # fmt: skip


@dataclass
class Training:
    """Rows of the training documents found (true when there is at least one row)."""

    finetune_rows: list[dict[str, Any]] = field(default_factory=list)
    suite_rows: list[dict[str, Any]] = field(default_factory=list)
    claim_rows: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.finetune_rows or self.suite_rows)

    def tables(self) -> list[tuple[str, list[dict[str, Any]], list[str]]]:
        """(heading, rows, columns) of the training tables for summary.md and the HTML: fine-tuning,
        suites, and the suites' claims when there are any."""
        out = [("Fine-tuning (e3bench finetune)", self.finetune_rows, FINETUNE_COLUMNS),
               ("Training-efficiency suites (e3bench train)", self.suite_rows, SUITE_COLUMNS)]  # fmt: skip
        if self.claim_rows:
            out.append(("Training-suite claims: SUPPORTED / NOT SUPPORTED / INCONCLUSIVE (e3bench train)",
                        self.claim_rows, CLAIM_COLUMNS))  # fmt: skip
        return out


def _finetune_row(rec) -> dict[str, Any]:
    t = rec.target
    e = rec.train_energy
    if t is not None and t.reached and not t.reached_at_step:  # met before training: no cost to the target
        t = t.model_copy(update={"time_to_target_s": None, "energy_to_target_j": None})
    return {
        "run_id": rec.run_id,
        "config_hash": rec.config_hash,
        "model": str(rec.model.get("name", rec.config.get("model"))).rstrip("/").split("/")[-1],  # as config_label
        "model_path": rec.config.get("model"),  # not a column: where report.architecture.mark_fixtures looks
        "task": rec.config.get("task"),
        "mode": rec.config.get("mode"),
        "status": rec.status,
        "steps": rec.steps,
        "final_accuracy": rec.final_accuracy,
        "best_accuracy": rec.best_accuracy,
        "target_accuracy": t.target_accuracy if t else None,
        "target_reached": (("before training" if not t.reached_at_step else True) if t.reached else False) if t else None,
        "time_to_target_s": t.time_to_target_s if t else None,
        "energy_to_target_j": t.energy_to_target_j if t else None,
        "train_tokens_per_s": rec.train_tokens_per_s,
        "train_net_energy_j": e.net_energy_j if e else None,
        "energy_method": f"{e.method}: {e.sensor}" if e else None,
    }


#: The document kinds this module reads.
TRAINING_KINDS = ("finetune", "train-suite")


def load_training(others: Mapping[str, list[tuple[Path, dict]]]) -> Training:
    """Rows from the finetune and train-suite documents a results scan found (``{kind: [(path,
    parsed JSON)]}``, other kinds ignored); a document that does not validate is listed in
    ``problems``, not fatal. Imports ``train`` only when there is a training document."""
    out = Training()
    docs = [(p, d, kind) for kind in TRAINING_KINDS for p, d in others.get(kind, [])]
    if not docs:
        return out
    from e3bench.train.records import FinetuneRecord, SuiteRecord
    from e3bench.train.suite.report import summary_rows

    for p, data, kind in sorted(docs, key=lambda x: x[0]):
        try:
            if kind == "finetune":
                out.finetune_rows.append(_finetune_row(FinetuneRecord.model_validate(data)))
            elif kind == "train-suite":
                suite = SuiteRecord.model_validate(data)
                for row in summary_rows(suite):
                    out.suite_rows.append({"suite": suite.suite_id, "device": suite.device, **row})
                for claim in suite.claims:
                    out.claim_rows.append({"suite": suite.suite_id, **{k: claim.get(k) for k in CLAIM_COLUMNS[1:]}})
        except ValueError as exc:
            out.problems.append(f"{p}: invalid {kind} record ({str(exc).splitlines()[0]})")
    return out
