"""8-bit Muon: ``torch.optim.Muon``'s update with its momentum buffer stored block-wise
quantised to 8 bits.

Libraries checked (2026-12): torchao 0.18 (``torchao.optim``: AdamW8bit/4bit/FP8 and the
``OptimState8bit`` tensor subclass; no Muon) and bitsandbytes 0.50 (8-bit Adam/AdamW/Lion/
RMSprop/SGD/AdEMAMix; no Muon) have no 8-bit Muon. torchao's ``OptimState8bit`` (dynamic-tree
code book, a 1 KiB code book per tensor) works as a storage building block on CPU, but one
quantise + dequantise of a 128×344 buffer took 24 ms here (an 8-step binary search per element),
too slow for a per-step update of every matrix on a CPU; so the quantiser is written here, small:

* **Storage**: per parameter, ``momentum_codes`` (int8, one per element) and ``momentum_scale``
  (fp32, one per block of ``block_size`` elements of the flattened buffer): symmetric linear
  (absmax) quantisation, ``value ≈ code × scale / 127``.
* **Step** (per hidden matrix, as ``torch.optim.Muon``): dequantise the momentum →
  ``m ← lerp(m, g, 1 − μ)`` → requantise; update ``u = lerp(g, m, μ)`` (Nesterov) or ``m``;
  orthogonalise ``u`` with the same Newton–Schulz iteration as torch; decoupled weight decay;
  step with torch's learning-rate adjustment (``adjust_lr_fn``).

GaLore 2 projection (the ``full`` stack): a parameter group with a ``rank`` key (and the
:class:`~e3bench.train.shared.galore2.Projector` keys ``rank_cap``, ``update_proj_gap``,
``scale``, ``oversample``, ``power_iters``) keeps its momentum in the rank-r subspace of the
gradient: project → momentum → Newton–Schulz on the low-rank update → project back.

With ``bits8=False`` the buffer stays fp32 and the optimizer reproduces ``torch.optim.Muon``
exactly (tested), so the only difference between the two is the storage.
"""

from __future__ import annotations

import functools

BLOCK_SIZE = 256


def quantize(x, block_size: int = BLOCK_SIZE):
    """``(codes int8 [x.numel()], scale fp32 [n_blocks])`` of ``x`` (any shape): symmetric
    block-wise absmax quantisation of the flattened values."""
    import torch

    flat = x.detach().reshape(-1).float()
    n = flat.numel()
    pad = (-n) % block_size
    if pad:
        flat = torch.nn.functional.pad(flat, (0, pad))
    blocks = flat.view(-1, block_size)
    scale = blocks.abs().amax(dim=1)
    codes = torch.round(blocks / scale.clamp_min(1e-30).unsqueeze(1) * 127).clamp_(-127, 127).to(torch.int8)
    return codes.reshape(-1)[:n].clone(), scale


def dequantize(codes, scale, shape, block_size: int = BLOCK_SIZE):
    """The fp32 tensor of ``shape`` that :func:`quantize` encoded."""
    import torch

    n = codes.numel()
    pad = (-n) % block_size
    c = codes.float()
    if pad:
        c = torch.nn.functional.pad(c, (0, pad))
    vals = c.view(-1, block_size) * (scale / 127).unsqueeze(1)
    return vals.reshape(-1)[:n].view(shape)


@functools.cache
def _muon_base():
    import torch

    class Muon8bit(torch.optim.Optimizer):
        """Muon for 2-D parameters with an 8-bit block-quantised momentum buffer (see the module
        docstring). Hyper-parameters as ``torch.optim.Muon``; ``bits8=False`` keeps fp32."""

        def __init__(
            self, params, lr: float = 1e-3, weight_decay: float = 0.1, momentum: float = 0.95,
            nesterov: bool = True, ns_steps: int = 5, eps: float = 1e-7,
            adjust_lr_fn: str | None = None, block_size: int = BLOCK_SIZE, bits8: bool = True,
        ) -> None:  # fmt: skip
            from torch.optim import _muon

            defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                            ns_steps=ns_steps, eps=eps, adjust_lr_fn=adjust_lr_fn,
                            ns_coefficients=(_muon.DEFAULT_A, _muon.DEFAULT_B, _muon.DEFAULT_C))  # fmt: skip
            super().__init__(params, defaults)
            self.block_size = block_size
            self.bits8 = bits8
            for g in self.param_groups:
                for p in g["params"]:
                    if p.ndim != 2:
                        raise ValueError(f"Muon8bit takes 2-D parameters only, got shape {tuple(p.shape)}")

        @torch.no_grad()
        def step(self, closure=None):
            """One update of every parameter with a gradient (``closure`` is not supported)."""
            from torch.optim import _muon

            from e3bench.train.shared import galore2

            for gi, g in enumerate(self.param_groups):
                mu, lr, wd = g["momentum"], float(g["lr"]), g["weight_decay"]
                for pi, p in enumerate(g["params"]):
                    if p.grad is None:
                        continue
                    grad = p.grad.float()
                    st = self.state[p]
                    if "rank" in g:
                        if "projector" not in st:
                            st["rank"] = r = galore2.effective_rank(p.shape, g["rank"], g.get("rank_cap", 0.5))
                            st["step"] = 0
                            st["projector"] = galore2.Projector(
                                r, g.get("update_proj_gap", 200), scale=g.get("scale", 1.0),
                                oversample=g.get("oversample", 8), power_iters=g.get("power_iters", 2),
                                seed=1000 * gi + pi,
                            )  # fmt: skip
                        grad = st["projector"].project(grad, st["step"])
                        st["step"] += 1
                    if "momentum_codes" not in st and "momentum_buffer" not in st:
                        if self.bits8:
                            st["momentum_codes"], st["momentum_scale"] = quantize(torch.zeros_like(grad), self.block_size)
                        else:
                            st["momentum_buffer"] = torch.zeros_like(grad)
                    if self.bits8:
                        buf = dequantize(st["momentum_codes"], st["momentum_scale"], grad.shape, self.block_size)
                    else:
                        buf = st["momentum_buffer"]
                    buf.lerp_(grad, 1 - mu)
                    update = grad.lerp(buf, mu) if g["nesterov"] else buf
                    if self.bits8:
                        st["momentum_codes"], st["momentum_scale"] = quantize(buf, self.block_size)
                    update = _muon._zeropower_via_newtonschulz(update, g["ns_coefficients"], g["ns_steps"], g["eps"])
                    if "rank" in g:
                        update = st["projector"].project_back(update.float())
                    p.mul_(1 - lr * wd)
                    p.add_(update.to(p.dtype), alpha=-_muon._adjust_lr(lr, g["adjust_lr_fn"], p.shape))
            return None

    return Muon8bit


def Muon8bit(params, **kwargs):  # noqa: N802 - a class factory, named like the class it builds
    """Build a :class:`Muon8bit` optimizer (the class is created on first use, torch imported lazily)."""
    return _muon_base()(params, **kwargs)
