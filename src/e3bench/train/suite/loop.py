"""Training one configuration of the suite: build the model and optimizer, train in segments
(one metered window each) with a validation evaluation after each segment, and fill the
:class:`~e3bench.train.records.ConfigResult`. Failures become the result's status.
"""

from __future__ import annotations

import math
import statistics
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e3bench.core.errors import E3Error, MissingExtra, install_hint
from e3bench.core.fmt import count
from e3bench.core.progress import Reporter, as_reporter
from e3bench.core.timing import clock
from e3bench.energy.window import EnergyTotals
from e3bench.train.records import ConfigResult, CurvePoint, GradNormStats
from e3bench.train.shared import device as dev
from e3bench.train.shared import optim
from e3bench.train.shared.memory import MemoryTracker, breakdown, optimizer_state_bytes
from e3bench.train.shared.usage import UsageSampler
from e3bench.train.shared.step import Diverged, LossGuard, LossWindow, TrainStep, segments, stats
from e3bench.train.suite.spec import TrainSpec

#: a :class:`~e3bench.core.progress.Reporter` (the steps are a stage) or a line callback
Progress = Reporter | Callable[[str], None]


def skip_reason(spec: TrainSpec, device: str) -> str | None:
    """Why a configuration cannot run here (found before any work), or None."""
    needs_8bit = spec.optim.name == "adamw8bit" or (spec.optim.name == "muon" and spec.optim.muon_aux == "adamw8bit")
    if needs_8bit and spec.optim.impl == "bitsandbytes":
        from importlib import metadata

        try:
            v = metadata.version("bitsandbytes")
        except metadata.PackageNotFoundError:
            return f"bitsandbytes is not installed ({install_hint('train')})"
        major, minor = (int(x) for x in v.split(".")[:2])
        if device == "cpu" and (major, minor) < (0, 45):
            return f"bitsandbytes {v} has no CPU optimizer kernels (CPU support arrived in 0.45)"
    return None


def run_config(
    spec: TrainSpec,
    tok,  # suite.data.TokenizedCorpus
    energy: EnergyTotals,
    *,
    device: str,
    progress: Progress,
    file: str | None = None,
) -> ConfigResult:
    """Train one configuration; never raises for training failures: a missing library gives
    status ``skipped``, an :class:`E3Error` or any other exception ``failed``, divergence
    ``diverged`` — each with the reason."""
    t_start = clock()
    res = ConfigResult(
        name=spec.name, file=file, description=spec.description, expected=spec.expected,
        status="ok", spec=spec.model_dump(mode="json"),
    )  # fmt: skip
    reason = skip_reason(spec, device)
    if reason:
        res.status, res.reason = "skipped", reason
        progress(f"[{spec.name}] skipped: {reason}")
        return res
    try:
        _train(spec, tok, energy, device=device, progress=progress, res=res)
    except MissingExtra as exc:
        res.status, res.reason = "skipped", exc.one_line()
        progress(f"[{spec.name}] skipped: {res.reason}")
    except E3Error as exc:
        res.status, res.reason = "failed", exc.one_line()
        progress(f"[{spec.name}] failed: {res.reason}")
    except Exception as exc:  # noqa: BLE001 - one broken config must not end the suite
        tb = traceback.extract_tb(exc.__traceback__)[-1]
        res.status = "failed"
        res.reason = f"{type(exc).__name__}: {exc} (at {Path(tb.filename).name}:{tb.lineno})"
        progress(f"[{spec.name}] failed: {res.reason}")
    res.duration_s = clock() - t_start
    return res


@dataclass
class GradNorms:
    """The global gradient norm of every step; a *spike* exceeds ``spike_factor`` × the median
    of the previous ``window`` finite norms; a step is *clipped* when its norm exceeds ``clip``."""

    spike_factor: float
    window: int
    clip: float | None
    norms: list[float] = field(default_factory=list)
    spikes: list[tuple[int, float]] = field(default_factory=list)
    clipped: int = 0

    def add(self, step: int, norm: float) -> None:
        """Add step ``step``'s norm (non-finite norms, skipped by an fp16 scaler, are ignored)."""
        if not math.isfinite(norm):
            return
        recent = self.norms[-self.window :]
        if len(recent) >= 3 and norm > self.spike_factor * statistics.median(recent):
            self.spikes.append((step, norm))
        self.norms.append(norm)
        if self.clip and norm > self.clip:
            self.clipped += 1

    def summary(self) -> GradNormStats:
        """The record's gradient-norm statistics (at most 50 spikes listed)."""
        return GradNormStats(
            stats=stats(self.norms), spike_factor=self.spike_factor, window=self.window,
            spikes=self.spikes[:50], clipped_steps=self.clipped, clip_threshold=self.clip,
        )  # fmt: skip


