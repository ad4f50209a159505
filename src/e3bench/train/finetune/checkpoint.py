"""Fine-tuning checkpoints: trainable weights, optimizer, grad scaler and LR schedulers, torch's
RNG state and the :class:`~e3bench.train.finetune.state.TrainerState`, written into a fresh
directory that replaces the previous checkpoint only when complete
(:func:`e3bench.core.fsutil.atomic_dir`). LoRA runs also get a normal peft ``adapter/``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from e3bench.core.errors import E3Error
from e3bench.core.fsutil import atomic_dir
from e3bench.train.finetune.state import TrainerState


def exists(ckpt: Path) -> bool:
    """True when ``ckpt`` holds a checkpoint."""
    return (ckpt / "trainer_state.json").is_file()


def save(ckpt: Path, model, optimizer, step_state: dict[str, Any], state: TrainerState, *, peft_model: bool) -> None:
    """Write the checkpoint (see module doc); ``step_state`` is ``TrainStep.state_dict()``."""
    import torch

    with atomic_dir(ckpt) as tmp:
        trainable = {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}
        torch.save(trainable, tmp / "trainable_state.pt")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save({**step_state, "torch_rng": torch.get_rng_state()}, tmp / "extra.pt")
        if peft_model:
            model.save_pretrained(tmp / "adapter")  # a normal peft adapter directory, for users
        (tmp / "trainer_state.json").write_text(json.dumps(state.to_json(), indent=1))


def load(ckpt: Path, model, optimizer) -> tuple[TrainerState, dict[str, Any]]:
    """Load weights, optimizer state and torch's RNG state from ``ckpt``; return the trainer
    state and the step state for ``TrainStep.load_state_dict``.

    Raises :class:`E3Error` when the checkpoint's tensors do not match the model.
    """
    import torch

    state = TrainerState.from_json(json.loads((ckpt / "trainer_state.json").read_text()))
    trainable = torch.load(ckpt / "trainable_state.pt", map_location="cpu")
    params = dict(model.named_parameters())
    missing = [n for n in trainable if n not in params]
    if missing:
        raise E3Error(
            f"checkpoint {ckpt} does not match the model ({len(missing)} unknown tensors, e.g. {missing[0]})",
            "delete the checkpoint directory or run without --resume",
        )
    with torch.no_grad():
        for n, t in trainable.items():
            params[n].copy_(t.to(params[n].device))
    optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", map_location="cpu", weights_only=False))
    extra = torch.load(ckpt / "extra.pt", map_location="cpu", weights_only=False)
    torch.set_rng_state(extra.pop("torch_rng"))
    return state, extra
