"""Optimizers by name and their learning-rate schedule, for the training suite (and
``finetune --optimizer``).

* ``adamw``     — ``torch.optim.AdamW`` (the reference).
* ``muon``      — ``torch.optim.Muon`` (orthogonalised momentum via Newton–Schulz) for the 2-D
  *hidden* weight matrices; AdamW (or 8-bit AdamW with ``muon_aux = "adamw8bit"``) for
  embeddings, the output head, norms and biases, which Muon is not meant for. Muon's learning
  rate is rescaled with ``adjust_lr_fn="match_rms_adamw"`` so the AdamW ``lr`` carries over.
* ``adamw8bit`` — AdamW with block-wise 8-bit quantised moments: bitsandbytes (default; it has a
  CPU path since 0.45) or torchao (``impl = "torchao"``; compiles its kernels with
  ``torch.compile`` on first use — about a minute on CPU).
* ``galore``    — GaLore (galore-torch): gradients of hidden matrices projected to rank ``r``
  (SVD refreshed every ``update_proj_gap`` steps), Adam moments kept in the small space.
* ``muon8bit``  — Muon with its momentum block-quantised to 8 bits (:mod:`.muon8bit`) on hidden
  matrices, ``muon_aux`` for the rest; with ``galore2_projection = true`` the momentum lives in
  a GaLore 2 subspace (the ``full`` stack).
* ``galore2``   — GaLore 2 (:mod:`.galore2`: randomized-SVD subspace refresh, rank capped at
  ``galore_rank_cap`` × the smaller dimension) with AdamW moments, AdamW for the rest.

Weight decay applies to matrices only (not to norms and biases), for every optimizer.

The schedule (linear warm-up, then cosine or constant, :func:`lr_factor`) is applied by one
``torch.optim.lr_scheduler.LambdaLR`` per part of the optimizer (:func:`schedulers`), stepped
after every optimizer step.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

from e3bench.core.errors import E3Error, require, unknown_name

OPTIMIZERS: dict[str, str] = {
    "adamw": "torch.optim.AdamW",
    "muon": "torch.optim.Muon on 2-D hidden matrices + AdamW for the rest",
    "adamw8bit": "AdamW with 8-bit optimizer states (bitsandbytes or torchao)",
    "galore": "GaLore low-rank gradient projection (galore-torch) on hidden matrices + AdamW",
    "muon8bit": "Muon with 8-bit block-quantised momentum on 2-D hidden matrices + muon_aux for the rest",
    "galore2": "GaLore 2 (randomized-SVD projection, rank cap) AdamW on hidden matrices + AdamW",
}
EIGHT_BIT_IMPLS = ("bitsandbytes", "torchao")


def check_optimizer_name(name: str, where: str = "") -> None:
    """Raise :class:`E3Error` ("``where``unknown optimizer 'x'", did-you-mean or the list)
    unless ``name`` is one of :data:`OPTIMIZERS`."""
    if name in OPTIMIZERS:
        return
    err = unknown_name("optimizer", name, OPTIMIZERS, fix=f"use one of: {', '.join(OPTIMIZERS)}")
    raise E3Error(f"{where}{err.problem}", err.fix)


@dataclass(frozen=True)
class OptimSettings:
    """What :func:`build_optimizer` builds: the optimizer name, AdamW's hyper-parameters (also
    used for the AdamW part under Muon and GaLore) and the Muon / 8-bit / GaLore extras."""

    name: str = "adamw"
    lr: float = 3e-3
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    muon_lr: float | None = None  # None: same as lr (match_rms_adamw scaling)
    muon_momentum: float = 0.95
    muon_aux: str = "adamw"  # optimizer for non-matrix params under muon: adamw | adamw8bit
    impl: str = "bitsandbytes"  # 8-bit implementation
    galore_rank: int = 32
    galore_update_proj_gap: int = 50
    galore_scale: float = 0.25
    galore_rank_cap: float = 0.25
    galore_oversample: int = 8
    galore_power_iters: int = 2
    galore2_projection: bool = False  # muon8bit only: momentum in a GaLore 2 subspace
    muon_block_size: int = 256


class CombinedOptimizer:
    """Several optimizers stepping together (Muon + AdamW). Duck-types the parts of
    ``torch.optim.Optimizer`` that training loops, schedulers and checkpoints use."""

    def __init__(self, optimizers: list) -> None:
        self.optimizers = [o for o in optimizers if o is not None]

    @property
    def param_groups(self) -> list[dict]:
        """Every part's parameter groups, in part order."""
        return [g for o in self.optimizers for g in o.param_groups]

    @property
    def state(self) -> dict:
        """Every part's per-parameter state merged (parameters are disjoint across parts)."""
        out: dict = {}
        for o in self.optimizers:
            out.update(o.state)
        return out

    def step(self, closure=None):
        """Step every part (``closure`` is not supported and ignored, as Muon's step)."""
        for o in self.optimizers:
            o.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Zero (or drop) the gradients of every part."""
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        """``{"combined": [part.state_dict(), ...]}`` for checkpoints."""
        return {"combined": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` saved; E3Error when the number of parts differs."""
        parts = state["combined"]
        if len(parts) != len(self.optimizers):
            raise E3Error("checkpoint optimizer does not match this configuration", "start without --resume")
        for o, s in zip(self.optimizers, parts, strict=True):
            o.load_state_dict(s)