def _forward(lm, block):
    loss, main, aux = lm(block)
    return loss, (main, aux)


def _train(spec: TrainSpec, tok, energy: EnergyTotals, *, device: str, progress: Progress, res: ConfigResult) -> None:
    import torch

    from e3bench.train.suite import data
    from e3bench.train.suite.model import ModelSettings, build_model

    prec = dev.resolve_precision(spec.train.precision, device)
    dev.seed_everything(spec.train.seed)
    t = spec.train
    res.seed = t.seed
    lm = build_model(ModelSettings(**spec.model.model_dump()), tok.vocab_size, mtp_k=spec.mtp.k,
                     mtp_weight=spec.mtp.weight, seed=t.seed, collider_threshold=t.collider_threshold,
                     collider_sparsity=t.collider_sparsity)  # fmt: skip
    if spec.train.grad_checkpointing:
        lm.enable_gradient_checkpointing()
    lm.to(device).train()
    params = [p for p in lm.parameters() if p.requires_grad]
    res.parameters = sum(p.numel() for p in params)
    res.parameter_bytes = res.gradient_bytes = sum(p.numel() * p.element_size() for p in params)
    o = spec.optim
    settings = optim.OptimSettings(**{k: v for k, v in o.model_dump().items() if k in optim.OptimSettings.__dataclass_fields__})
    opt, res.optimizer_detail = optim.build_optimizer(lm.named_parameters(), settings, device=device, exclude_ids=lm.embedding_ids())
    res.optimizer = o.name
    steps = spec.train.max_steps
    step = TrainStep(
        params=params, optimizer=opt, device=device, precision=prec, grad_clip=o.grad_clip,
        schedulers=optim.schedulers(opt, warmup_steps=o.warmup_steps, total_steps=steps, schedule=o.schedule,
                                    min_ratio=o.min_lr_ratio),
        guard=LossGuard(spec.train.diverge_factor),
    )  # fmt: skip
    block_len, bs = spec.model.seq_len + 1, spec.data.batch_size
    loader = data.make_train_loader(
        tok.train_ids, block_len=block_len, batch_size=bs, steps=steps, seed=spec.train.seed,
        num_workers=spec.data.num_workers, prefetch_factor=spec.data.prefetch_factor,
        pin_memory=device.startswith("cuda"),
    )  # fmt: skip
    val = data.val_batches(tok.val_ids, block_len=block_len, batch_size=bs, n_batches=spec.train.eval_batches)
    tokens_per_step = bs * spec.model.seq_len
    bucket_train, bucket_eval = f"{spec.name}/train", f"{spec.name}/eval"
    energy.reset(bucket_train)
    energy.reset(bucket_eval)
    # idle with this configuration's model and optimizer resident (energy.window): per config
    energy.measure_idle(f"model of '{spec.name}' built on {device} with its optimizer, before the first step", progress)

    def evaluate() -> float:
        lm.eval()
        total = 0.0
        with energy.window(bucket_eval), torch.no_grad(), dev.autocast(device, prec):
            for b in val:
                _, main, _ = lm(b.to(device))
                total += float(main)
        lm.train()
        return total / len(val)

    mem = MemoryTracker(device)
    mem.start()
    usage = UsageSampler(device)
    usage.start()
    step_s: list[float] = []
    bwd_s: list[float] = []
    norms = GradNorms(spec.train.spike_factor, spec.train.spike_window, o.grad_clip)
    last_aux: float | None = None
    curve = LossWindow()
    v0 = evaluate()
    res.val_loss_curve.append(CurvePoint(step=0, tokens=0, loss=v0))
    progress(f"[{spec.name}] {res.parameters:,} params, {res.optimizer_detail}; val loss at start {v0:.3f}")
    it = None
    n = 0
    shown = as_reporter(progress).stage(f"[{spec.name}] training", total=steps, unit="steps")
    try:
        for seg_end in segments(0, steps, spec.train.eval_every):
            with energy.window(bucket_train):
                if it is None:
                    with data.quiet_worker_check():
                        it = iter(loader)  # worker start-up counts as training energy
                step.start_clock()
                while n < seg_end:
                    block = next(it).to(device, non_blocking=True)
                    r = step(lambda block=block: _forward(lm, block), step=n)
                    step_s.append(r.seconds)
                    if r.backward_s is not None:
                        bwd_s.append(r.backward_s)
                    norms.add(n, r.grad_norm)
                    main, aux = r.output
                    if aux is not None:
                        last_aux = float(aux.detach())
                    n += 1
                    mean = curve.add(n, float(main.detach()), seg_end)
                    if mean is not None:
                        res.train_loss_curve.append(CurvePoint(step=n, tokens=n * tokens_per_step, loss=mean))
                    shown.advance()
            v = evaluate()
            res.val_loss_curve.append(CurvePoint(step=n, tokens=n * tokens_per_step, loss=v))
            if not math.isfinite(v):
                raise Diverged(f"validation loss became {v} at step {n}")
            progress(
                f"[{spec.name}] step {n}/{steps}: train {res.train_loss_curve[-1].loss:.3f} val {v:.3f} "
                f"({tokens_per_step * len(step_s) / max(sum(step_s), 1e-9):,.0f} tok/s)"
            )
    except Diverged as exc:
        res.status, res.reason = "diverged", str(exc)
        progress(f"[{spec.name}] diverged: {exc}; stopped, continuing the suite")
    finally:
        shown.close()
        res.memory = mem.stop()
        res.gpu_utilization, res.load = usage.stop()
        del it
    _figures(res, spec, step_s, tokens_per_step, opt, norms, last_aux, energy)
    res.backward_time_ms = stats([s * 1e3 for s in bwd_s[1:]])
    res.collider = lm.collider_stats()
    res.memory_breakdown = breakdown(res.memory, device=device, weights=res.parameter_bytes or 0,
                                     gradients=res.gradient_bytes or 0, optimizer_state=res.optimizer_state_bytes or 0,
                                     allocated_start=mem.allocated_start)  # fmt: skip
    lo, hi = t.grad_norm_band
    ok = [n for n in norms.norms if lo <= n <= hi]
    res.grad_norm_band = {
        "band": [lo, hi], "steps": len(norms.norms), "share_in_band": len(ok) / len(norms.norms) if norms.norms else None,
        "below": sum(n < lo for n in norms.norms), "above": sum(n > hi for n in norms.norms),
        "spikes": len(norms.spikes), "method": "global L2 norm of all gradients before clipping, every step",
    }  # fmt: skip


