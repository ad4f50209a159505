"""The trainer state of a fine-tuning run: what a checkpoint saves and ``--resume`` continues.

Counts and times are cumulative over every session of the run (a resumed run continues
them). ``train_energy_j`` / ``train_energy_gross_j`` hold the energy of *earlier* sessions;
the current session's energy is added from its meter when a checkpoint or an evaluation point
is written.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from e3bench.train.records import EvalPoint


@dataclass
class TrainerState:
    """Where a fine-tuning run stands (see module doc). Seconds and joules."""

    config_hash: str = ""
    step: int = 0
    samples: int = 0
    tokens: int = 0
    train_time_s: float = 0.0
    wall_time_s: float = 0.0  # training + evaluations
    train_energy_j: float = 0.0  # earlier sessions, energy basis of the record (net when known)
    train_energy_gross_j: float = 0.0  # earlier sessions, gross
    evals: list[EvalPoint] = field(default_factory=list)
    loss_curve: list[tuple[int, float]] = field(default_factory=list)  # (step, mean loss)
    ref_loss: float | None = None  # the divergence reference
    energy_sensor: str | None = None  # the meter of the session that wrote the checkpoint

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``trainer_state.json`` of a checkpoint)."""
        d = dataclasses.asdict(self)
        d["evals"] = [e.model_dump(mode="json") for e in self.evals]
        d["loss_curve"] = [list(p) for p in self.loss_curve]
        return d

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainerState:
        """Read :meth:`to_json`'s output (unknown keys of older checkpoints are ignored)."""
        known = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in data.items() if k in known}
        kw["evals"] = [EvalPoint.model_validate(e) for e in kw.get("evals", [])]
        kw["loss_curve"] = [(int(s), float(v)) for s, v in kw.get("loss_curve", [])]
        return cls(**kw)
