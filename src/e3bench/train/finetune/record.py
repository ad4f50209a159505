"""The record of a fine-tuning run (:class:`~e3bench.train.records.FinetuneRecord`): built from
the finished loop and the run's setup, with the time and energy to the target accuracy."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e3bench.core import ids
from e3bench.core.errors import E3Error
from e3bench.core.fmt import count
from e3bench.core.fsutil import atomic_write_text
from e3bench.train.finetune.loop import FinetuneLoop
from e3bench.train.finetune.model import Loaded
from e3bench.train.finetune.scorer import PROMPT_SUFFIX
from e3bench.train.finetune.state import TrainerState
from e3bench.train.records import EvalPoint, FinetuneRecord, MajorityMargin, MemoryFigures, TargetResult
from e3bench.train.shared.step import stats


@dataclass
class Setup:
    """What the run was set up with, for the record (seconds, counts of parameters)."""

    device: str
    precision_note: str
    manifest: Any
    warnings: list[str]
    loaded: Loaded
    load_s: float
    total_params: int
    trainable_params: int
    optimizer_detail: str
    checkpoint_dir: Path
    resumed_from: int | None


def build(loop: FinetuneLoop, setup: Setup, *, status: str, error: str | None, memory: MemoryFigures,
          duration_s: float) -> FinetuneRecord:  # fmt: skip
    """The run's record (energy figures of this session; cumulative ones are in ``evals``)."""
    cfg, st, ld, energy = loop.cfg, loop.state, setup.loaded, loop.energy
    train_fig = energy.summary("train", tokens=st.tokens - loop.session_start_tokens)
    if setup.resumed_from:
        note = f"this session only (resumed at step {setup.resumed_from}); cumulative figures are in evals"
        train_fig = train_fig.model_copy(update={"notes": [*train_fig.notes, note]})
    secs = st.train_time_s
    h = cfg.config_hash()
    evals = st.evals
    return FinetuneRecord(
        run_id=f"{ids.run_id(h)}-{cfg.label()}",
        created_utc=ids.utc_now_iso(),
        status=status,
        error=error,
        config=cfg.model_dump(mode="json") | {"effective_lr": cfg.effective_lr, "optimizer_detail": setup.optimizer_detail,
                                              "precision_used": setup.precision_note, "device_used": setup.device},
        config_hash=h,
        manifest=setup.manifest,
        model={"name": cfg.model, "path": ld.path, "architecture": ld.architecture, "model_type": ld.model_type,
               "parameters": setup.total_params, "trust_remote_code": cfg.trust_remote_code, "notes": ld.notes},
        method={"mode": ld.mode, "labels": ld.labels, "label_token_ids": ld.label_token_ids, "head": ld.head,
                "prompt_suffix": PROMPT_SUFFIX if ld.architecture != "encoder-only" and ld.mode == "labels" else None,
                "loss": "cross-entropy of the gold answer over the per-choice scores",
                "fine_tuning": cfg.mode},
        data=loop.data.info,
        trainable_parameters=setup.trainable_params,
        total_parameters=setup.total_params,
        trainable_fraction=setup.trainable_params / setup.total_params if setup.total_params else 0.0,
        steps=st.step,
        samples_seen=st.samples,
        tokens_seen=st.tokens,
        train_time_s=secs,
        train_tokens_per_s=st.tokens / secs if secs > 0 else 0.0,
        train_samples_per_s=st.samples / secs if secs > 0 else 0.0,
        step_time_ms=stats([t * 1e3 for t in loop.session_step_s[1:]]),
        load_time_s=setup.load_s,
        resumed_from_step=setup.resumed_from,
        train_loss_curve=list(st.loss_curve),
        evals=evals,
        final_accuracy=evals[-1].accuracy if evals else None,
        best_accuracy=max(e.accuracy for e in evals) if evals else None,
        vs_majority=margin_over_majority(evals[-1], loop.data.info["majority_class_accuracy"]) if evals else None,
        target=target_result(cfg.target_accuracy, evals, st),
        memory=memory,
        energy=energy.window_.run_info(),
        train_energy=train_fig,
        eval_energy=energy.summary("eval"),
        checkpoint_dir=str(setup.checkpoint_dir) if setup.checkpoint_dir.exists() else None,
        warnings=setup.warnings,
        duration_s=duration_s,
    )  # fmt: skip


def write(record: FinetuneRecord, output_dir: str | Path) -> Path:
    """Write ``<output_dir>/finetune/<run_id>.json``; raises :class:`E3Error` when not writable."""
    path = Path(output_dir) / "finetune" / f"{record.run_id}.json"
    try:
        atomic_write_text(path, record.model_dump_json(indent=1))
    except OSError as exc:
        raise E3Error(f"cannot write results to {path}: {exc.strerror}", "choose a writable --output-dir") from None
    return path


def target_result(target: float, evals: list[EvalPoint], st: TrainerState) -> TargetResult:
    """Time, energy, samples and tokens to the first evaluation with accuracy ≥ ``target``;
    when never reached, the best accuracy and the budget spent."""
    best = max(evals, key=lambda e: (e.accuracy, -e.step)) if evals else None
    hit = next((e for e in evals if e.accuracy >= target), None)
    res = TargetResult(
        target_accuracy=target,
        reached=hit is not None,
        best_accuracy=best.accuracy if best else 0.0,
        best_step=best.step if best else 0,
        budget_steps=st.step,
        budget_samples=st.samples,
        budget_tokens=st.tokens,
        budget_train_time_s=st.train_time_s,
        budget_energy_j=evals[-1].train_energy_j if evals else None,
    )
    if hit is not None:
        res.reached_at_step = hit.step
        res.time_to_target_s = hit.train_time_s
        res.wall_time_to_target_s = hit.wall_time_s
        res.energy_to_target_j = hit.train_energy_j
        res.energy_to_target_kwh = None if hit.train_energy_j is None else hit.train_energy_j / 3.6e6
        res.samples_to_target = hit.samples_seen
        res.tokens_to_target = hit.tokens_seen
        if hit.step == 0:
            res.note = "the model met the target before any training (step-0 evaluation)"
    else:
        res.note = (
            f"target {target:.3f} never reached in {count(st.step, 'step')}; best {res.best_accuracy:.3f} at step "
            f"{res.best_step}. Budget spent: {st.train_time_s:.1f} s training"
            + (f", {res.budget_energy_j:.1f} J" if res.budget_energy_j is not None else "")
        )
    return res


def margin_over_majority(point: EvalPoint, majority: float) -> MajorityMargin:
    """``point``'s accuracy minus the majority-class rate of the same items, with the 95 %
    Wilson score interval of the accuracy (:func:`e3bench.core.timing.wilson_interval`) shifted
    by that fixed rate. The final evaluation is used, not the best one: picking the best of
    several evaluations on the same items would bias the margin upwards."""
    from e3bench.core.timing import wilson_interval

    low, high = wilson_interval(point.accuracy, point.n_items)
    return MajorityMargin(
        which=f"evaluation at step {point.step}", accuracy=point.accuracy, majority_class_accuracy=majority,
        n_items=point.n_items, margin=point.accuracy - majority, ci95_low=low - majority, ci95_high=high - majority,
        clear=low - majority > 0,
        method=f"95 % Wilson score interval of the accuracy over {point.n_items} held-out items, minus the "
               "majority-class rate of the same items (fixed by the items)",
    )  # fmt: skip
