"""Collider token filtering (Chai et al. 2025, "Enhancing Token Filtering Efficiency in LLM
Training with Collider", arXiv:2502.00340).

Token filtering drops *inconsequential* tokens from training. Dropping them from the loss alone
saves nothing: their activations still receive gradients through attention and every linear
layer still runs full-size weight-gradient GEMMs. Collider also filters the dropped tokens'
activations in the backward pass of every layer, and turns the resulting sparse GEMMs into
smaller dense GEMMs over the kept rows. This module does that for ``nn.Linear`` layers:

* **Score** (:func:`select_tokens`): the per-token next-token loss of the forward pass. A token
  is kept when its loss is at least ``threshold`` (tokens the model already predicts well are
  dropped), or — with ``sparsity`` — the share ``sparsity`` of tokens with the lowest loss in
  the batch is dropped. The loss is the mean over kept tokens (:func:`filtered_mean`).
* **Backward** (:class:`ColliderLinear`): the forward is the ordinary ``x @ Wᵀ + b`` for every
  token (the score needs the full forward). In the backward, with ``keep`` the kept token rows,
  ``dW = dY[keep]ᵀ @ X[keep]`` and ``dX[keep] = dY[keep] @ W`` — dense GEMMs of ``len(keep)``
  rows instead of all — and ``dX`` of dropped rows is zero: their activations are filtered
  from the backward pass of every layer below.

The filter is an approximation where tokens mix (attention): a kept token's gradient no longer
reaches a dropped token's hidden states. Without mixing (a per-token MLP) it is exactly the
gradient of the filtered loss; tests check both cases against dense references.

Usage: ``state = install(model)`` replaces every ``nn.Linear`` under the given modules; per
step, ``keep = select_tokens(per_token_loss, ...)``, ``state.keep = keep`` before ``backward``
and ``state.keep = None`` after (eval and non-filtered steps run dense).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class FilterState:
    """What the Collider layers of one model share: ``active`` (False: plain linear layers),
    ``keep`` (1-D long tensor of kept row
    indices into the flattened ``[batch × tokens]`` activations, or None: dense backward),
    ``rows`` (batch × tokens: a layer that sees another number of rows runs dense) and counters of the rows seen and kept by weight-gradient GEMMs (for the achieved sparsity)."""

    keep: Any = None
    active: bool = True
    rows: int = 0
    rows_total: int = 0
    rows_kept: int = 0
    layers: list[str] = field(default_factory=list)

    def set(self, mask) -> None:
        """Filter the backward pass by ``mask`` (``[batch, tokens]``, True = keep); None: dense."""
        if mask is None:
            self.keep, self.rows = None, 0
        else:
            self.keep, self.rows = keep_rows(mask), mask.numel()

    def gemm_sparsity(self) -> float | None:
        """Share of activation rows skipped by the backward GEMMs so far (None before any)."""
        return None if not self.rows_total else 1.0 - self.rows_kept / self.rows_total


def select_tokens(per_token_loss, *, threshold: float | None = None, sparsity: float | None = None):
    """Boolean mask (same shape as ``per_token_loss``) of the tokens to keep.

    ``threshold``: keep tokens whose loss ≥ threshold. ``sparsity``: drop the ``sparsity``
    share of tokens with the lowest loss (ties broken by position; at least one token kept).
    Exactly one of the two must be given."""
    import torch

    if (threshold is None) == (sparsity is None):
        raise ValueError("give exactly one of threshold and sparsity")
    loss = per_token_loss.detach()
    if threshold is not None:
        mask = loss >= threshold
        if not bool(mask.any()):  # never drop everything: keep the single hardest token
            mask = torch.zeros_like(loss, dtype=torch.bool)
            mask.view(-1)[int(loss.reshape(-1).argmax())] = True
        return mask
    n = loss.numel()
    n_keep = max(1, n - int(round(float(sparsity) * n)))
    idx = torch.topk(loss.reshape(-1).float(), n_keep, sorted=False).indices
    mask = torch.zeros(n, dtype=torch.bool, device=loss.device)
    mask[idx] = True
    return mask.view_as(loss)


def filtered_mean(per_token_loss, mask):
    """Mean of ``per_token_loss`` over the kept tokens (``mask`` True)."""
    m = mask.to(per_token_loss.dtype)
    return (per_token_loss * m).sum() / m.sum().clamp_min(1.0)


class _ColliderFn:
    """Namespace for the autograd Function (built lazily: torch is imported on first use)."""

    fn = None

    @classmethod
    def get(cls):
        if cls.fn is None:
            import torch

            class Fn(torch.autograd.Function):
                @staticmethod
                def forward(ctx, x, weight, bias, state):
                    ctx.state = state
                    ctx.has_bias = bias is not None
                    ctx.save_for_backward(x, weight)
                    return torch.nn.functional.linear(x, weight, bias)

                @staticmethod
                def backward(ctx, grad_out):
                    x, weight = ctx.saved_tensors
                    state = ctx.state
                    shape_in = x.shape
                    dy = grad_out.reshape(-1, grad_out.shape[-1])
                    xf = x.reshape(-1, x.shape[-1])
                    keep = state.keep
                    rows = dy.shape[0]
                    if keep is not None and (keep.numel() == rows or rows != state.rows):
                        keep = None  # nothing dropped, or not a [batch × tokens] activation
                    if keep is not None:
                        dy = dy.index_select(0, keep)
                        xf = xf.index_select(0, keep)
                    state.rows_total += rows
                    state.rows_kept += dy.shape[0]
                    dtype = dy.dtype
                    gx = gw = gb = None
                    if ctx.needs_input_grad[0]:
                        part = dy @ weight.to(dtype)
                        if keep is None:
                            gx = part.to(x.dtype).reshape(shape_in)
                        else:
                            gx = torch.zeros((rows, shape_in[-1]), dtype=x.dtype, device=x.device)
                            gx.index_copy_(0, keep, part.to(x.dtype))
                            gx = gx.reshape(shape_in)
                    if ctx.needs_input_grad[1]:
                        gw = (dy.t() @ xf.to(dtype)).to(weight.dtype)
                    if ctx.has_bias and ctx.needs_input_grad[2]:
                        gb = dy.sum(0)
                    return gx, gw, gb, None

            cls.fn = Fn
        return cls.fn


def _linear_module():
    import torch

    class ColliderLinear(torch.nn.Module):
        """An ``nn.Linear`` (same weight and bias Parameters) whose backward filters the rows
        not in ``state.keep`` (see the module docstring)."""

        def __init__(self, linear, state: FilterState) -> None:
            super().__init__()
            self.in_features, self.out_features = linear.in_features, linear.out_features
            self.weight = linear.weight
            self.bias = linear.bias
            self.state = state

        def forward(self, x):
            if not self.state.active or not torch.is_grad_enabled():
                return torch.nn.functional.linear(x, self.weight, self.bias)
            return _ColliderFn.get().apply(x, self.weight, self.bias, self.state)

        def extra_repr(self) -> str:
            return f"in_features={self.in_features}, out_features={self.out_features}, collider=True"

    return ColliderLinear


def install(*modules, state: FilterState | None = None) -> FilterState:
    """Replace every ``nn.Linear`` inside ``modules`` by a Collider linear layer sharing one
    :class:`FilterState` (returned). Parameters are the same objects, so optimizers and
    parameter names are unaffected. Raises ValueError when no linear layer is found."""
    import torch

    state = state or FilterState()
    cls = _linear_module()
    for root in modules:
        for name, parent in list(root.named_modules()):
            for child_name, child in list(parent.named_children()):
                if type(child) is torch.nn.Linear:
                    setattr(parent, child_name, cls(child, state))
                    state.layers.append(f"{name}.{child_name}" if name else child_name)
    if not state.layers:
        raise ValueError("no nn.Linear layer to filter")
    return state


def keep_rows(mask):
    """Row indices (1-D long) of the kept tokens of a ``[batch, tokens]`` mask, flattened."""
    return mask.reshape(-1).nonzero().squeeze(1)


def position_mask(mask, n: int):
    """The first ``n`` positions of each sequence of a ``[batch, tokens]`` mask (for a head that
    predicts further ahead and so has fewer positions)."""
    return mask[:, :n]
