"""The one gradient step of fine-tuning and the training suite, and what both loops need
around it: the divergence guard, evaluation segments and the training-loss curve.

A step is: forward under autocast → divergence check → scaled backward → unscale every part
of the optimizer → gradient norm (clipped when asked) → optimizer step through the grad scaler
→ scaler update → learning-rate schedulers → ``zero_grad`` → device sync → clock. Its time runs
from the end of the previous step (or :meth:`TrainStep.start_clock`), so fetching the batch
counts as training time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from e3bench.core.timing import clock
from e3bench.train.shared import device as dev
from e3bench.train.shared import optim

T = TypeVar("T")


class Diverged(Exception):
    """Training left the sane range (loss or gradient not finite, or loss exploded)."""


def check_loss(value: float, step: int, reference: float | None, factor: float, what: str = "the initial loss") -> None:
    """Raise :class:`Diverged` when the training loss is not finite, or above ``factor`` ×
    ``reference`` (``None`` before the reference exists: only finiteness is checked)."""
    if not math.isfinite(value):
        raise Diverged(f"training loss became {value} at step {step}")
    if reference is not None and value > factor * reference:
        raise Diverged(f"training loss {value:.3g} at step {step} exceeds {factor:g}× {what} {reference:.3g}")


@dataclass
class LossGuard:
    """Divergence check of the training loss: the first checked loss (raised to ``floor`` if
    given) becomes the reference; later losses above ``factor`` × reference diverge."""

    factor: float
    what: str = "the initial loss"
    reference: float | None = None

    def check(self, value: float, step: int, floor: float = 0.0) -> None:
        """Raise :class:`Diverged` (see :func:`check_loss`); set the reference on first use."""
        check_loss(value, step, self.reference, self.factor, self.what)
        if self.reference is None:
            self.reference = max(value, floor)


@dataclass
class StepResult(Generic[T]):
    """One step: the optimised loss (float), the global L2 gradient norm before clipping
    (``inf``/``nan`` possible under an fp16 grad scaler, which then skips the step), the step
    time in seconds, what the forward returned besides the loss, and the backward pass's time
    in seconds (device synchronised before and after it)."""

    loss: float
    grad_norm: float
    seconds: float
    output: T
    backward_s: float | None = None


class TrainStep:
    """One optimizer step for ``params`` with ``optimizer`` (a torch optimizer or a
    :class:`~e3bench.train.shared.optim.CombinedOptimizer`), its LambdaLR ``schedulers``,
    ``precision``'s autocast and grad scaler, gradient clipping at ``grad_clip`` (None: no
    clipping) and the divergence ``guard``."""

    def __init__(
        self,
        *,
        params: Sequence[Any],
        optimizer: Any,
        schedulers: Sequence[Any],
        device: str,
        precision: dev.Precision,
        grad_clip: float | None,
        guard: LossGuard,
    ) -> None:
        self.params = list(params)
        self.optimizer = optimizer
        self.schedulers = list(schedulers)
        self.device = device
        self.precision = precision
        self.grad_clip = grad_clip
        self.guard = guard
        self.scaler = dev.grad_scaler(device, precision)
        self._parts = optim.parts(optimizer)
        self._t_prev = clock()

    def start_clock(self) -> None:
        """Start timing the next step now (at the start of each training segment)."""
        self._t_prev = clock()

    def __call__(self, forward: Callable[[], tuple[Any, T]], *, step: int, loss_floor: float = 0.0) -> StepResult[T]:
        """Run ``forward()`` → ``(loss tensor, output)`` and one optimizer step on its loss.

        ``step`` is the 0-based step number (for messages); ``loss_floor`` the lowest
        divergence reference (see :class:`LossGuard`). Raises :class:`Diverged` for a
        non-finite or exploding loss, or a non-finite gradient norm without a grad scaler;
        the optimizer has not stepped then.
        """
        import torch

        with dev.autocast(self.device, self.precision):
            loss, output = forward()
        value = float(loss.detach())
        self.guard.check(value, step, loss_floor)
        dev.synchronize(self.device)
        t_bwd = clock()
        self.scaler.scale(loss).backward()
        dev.synchronize(self.device)
        backward_s = clock() - t_bwd
        for o in self._parts:
            self.scaler.unscale_(o)
        norm = float(torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip or float("inf")))
        if not math.isfinite(norm) and not self.scaler.is_enabled():
            raise Diverged(f"gradient norm became {norm} at step {step} (training loss {value:.3g})")
        for o in self._parts:
            self.scaler.step(o)
        self.scaler.update()
        for s in self.schedulers:
            s.step()
        self.optimizer.zero_grad(set_to_none=True)
        dev.synchronize(self.device)
        now = clock()
        seconds, self._t_prev = now - self._t_prev, now
        return StepResult(value, norm, seconds, output, backward_s)

    def state_dict(self) -> dict[str, Any]:
        """Grad-scaler and scheduler state (for checkpoints)."""
        return {"scaler": self.scaler.state_dict(), "schedulers": [s.state_dict() for s in self.schedulers]}

    def load_state_dict(self, state: dict[str, Any], *, step: int) -> None:
        """Restore :meth:`state_dict`; a state without schedulers (older checkpoints) moves
        the schedulers forward to ``step`` instead."""
        self.scaler.load_state_dict(state.get("scaler", {}))
        saved = state.get("schedulers")
        if saved is not None and len(saved) == len(self.schedulers):
            for s, st in zip(self.schedulers, saved, strict=True):
                s.load_state_dict(st)
            return
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "scheduler.step() before optimizer.step()"
            for s in self.schedulers:
                for _ in range(step):
                    s.step()


def segments(start: int, max_steps: int, every: int) -> Iterator[int]:
    """The step at which each training segment ends, from ``start``: the next multiple of
    ``every`` (where an evaluation follows), or ``max_steps``."""
    step = start
    while step < max_steps:
        step = min(max_steps, (step // every + 1) * every)
        yield step


@dataclass
class LossWindow:
    """The training-loss curve: the mean loss of the steps since the previous point, taken
    every ``every`` steps and at the end of each segment."""

    every: int = 5
    _values: list[float] = field(default_factory=list)

    def add(self, step: int, value: float, segment_end: int) -> float | None:
        """Add the loss of the step that brought the count to ``step``; return the window's
        mean when a point is due (``step`` a multiple of ``every`` or ``segment_end``)."""
        self._values.append(value)
        if step % self.every == 0 or step == segment_end:
            mean = sum(self._values) / len(self._values)
            self._values = []
            return mean
        return None


def stats(values):
    """``core.timing.summarize`` of the finite values when there are ≥ 2 of them, else None
    (with one sample the CI is NaN, which JSON stores as null and ``Stats`` then refuses)."""
    from e3bench.core.timing import summarize

    vals = [v for v in values if not math.isnan(v)]
    return summarize(vals) if len(vals) >= 2 else None