def parts(optimizer) -> list:
    """The torch optimizers inside ``optimizer`` (itself, or a :class:`CombinedOptimizer`'s)."""
    return list(getattr(optimizer, "optimizers", [optimizer]))


def split_params(named_params, exclude_ids: set[int]) -> tuple[list, list, list]:
    """(hidden matrices, other matrices (embeddings/head), vectors) — trainable params only."""
    hidden, other_mat, vectors = [], [], []
    seen: set[int] = set()
    for name, p in named_params:
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        if p.ndim >= 2:
            if id(p) in exclude_ids or "embed" in name or "lm_head" in name or "wte" in name:
                other_mat.append(p)
            else:
                hidden.append(p)
        else:
            vectors.append(p)
    return hidden, other_mat, vectors


def _quiet_bnb() -> None:
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


def _adamw8bit(groups: list[dict], s: OptimSettings, device: str):
    if s.impl not in EIGHT_BIT_IMPLS:
        raise E3Error(f"unknown 8-bit optimizer impl '{s.impl}'", f"use one of: {', '.join(EIGHT_BIT_IMPLS)}")
    if s.impl == "bitsandbytes":
        _quiet_bnb()
        bnb = require("bitsandbytes", "train", "the adamw8bit optimizer")
        return bnb.optim.AdamW8bit(groups, lr=s.lr, betas=s.betas, eps=s.eps)
    ao = require("torchao.optim", "train", "the adamw8bit optimizer (impl torchao)")
    return ao.AdamW8bit(groups, lr=s.lr, betas=s.betas, eps=s.eps)