def _figures(res: ConfigResult, spec: TrainSpec, step_s: list[float], tokens_per_step: int, opt: Any,
             norms: GradNorms, last_aux: float | None, energy: EnergyTotals) -> None:  # fmt: skip
    """Fill the result's speed, loss, optimizer-state, gradient and energy figures."""
    from e3bench.train.suite import data
    res.steps = len(step_s)
    res.tokens = res.steps * tokens_per_step
    res.train_time_s = sum(step_s)
    res.tokens_per_s = res.tokens / res.train_time_s if res.train_time_s > 0 else None
    res.step_time_ms = stats([s * 1e3 for s in step_s[1:]])
    if res.step_time_ms is not None and res.step_time_ms.p50 > 0:
        res.tokens_per_s_median_step = tokens_per_step / (res.step_time_ms.p50 / 1e3)
    res.optimizer_state_bytes = optimizer_state_bytes(opt)
    finite_val = [p.loss for p in res.val_loss_curve if math.isfinite(p.loss)]
    res.final_val_loss = res.val_loss_curve[-1].loss if res.val_loss_curve else None
    res.best_val_loss = min(finite_val) if finite_val else None
    res.final_train_loss = res.train_loss_curve[-1].loss if res.train_loss_curve else None
    res.mtp_aux_loss_final = last_aux
    res.grad_norm = norms.summary()
    res.train_energy = energy.summary(f"{spec.name}/train", tokens=res.tokens, samples=res.steps * spec.data.batch_size)
    res.eval_energy = energy.summary(f"{spec.name}/eval")
    if w := data.workers_warning(spec.data.num_workers):
        res.warnings.append(w)
    if spec.data.num_workers and res.train_energy.sensor == "tdp-model":
        res.warnings.append(
            "the estimate meter models this process's CPU time only: the DataLoader worker processes' "
            "CPU is not in the energy figure"
        )
    if norms.spikes:
        res.warnings.append(f"{count(len(norms.spikes), 'gradient-norm spike')} (> {spec.train.spike_factor:g}× recent median)")
