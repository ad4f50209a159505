"""Fine-tuning checkpoints: trainable weights, optimizer, grad scaler and LR schedulers, torch's
RNG state and the :class:`~e3bench.train.finetune.state.TrainerState`, written into a fresh
directory that replaces the previous checkpoint only when complete
(:func:`e3bench.core.fsutil.atomic_dir`). LoRA runs also get a normal peft ``adapter/``.

A checkpoint folder is a file e3bench reads back, possibly after someone else put it there, so
:func:`load` never runs code from it: every ``.pt`` file is read with
``torch.load(weights_only=True)`` (tensors and plain data only; a pickle that names any other
Python callable is refused), only on a torch where that loader is safe (≥ 2.6), and every
problem — a refused, damaged, missing or mismatched file — is one
:class:`~e3bench.core.errors.E3Error` naming the file. The only non-plain object optimizers
keep (GaLore's projector) is saved as a plain dict and rebuilt from that dict on load.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

from e3bench.core.errors import E3Error
from e3bench.core.fsutil import atomic_dir
from e3bench.train.finetune.state import TrainerState

#: the tag of a GaLore projector saved as plain data
_PROJECTOR = "__e3bench_galore_projector__"


def exists(ckpt: Path) -> bool:
    """True when ``ckpt`` holds a checkpoint."""
    return (ckpt / "trainer_state.json").is_file()


def _plain(obj: Any) -> Any:
    """``obj`` with GaLore projectors replaced by tagged dicts of their attributes (tensors,
    numbers, strings), so ``torch.load(weights_only=True)`` reads it back."""
    if type(obj).__name__ == "GaLoreProjector" and type(obj).__module__.startswith("galore_torch"):
        return {_PROJECTOR: dict(vars(obj))}
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    return obj


def _restore(obj: Any) -> Any:
    """Undo :func:`_plain`: tagged dicts become GaLore projectors again (their class is
    imported by name from ``galore_torch``; no code from the file runs)."""
    if isinstance(obj, dict):
        if set(obj) == {_PROJECTOR}:
            from galore_torch.galore_projector import GaLoreProjector

            projector = GaLoreProjector.__new__(GaLoreProjector)
            projector.__dict__.update(obj[_PROJECTOR])
            return projector
        return {k: _restore(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_restore(v) for v in obj)
    return obj


def save(ckpt: Path, model, optimizer, step_state: dict[str, Any], state: TrainerState, *, peft_model: bool) -> None:
    """Write the checkpoint (see module doc); ``step_state`` is ``TrainStep.state_dict()``."""
    import torch

    with atomic_dir(ckpt) as tmp:
        trainable = {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}
        torch.save(trainable, tmp / "trainable_state.pt")
        torch.save(_plain(optimizer.state_dict()), tmp / "optimizer.pt")
        torch.save({**step_state, "torch_rng": torch.get_rng_state()}, tmp / "extra.pt")
        if peft_model:
            model.save_pretrained(tmp / "adapter")  # a normal peft adapter directory, for users
        (tmp / "trainer_state.json").write_text(json.dumps(state.to_json(), indent=1))


def _fix(ckpt: Path) -> str:
    return f"delete the checkpoint directory {ckpt}, or run without --resume"


def _read_pt(ckpt: Path, name: str) -> Any:
    """``torch.load(weights_only=True)`` of ``ckpt/name`` on the CPU, or one E3Error."""
    import torch

    path = ckpt / name
    if not path.is_file():
        raise E3Error(f"checkpoint {ckpt} is incomplete: {name} is missing", _fix(ckpt))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = (str(exc).splitlines() or [""])[0][:160]
        raise E3Error(
            f"{path} holds Python objects other than tensors and plain data; e3bench never runs code "
            f"from a checkpoint, so it was not loaded (torch.load weights_only=True: {first})",
            _fix(ckpt),
        ) from None
    except Exception as exc:  # noqa: BLE001 - truncated zips, bad magic numbers, I/O errors
        raise E3Error(f"{path} is damaged ({type(exc).__name__}: {str(exc)[:160]})", _fix(ckpt)) from None


def _read_state(ckpt: Path, expected_hash: str | None) -> TrainerState:
    path = ckpt / "trainer_state.json"
    try:
        state = TrainerState.from_json(json.loads(path.read_bytes()))
        ok = isinstance(state.step, int) and state.step >= 0 and isinstance(state.config_hash, str)
    except Exception as exc:  # noqa: BLE001 - not JSON, not an object, fields of the wrong types
        raise E3Error(f"{path} is damaged ({type(exc).__name__}: {str(exc)[:160]})", _fix(ckpt)) from None
    if not ok:
        raise E3Error(f"{path} is damaged (step {state.step!r})", _fix(ckpt))
    if expected_hash and state.config_hash and state.config_hash != expected_hash:
        raise E3Error(
            f"checkpoint {ckpt} was written by another configuration (hash {state.config_hash}, "
            f"this one is {expected_hash})",
            _fix(ckpt),
        )
    return state


def load(ckpt: Path, model, optimizer, *, expected_hash: str | None = None) -> tuple[TrainerState, dict[str, Any]]:
    """Load weights, optimizer state and torch's RNG state from ``ckpt``; return the trainer
    state and the step state for ``TrainStep.load_state_dict``.

    Raises :class:`E3Error` (nothing half-applied that matters: the run stops) when torch is
    older than 2.6, a file is missing, damaged or holds more than tensors and plain data, the
    trainer state names another configuration than ``expected_hash``, or the tensors do not
    match the model or the optimizer.
    """
    import torch

    from e3bench.backends.modelfiles import torch_load_is_safe

    if not torch_load_is_safe():
        raise E3Error(
            f"--resume reads pickle files, and torch {torch.__version__} cannot read them safely "
            "(weights_only=True can be bypassed before torch 2.6, CVE-2025-32434)",
            "upgrade torch to 2.6 or later, or run without --resume",
        )
    state = _read_state(ckpt, expected_hash)
    trainable = _read_pt(ckpt, "trainable_state.pt")
    opt_state = _restore(_read_pt(ckpt, "optimizer.pt"))
    extra = _read_pt(ckpt, "extra.pt")
    params = dict(model.named_parameters())
    if not isinstance(trainable, dict):
        raise E3Error(f"{ckpt / 'trainable_state.pt'} is damaged (not a dict of tensors)", _fix(ckpt))
    missing = [n for n in trainable if n not in params]
    if missing:
        raise E3Error(
            f"checkpoint {ckpt} does not match the model ({len(missing)} unknown tensors, e.g. {missing[0]})",
            "delete the checkpoint directory or run without --resume",
        )
    wrong = [n for n, t in trainable.items() if not isinstance(t, torch.Tensor) or t.shape != params[n].shape]
    if wrong:
        raise E3Error(f"checkpoint {ckpt} does not match the model (tensor {wrong[0]} has another shape)", _fix(ckpt))
    rng = extra.get("torch_rng") if isinstance(extra, dict) else None
    if not (isinstance(rng, torch.Tensor) and rng.dtype == torch.uint8):
        raise E3Error(f"{ckpt / 'extra.pt'} is damaged (no torch RNG state)", _fix(ckpt))
    with torch.no_grad():
        for n, t in trainable.items():
            params[n].copy_(t.to(params[n].device))
    try:
        optimizer.load_state_dict(opt_state)
    except E3Error:
        raise
    except Exception as exc:  # noqa: BLE001 - ValueError/KeyError/TypeError for another optimizer's state
        raise E3Error(
            f"{ckpt / 'optimizer.pt'} does not match this optimizer ({type(exc).__name__}: {str(exc)[:160]})", _fix(ckpt)
        ) from None
    torch.set_rng_state(extra.pop("torch_rng"))
    return state, extra
