"""``run_finetune``: set up (device, data, model, optimizer, energy), run the loop, write the
record. Top to bottom; the pieces live in the sibling modules."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from e3bench.core.progress import Reporter, as_reporter
from e3bench.core.timing import clock
from e3bench.train.finetune import checkpoint
from e3bench.train.finetune import record as rec
from e3bench.train.finetune.config import FinetuneConfig
from e3bench.train.finetune.data import TaskData, load_task_data
from e3bench.train.finetune.loop import FinetuneLoop
from e3bench.train.finetune.model import apply_lora, load_model
from e3bench.train.finetune.scorer import Scorer
from e3bench.train.finetune.state import TrainerState
from e3bench.train.records import FinetuneRecord
from e3bench.train.shared import device as dev
from e3bench.train.shared import optim
from e3bench.train.shared.energy import training_energy
from e3bench.train.shared.memory import MemoryTracker, enable_checkpointing
from e3bench.train.shared.step import Diverged, LossGuard, TrainStep

#: a :class:`~e3bench.core.progress.Reporter` (stages: load, training steps, evaluations) or a line callback
Progress = Reporter | Callable[[str], None]


def run_finetune(cfg: FinetuneConfig, *, resume: bool = False, progress: Progress | None = None) -> tuple[FinetuneRecord, Path]:
    """Fine-tune, evaluate periodically, checkpoint, and write the record. Returns (record,
    path of ``<output_dir>/finetune/<run_id>.json``).

    A diverging run is not an error: its record has status ``diverged``. Raises
    :class:`~e3bench.core.errors.E3Error` for bad input (unknown task, optimizer, region or
    model; unreadable data; LoRA targets that do not exist) before any training.
    """
    progress = as_reporter(progress)
    t_run = clock()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    optim.check_optimizer_name(cfg.optimizer, "--optimizer: ")
    from e3bench.energy import carbon

    carbon.lookup(cfg.region)
    dev.set_threads(cfg.threads)
    device = dev.resolve_device(cfg.device)
    prec = dev.resolve_precision(cfg.precision, device)
    data = load_task_data(cfg)
    progress(
        f"{cfg.task}: {data.info['n_train']} train / {data.info['n_eval']} eval items "
        f"(majority class {data.info['majority_class_accuracy']:.3f})"
    )
    manifest, warnings = _environment(cfg, device, data)

    dev.seed_everything(cfg.seed)
    t0 = clock()
    with progress.stage(f"loading {cfg.model} ({cfg.mode}, {device})", unit="steps"):
        ld = load_model(cfg, data, progress)
    model = ld.model
    if cfg.grad_checkpointing:
        enable_checkpointing(model)
    if cfg.mode == "lora":
        model = apply_lora(cfg, ld)
    model.to(device)
    load_s = clock() - t0
    total_params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    progress(
        f"{ld.architecture} {ld.model_type}: {total_params:,} params, {trainable:,} trainable "
        f"({cfg.mode}); {ld.mode} mode — {ld.head}; load {load_s:.1f} s"
    )
    settings = optim.OptimSettings(name=cfg.optimizer, lr=cfg.effective_lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.999))
    opt, opt_detail = optim.build_optimizer(model.named_parameters(), settings, device=device)
    step = TrainStep(
        params=[p for p in model.parameters() if p.requires_grad], optimizer=opt,
        schedulers=optim.schedulers(opt, warmup_steps=cfg.warmup_steps, total_steps=cfg.max_steps,
                                    schedule=cfg.lr_schedule, min_ratio=0.0 if cfg.lr_schedule == "linear" else 0.1),
        device=device, precision=prec, grad_clip=cfg.grad_clip,
        guard=LossGuard(cfg.diverge_factor, what="the initial"),
    )  # fmt: skip

    ckpt = Path(cfg.output_dir) / "finetune" / "checkpoints" / cfg.slug()
    state = TrainerState(config_hash=cfg.config_hash())
    resumed_from = None
    if resume:
        if checkpoint.exists(ckpt):
            state, step_state = checkpoint.load(ckpt, model, opt, expected_hash=cfg.config_hash())
            step.load_state_dict(step_state, step=state.step)
            resumed_from = state.step
            progress(f"resumed from {ckpt} at step {resumed_from}")
        else:
            warnings.append(f"--resume: no checkpoint at {ckpt}; started from scratch")
            progress(warnings[-1])

    energy = training_energy(
        cfg.meter, device=device, cpu_tdp_w=cfg.cpu_tdp_w, idle_seconds=cfg.idle_seconds,
        region=cfg.region, progress=progress,
    )  # fmt: skip
    try:  # the model and optimizer exist: idle is metered with them resident (energy.window)
        energy.measure_idle(f"model loaded on {device} ({cfg.mode}), optimizer built, before the first step", progress)
    except BaseException:
        energy.window_.close()
        raise
    if resumed_from and state.energy_sensor and state.energy_sensor != energy.window_.meter_reason:
        warnings.append("the checkpoint's energy came from a different meter; cumulative energy mixes sensors")
    try:
        loop = FinetuneLoop(
            cfg, data, model, Scorer(ld, cfg.max_seq_len, device), step, energy, state, progress,
            checkpoint_dir=ckpt, peft_model=cfg.mode == "lora",
        )  # fmt: skip
        status, error, memory = _train(loop, device, progress)
    finally:
        energy.window_.close()

    setup = rec.Setup(
        device=device, precision_note=prec.note, manifest=manifest, warnings=warnings, loaded=ld, load_s=load_s,
        total_params=total_params, trainable_params=trainable, optimizer_detail=opt_detail, checkpoint_dir=ckpt,
        resumed_from=resumed_from,
    )  # fmt: skip
    record = rec.build(loop, setup, status=status, error=error, memory=memory, duration_s=clock() - t_run)
    return record, rec.write(record, cfg.output_dir)


def _train(loop: FinetuneLoop, device: str, progress: Progress):
    """Run the loop with the memory tracker; return (status, error, memory figures)."""
    mem = MemoryTracker(device)
    mem.start()
    status, error = "ok", None
    loop.model.train()
    try:
        loop.run()
    except Diverged as exc:
        status, error = "diverged", str(exc)
        progress(f"diverged: {exc}; stopped")
    finally:
        memory = mem.stop()
    return status, error, memory


def _environment(cfg: FinetuneConfig, device: str, data: TaskData):
    """(manifest, warnings): the environment manifest, plus warnings about a busy CPU and a
    split of the evaluation data."""
    import torch

    from e3bench.bench import envinfo

    manifest = envinfo.collect(torch_threads=cfg.threads)
    manifest.torch_threads = torch.get_num_threads()
    warnings: list[str] = []
    busy = envinfo.busy_warning(manifest) if device == "cpu" else None
    if busy:
        warnings.append(busy)
    if data.info.get("split_note"):
        warnings.append(data.info["split_note"])
    return manifest, warnings
