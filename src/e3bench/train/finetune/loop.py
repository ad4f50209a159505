"""The fine-tuning loop: segments of training steps (one metered window each), an evaluation
on the held-out items after each segment, and a checkpoint when due.

Everything the loop changes lives in its :class:`~e3bench.train.finetune.state.TrainerState`.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e3bench.core.progress import Reporter, Stage
from e3bench.core.timing import clock
from e3bench.energy.window import EnergyTotals
from e3bench.train.finetune import checkpoint
from e3bench.train.finetune.config import FinetuneConfig
from e3bench.train.finetune.data import TaskData
from e3bench.train.finetune.scorer import Scorer
from e3bench.train.finetune.state import TrainerState
from e3bench.train.records import EvalPoint
from e3bench.train.shared import device as dev
from e3bench.train.shared.step import LossWindow, TrainStep, segments



@dataclass
class FinetuneLoop:
    """Trains ``model`` on ``data`` with ``step`` until ``cfg.max_steps``.

    ``energy`` is the run's energy buckets ("train", "eval"); checkpoints go to
    ``checkpoint_dir`` (with a peft adapter when ``peft_model``); ``session_step_s`` collects
    the seconds of every step of this session (not of earlier, resumed ones).
    """

    cfg: FinetuneConfig
    data: TaskData
    model: Any
    scorer: Scorer
    step: TrainStep
    energy: EnergyTotals
    state: TrainerState
    progress: Reporter  # notes (an evaluation's result), and stages: the training steps, each evaluation
    checkpoint_dir: Path
    peft_model: bool = False
    session_step_s: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._bs = min(self.cfg.batch_size, len(self.data.train))
        self._per_epoch = max(1, len(self.data.train) // self._bs)
        # evaluation order does not change accuracy; sorting by length keeps padding small
        self._eval_sorted = sorted(self.data.eval, key=lambda r: len(r["query"]) + max(len(c) for c in r["choices"]))
        self.session_start_tokens = self.state.tokens

    # ------------------------------------------------------------------------- pieces
    def batch(self, step: int) -> list[dict]:
        """The items of ``step``: a seeded shuffle per epoch, the same in a resumed run."""
        epoch, k = divmod(step, self._per_epoch)
        order = list(range(len(self.data.train)))
        random.Random(self.cfg.seed * 1000 + epoch).shuffle(order)
        return [self.data.train[i] for i in order[k * self._bs : (k + 1) * self._bs]]

    def _loss(self, rows: list[dict]):
        import torch

        scores, n_tok, gold = self.scorer.scores(self.model, rows)
        return torch.nn.functional.cross_entropy(scores, gold), n_tok

    def evaluate(self) -> tuple[float, float, float, dict[str, float]]:
        """(accuracy, mean cross-entropy, seconds, the task's other standard metrics: CB's
        macro-F1, MultiRC's F1a and EM, :func:`e3bench.evals.tasks.metrics.task_metrics`) on the
        held-out items, metered as "eval"."""
        import torch

        from e3bench.evals.tasks.metrics import task_metrics

        model = self.model
        model.eval()
        loss_sum, preds = 0.0, []
        n = max(self._bs, 16)
        shown = self.progress.stage(f"evaluating at step {self.state.step}", total=len(self._eval_sorted))
        if self.state.evals:  # the same items as the previous evaluation: its duration is the ETA
            shown.update(eta_s=self.state.evals[-1].eval_s)
        t = clock()
        with shown, self.energy.window("eval"), torch.no_grad(), dev.autocast(self.step.device, self.step.precision):
            for i in range(0, len(self._eval_sorted), n):
                rows = self._eval_sorted[i : i + n]
                scores, _, gold = self.scorer.scores(model, rows)
                loss_sum += float(torch.nn.functional.cross_entropy(scores, gold, reduction="sum"))
                preds.extend(int(p) for p in scores.argmax(-1).tolist())
                shown.advance(len(rows))
        model.train()
        scored = [{**r, "pred": p} for r, p in zip(self._eval_sorted, preds, strict=True)]
        correct = sum(int(r["pred"]) == int(r["gold"]) for r in scored)
        n_items = len(self.data.eval)
        return correct / n_items, loss_sum / n_items, clock() - t, task_metrics(self.cfg.task, scored)

    def train_energy(self) -> tuple[float | None, float | None]:
        """Cumulative training energy over all sessions (basis, gross), joules."""
        basis, gross = self.energy.total_j("train")
        st = self.state
        return (
            None if basis is None else st.train_energy_j + basis,
            None if gross is None else st.train_energy_gross_j + gross,
        )

    def record_eval(self) -> EvalPoint:
        """Evaluate and append the point (cumulative training figures) to the state."""
        st = self.state
        e_before = self.energy.total_j("eval")[0]
        acc, loss, eval_s, metrics = self.evaluate()
        e_after = self.energy.total_j("eval")[0]
        energy, gross = self.train_energy()
        point = EvalPoint(
            step=st.step, samples_seen=st.samples, tokens_seen=st.tokens,
            train_time_s=st.train_time_s, wall_time_s=st.wall_time_s + eval_s,
            train_energy_j=energy, train_energy_gross_j=gross,
            accuracy=acc, eval_loss=loss, n_items=len(self.data.eval), eval_s=eval_s,
            eval_energy_j=None if e_before is None or e_after is None else e_after - e_before, metrics=metrics,
        )  # fmt: skip
        st.wall_time_s += eval_s
        st.evals.append(point)
        extra = "".join(f", {k} {v:.3f}" for k, v in metrics.items())
        self.progress(
            f"step {point.step}: eval accuracy {acc:.3f}{extra} (loss {loss:.3f}), {point.tokens_seen:,} tokens, "
            f"{point.train_time_s:.1f} s training"
            + (f", {point.train_energy_j:.1f} J" if point.train_energy_j is not None else "")
        )
        return point

    def save_checkpoint(self) -> None:
        """Write the checkpoint: the state with this session's training energy added."""
        basis, gross = self.energy.total_j("train")  # this session
        st = self.state
        snap = dataclasses.replace(
            st, train_energy_j=st.train_energy_j + (basis or 0.0),
            train_energy_gross_j=st.train_energy_gross_j + (gross or 0.0),
            energy_sensor=self.energy.window_.meter_reason,
        )  # fmt: skip
        checkpoint.save(self.checkpoint_dir, self.model, self.step.optimizer, self.step.state_dict(), snap,
                        peft_model=self.peft_model)  # fmt: skip

    # --------------------------------------------------------------------------- run
    def run(self) -> None:
        """Evaluate at step 0 (unless resumed), then train segment by segment, evaluating after
        each and writing a checkpoint every ``checkpoint_every`` steps and at the end.

        Raises :class:`~e3bench.train.shared.step.Diverged` when training diverges.
        """
        cfg, st = self.cfg, self.state
        ck_every = cfg.checkpoint_every or cfg.eval_every
        if not st.evals:
            self.record_eval()
        self.step.guard.reference = st.ref_loss
        since = f" from step {st.step}" if st.step else ""  # resumed: the steps left
        with self.progress.stage(f"fine-tuning {cfg.model} ({cfg.mode}){since}", total=cfg.max_steps - st.step,
                                 unit="steps") as shown:  # fmt: skip
            self._segments(shown, ck_every)

    def _segments(self, shown: Stage, ck_every: int) -> None:
        cfg, st = self.cfg, self.state
        curve = LossWindow()
        for seg_end in segments(st.step, cfg.max_steps, cfg.eval_every):
            with self.energy.window("train"):
                self.step.start_clock()
                while st.step < seg_end:
                    rows = self.batch(st.step)
                    floor = math.log(max(2, max(len(r["choices"]) for r in rows)))
                    res = self.step(lambda rows=rows: self._loss(rows), step=st.step, loss_floor=floor)
                    self.session_step_s.append(res.seconds)
                    st.ref_loss = self.step.guard.reference
                    st.train_time_s += res.seconds
                    st.wall_time_s += res.seconds
                    st.step += 1
                    st.samples += len(rows)
                    st.tokens += res.output
                    mean = curve.add(st.step, res.loss, seg_end)
                    if mean is not None:
                        st.loss_curve.append((st.step, mean))
                    shown.advance()
                    self._eta(shown)
            paused = shown.clock()
            self.record_eval()
            if st.step % ck_every == 0 or st.step >= cfg.max_steps:
                self.save_checkpoint()
            shown.exclude(shown.clock() - paused)  # the steps' rate is the steps' own
            self._eta(shown)

    def _eta(self, shown: Stage) -> None:
        """The training stage's ETA: the steps left at the steps' own pace, plus the evaluations
        still to come at the last one's duration (the same items each time)."""
        cfg, st = self.cfg, self.state
        rate = shown.rate()
        if rate:
            done = st.evals[-1].step if st.evals else 0  # the evaluations after it are still to come
            evals = sum(1 for _ in segments(done, cfg.max_steps, cfg.eval_every))
            shown.update(eta_s=(cfg.max_steps - st.step) / rate + evals * (st.evals[-1].eval_s if st.evals else 0.0))