def build_optimizer(named_params, s: OptimSettings, *, device: str = "cpu", exclude_ids: set[int] | None = None):
    """Return ``(optimizer, one-line description)`` for the trainable parameters of
    ``named_params`` (``(name, Parameter)`` pairs); ``exclude_ids`` are ids of 2-D parameters
    that are not hidden matrices (embeddings, output head) whatever their names.

    Raises :class:`E3Error` for an unknown name or a model without trainable parameters, and
    :class:`~e3bench.core.errors.MissingExtra` when the optimizer's library is not installed.
    """
    import torch

    check_optimizer_name(s.name)
    named_params = list(named_params)
    hidden, other_mat, vectors = split_params(named_params, exclude_ids or set())
    if not hidden + other_mat + vectors:
        raise E3Error("the model has no trainable parameters", "check the fine-tuning mode / LoRA targets")
    wd = s.weight_decay

    def groups(mats, vecs):
        out = []
        if mats:
            out.append({"params": mats, "weight_decay": wd})
        if vecs:
            out.append({"params": vecs, "weight_decay": 0.0})
        return out

    def n(ps) -> int:
        return sum(p.numel() for p in ps)

    if s.name == "adamw":
        opt = torch.optim.AdamW(groups(hidden + other_mat, vectors), lr=s.lr, betas=s.betas, eps=s.eps)
        detail = f"AdamW lr={s.lr:g} betas={s.betas} wd={wd:g} (matrices only)"
    elif s.name == "adamw8bit":
        opt = _adamw8bit(groups(hidden + other_mat, vectors), s, device)
        detail = f"AdamW8bit ({s.impl}) lr={s.lr:g} betas={s.betas} wd={wd:g}"
    elif s.name == "muon":
        if not hasattr(torch.optim, "Muon"):
            raise E3Error(
                f"torch {torch.__version__} has no torch.optim.Muon (added in torch 2.9)",
                "upgrade torch, or use another optimizer",
            )
        muon = None
        if hidden:
            muon = torch.optim.Muon(
                hidden, lr=s.muon_lr or s.lr, weight_decay=wd, momentum=s.muon_momentum,
                adjust_lr_fn="match_rms_adamw",
            )  # fmt: skip
        rest = groups(other_mat, vectors)
        if s.muon_aux == "adamw8bit":
            aux = _adamw8bit(rest, s, device) if rest else None
        elif s.muon_aux == "adamw":
            aux = torch.optim.AdamW(rest, lr=s.lr, betas=s.betas, eps=s.eps) if rest else None
        else:
            raise E3Error(f"unknown muon_aux optimizer '{s.muon_aux}'", "use adamw or adamw8bit")
        opt = CombinedOptimizer([muon, aux])
        detail = (
            f"Muon lr={s.muon_lr or s.lr:g} momentum={s.muon_momentum} (match_rms_adamw) on "
            f"{len(hidden)} hidden matrices ({n(hidden):,} params) + {s.muon_aux} on "
            f"{len(other_mat) + len(vectors)} others ({n(other_mat) + n(vectors):,} params)"
        )
    elif s.name == "muon8bit":
        from e3bench.train.shared.muon8bit import Muon8bit

        muon = None
        if hidden:
            group: dict = {"params": hidden}
            if s.galore2_projection:
                group.update(_galore2_keys(s))
            muon = Muon8bit([group], lr=s.muon_lr or s.lr, weight_decay=wd, momentum=s.muon_momentum,
                            adjust_lr_fn="match_rms_adamw", block_size=s.muon_block_size)  # fmt: skip
        rest = groups(other_mat, vectors)
        aux = None
        if rest:
            aux = _adamw8bit(rest, s, device) if s.muon_aux == "adamw8bit" else torch.optim.AdamW(
                rest, lr=s.lr, betas=s.betas, eps=s.eps)  # fmt: skip
        opt = CombinedOptimizer([muon, aux])
        proj = (f", momentum in a GaLore 2 subspace (rank {s.galore_rank} capped at {s.galore_rank_cap:g}× "
                f"min dim, refresh every {s.galore_update_proj_gap})") if s.galore2_projection else ""  # fmt: skip
        detail = (
            f"Muon8bit lr={s.muon_lr or s.lr:g} momentum={s.muon_momentum} (int8 blocks of {s.muon_block_size}{proj}) "
            f"on {len(hidden)} hidden matrices ({n(hidden):,} params) + {s.muon_aux} on "
            f"{len(other_mat) + len(vectors)} others ({n(other_mat) + n(vectors):,} params)"
        )
    elif s.name == "galore2":
        from e3bench.train.shared.galore2 import GaLore2AdamW

        gl = [{"params": hidden, "weight_decay": wd, **_galore2_keys(s)}] if hidden else []
        opt = GaLore2AdamW(gl + groups(other_mat, vectors), lr=s.lr, betas=s.betas, eps=s.eps)
        detail = (
            f"GaLore2AdamW rank={s.galore_rank} (capped at {s.galore_rank_cap:g}× min dim) randomized SVD "
            f"(oversample {s.galore_oversample}, {s.galore_power_iters} power iterations) refreshed every "
            f"{s.galore_update_proj_gap} steps, scale {s.galore_scale} on {len(hidden)} hidden matrices "
            f"({n(hidden):,} params); AdamW on the rest"
        )
    else:  # galore
        galore = require("galore_torch", "train", "the galore optimizer")
        gl = []
        if hidden:
            gl.append({
                "params": hidden, "rank": s.galore_rank, "update_proj_gap": s.galore_update_proj_gap,
                "scale": s.galore_scale, "proj_type": "std", "weight_decay": wd,
            })  # fmt: skip
        gl += groups(other_mat, vectors)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            opt = galore.GaLoreAdamW(gl, lr=s.lr, betas=s.betas, eps=s.eps, no_deprecation_warning=True)
        detail = (
            f"GaLoreAdamW rank={s.galore_rank} gap={s.galore_update_proj_gap} scale={s.galore_scale} on "
            f"{len(hidden)} hidden matrices ({n(hidden):,} params); AdamW on the rest"
        )
    return opt, detail


def _galore2_keys(s: OptimSettings) -> dict:
    return {
        "rank": s.galore_rank, "rank_cap": s.galore_rank_cap, "update_proj_gap": s.galore_update_proj_gap,
        "scale": s.galore_scale, "oversample": s.galore_oversample, "power_iters": s.galore_power_iters,
    }  # fmt: skip


def lr_factor(step: int, *, warmup_steps: int, total_steps: int, schedule: str = "cosine", min_ratio: float = 0.1) -> float:
    """The learning-rate multiplier before optimizer step ``step`` (0-based): linear warm-up
    over ``warmup_steps``, then cosine decay to ``min_ratio`` at ``total_steps`` (linear decay
    with ``schedule="linear"``; 1.0 with ``schedule="constant"``)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant" or total_steps <= warmup_steps:
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "linear":
        return min_ratio + (1 - min_ratio) * (1 - progress)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def schedulers(
    optimizer, *, warmup_steps: int, total_steps: int, schedule: str = "cosine", min_ratio: float = 0.1
) -> list:
    """One ``torch.optim.lr_scheduler.LambdaLR`` per part of ``optimizer`` with
    :func:`lr_factor` as its multiplier. Building them sets every group's learning rate to
    ``lr × lr_factor(0)``; call ``step()`` on each after every optimizer step."""
    from torch.optim.lr_scheduler import LambdaLR

    factor: Callable[[int], float] = functools.partial(
        lr_factor, warmup_steps=warmup_steps, total_steps=total_steps, schedule=schedule, min_ratio=min_ratio
    )
    return [LambdaLR(o, factor) for o in parts(optimizer)]
