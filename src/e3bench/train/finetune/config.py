"""What defines a fine-tuning run (:class:`FinetuneConfig`), validated when it is built."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from e3bench.core import ids

#: tasks with a built-in data mapping (``--task``); anything else comes from --train-file
FT_TASKS = ("boolq", "copa", "rte", "cb", "wic", "wsc", "multirc", "arc_easy", "openbookqa", "hellaswag")

#: the fields that define the checkpoint a ``--resume`` continues (and the config hash)
IDENTITY_FIELDS = (
    "model", "task", "train_file", "eval_file", "mode", "lora_r", "lora_alpha", "lora_dropout",
    "lora_targets", "optimizer", "weight_decay", "warmup_steps", "lr_schedule", "batch_size", "max_train_samples",
    "max_eval_samples", "max_seq_len", "grad_clip", "seed", "precision",
)  # fmt: skip


class FinetuneConfig(BaseModel):
    """Everything that defines a fine-tuning run. Fields in :meth:`identity` define the
    checkpoint a ``--resume`` continues (budgets, evaluation cadence and metering may change).

    Raises ``pydantic.ValidationError`` for out-of-range values.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    #: a built-in task (:data:`FT_TASKS`), or with ``train_file`` the name the user's data is
    #: recorded under — by default the file's stem, never a built-in name the data is not
    task: str = "boolq"
    train_file: str | None = None
    eval_file: str | None = None
    mode: Literal["lora", "full"] = "lora"
    lora_r: int = Field(8, ge=1)
    lora_alpha: int = Field(16, ge=1)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    lora_targets: tuple[str, ...] | None = None
    optimizer: str = "adamw"
    lr: float | None = Field(None, gt=0)  # default: 5e-4 LoRA, 5e-5 full
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(0, ge=0)
    #: after the warm-up: ``constant``, ``linear`` decay to 0 at ``max_steps`` (BERT's
    #: fine-tuning recipe) or ``cosine`` to 0.1. A decay spans this run's ``max_steps`` (the
    #: budget, not part of :meth:`identity`): extended by ``--resume --max-steps``, such a run
    #: continues on the new budget's schedule and differs from one run of that budget; the
    #: constant default keeps the two the same.
    lr_schedule: Literal["constant", "linear", "cosine"] = "constant"
    batch_size: int = Field(8, ge=1)
    max_steps: int = Field(100, ge=1)
    max_train_samples: int | None = Field(None, ge=1)
    max_eval_samples: int = Field(200, ge=1)
    eval_every: int = Field(20, ge=1)
    target_accuracy: float = Field(0.7, gt=0, le=1)
    max_seq_len: int = Field(256, ge=16)
    grad_clip: float | None = Field(1.0, gt=0)
    grad_checkpointing: bool = False
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    meter: str = "auto"
    idle_seconds: float = Field(2.0, ge=0)
    cpu_tdp_w: float | None = None
    region: str | None = None
    threads: int | None = None
    output_dir: str = "results"
    checkpoint_every: int | None = Field(None, ge=1)  # default: at every evaluation
    #: let the model folder's own Python code run (``--trust-remote-code``); off: such models are refused
    trust_remote_code: bool = False
    # diverged: loss not finite, or above diverge_factor × max(first loss, ln(number of choices))
    diverge_factor: float = Field(20.0, gt=1)

    @model_validator(mode="before")
    @classmethod
    def _task_of_a_file(cls, data: Any) -> Any:
        """No ``task`` with a ``train_file``: the file's stem (the record said 'boolq', the
        default, for anybody's data)."""
        if isinstance(data, dict) and data.get("task") is None:
            data = dict(data)
            train = data.get("train_file")
            data["task"] = Path(str(train)).stem if train else "boolq"
        return data

    @property
    def effective_lr(self) -> float:
        """``lr``, or the default: 5e-4 for LoRA, 5e-5 for full fine-tuning."""
        return self.lr if self.lr is not None else (5e-4 if self.mode == "lora" else 5e-5)

    def identity(self) -> dict[str, Any]:
        """The fields that define the training (not the budget), with the effective lr;
        ``trust_remote_code`` only when set (the model's own code may replace transformers'
        classes), so checkpoints made before the field existed keep their directory."""
        d = {k: getattr(self, k) for k in IDENTITY_FIELDS}
        d["lr"] = self.effective_lr
        if self.trust_remote_code:
            d["trust_remote_code"] = True
        return d

    def config_hash(self) -> str:
        """16 hex of :func:`e3bench.core.ids.stable_hash` over :meth:`identity`."""
        return ids.stable_hash(self.identity())

    def label(self) -> str:
        """``<model>-<task>-<mode>``, file-name safe (model names cut to 40 characters)."""
        name = Path(self.model).name if os.sep in self.model else self.model
        safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in name)[:40]
        return f"{safe}-{self.task}-{self.mode}"

    def slug(self) -> str:
        """``<label>-<10 hex of the config hash>``: the checkpoint directory's name."""
        return f"{self.label()}-{self.config_hash()[:10]}"
