"""GaLore 2 (Su et al. 2025, "GaLore 2: Large-Scale LLM Pre-Training by Gradient Low-Rank
Projection", arXiv:2504.20437): the gradient of each hidden matrix is projected onto a rank-r
subspace, optimizer moments live in that small space, and the subspace is refreshed every
``update_proj_gap`` steps.

What galore-torch 1.0 (the installed ``galore_torch``) does and does not do: its
``GaLoreProjector`` refreshes the subspace with a *full* ``torch.linalg.svd`` of the gradient
(the cost GaLore 2 removes); it has no randomized SVD, no rank cap and no FSDP integration.
GaLore 2's changes implemented here, small:

* **Randomized SVD** for the subspace refresh (Halko, Martinsson & Tropp 2011): a Gaussian
  sketch of ``rank + oversample`` columns, ``power_iters`` power iterations with QR
  re-orthonormalisation, then an SVD of the small ``(rank + oversample) × n`` matrix. Its
  generator is the projector's own (seeded), so it never moves the global torch RNG.
* **Refresh frequency** ``update_proj_gap`` (projection kept between refreshes; moments are
  kept across refreshes, as GaLore does).
* **Rank where the model allows**: ``rank`` (GaLore 2 used 256 at 7B) capped at
  ``rank_cap`` × the smaller matrix dimension — a rank as large as that dimension would store
  more than full-rank Adam. The effective rank is stored in each parameter's state.

Not implemented (single-device suite): GaLore 2's FSDP sharding of projections and states.

Projection side ("std" in galore-torch): a tall matrix (m ≥ n) is projected on the right
(``G Pᵀ``, P: r × n), a wide one on the left (``Pᵀ G``, P: m × r).
"""

from __future__ import annotations

import functools


class Projector:
    """The rank-``rank`` subspace of one matrix's gradient, refreshed by randomized SVD every
    ``update_proj_gap`` steps; ``scale`` multiplies the projected-back update. Holds one tensor
    (``ortho``) and counts its refreshes."""

    def __init__(self, rank: int, update_proj_gap: int, *, scale: float = 1.0, oversample: int = 8,
                 power_iters: int = 2, seed: int = 0) -> None:  # fmt: skip
        self.rank = rank
        self.update_proj_gap = update_proj_gap
        self.scale = scale
        self.oversample = oversample
        self.power_iters = power_iters
        self.seed = seed
        self.ortho = None
        self.right: bool | None = None
        self.refreshes = 0

    def _refresh(self, grad) -> None:
        import torch

        g = grad.float()
        m, n = g.shape
        self.right = m >= n
        q = min(self.rank + self.oversample, min(m, n))
        gen = torch.Generator(device=g.device).manual_seed(self.seed + self.refreshes)
        omega = torch.randn(n, q, generator=gen, device=g.device)
        y = torch.linalg.qr(g @ omega).Q
        for _ in range(self.power_iters):
            y = torch.linalg.qr(g @ torch.linalg.qr(g.t() @ y).Q).Q
        u_small, _, vh = torch.linalg.svd(y.t() @ g, full_matrices=False)
        r = self.rank
        self.ortho = (vh[:r].contiguous() if self.right else (y @ u_small[:, :r]).contiguous()).to(grad.dtype)
        self.refreshes += 1

    def project(self, grad, step: int):
        """The low-rank gradient (refreshing the subspace at step 0 and every gap steps)."""
        if self.ortho is None or step % self.update_proj_gap == 0:
            self._refresh(grad)
        return grad @ self.ortho.t() if self.right else self.ortho.t() @ grad

    def project_back(self, low):
        """The full-size update of a low-rank one, times ``scale``."""
        full = low @ self.ortho if self.right else self.ortho @ low
        return full * self.scale


def effective_rank(shape, rank: int, rank_cap: float) -> int:
    """``rank`` capped at ``rank_cap`` × the smaller dimension of ``shape`` (at least 1)."""
    return max(1, min(rank, int(rank_cap * min(shape))))


@functools.cache
def _adamw_class():
    import torch

    class GaLore2AdamW(torch.optim.Optimizer):
        """AdamW whose groups with a ``rank`` key keep their moments in a GaLore 2 subspace
        (group keys: ``rank``, ``rank_cap`` (0.5), ``update_proj_gap`` (200), ``scale`` (0.25),
        ``oversample`` (8), ``power_iters`` (2)); other groups are plain AdamW. Decoupled
        weight decay on the full weights."""

        def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                     weight_decay: float = 0.0, seed: int = 0) -> None:  # fmt: skip
            super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))
            self.seed = seed

        @torch.no_grad()
        def step(self, closure=None):
            """One AdamW step (low-rank moments for GaLore groups); ``closure`` unsupported."""
            for gi, g in enumerate(self.param_groups):
                b1, b2 = g["betas"]
                lr, eps, wd = float(g["lr"]), g["eps"], g["weight_decay"]
                for pi, p in enumerate(g["params"]):
                    if p.grad is None:
                        continue
                    grad = p.grad.float()
                    st = self.state[p]
                    low_rank = "rank" in g and p.ndim == 2
                    if not st:
                        st["step"] = 0
                        if low_rank:
                            r = effective_rank(p.shape, g["rank"], g.get("rank_cap", 0.5))
                            st["rank"] = r
                            st["projector"] = Projector(
                                r, g.get("update_proj_gap", 200), scale=g.get("scale", 0.25),
                                oversample=g.get("oversample", 8), power_iters=g.get("power_iters", 2),
                                seed=self.seed + 1000 * gi + pi,
                            )  # fmt: skip
                    if low_rank:
                        grad = st["projector"].project(grad, st["step"])
                    if "exp_avg" not in st:
                        st["exp_avg"] = torch.zeros_like(grad)
                        st["exp_avg_sq"] = torch.zeros_like(grad)
                    st["step"] += 1
                    t = st["step"]
                    m, v = st["exp_avg"], st["exp_avg_sq"]
                    m.lerp_(grad, 1 - b1)
                    v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
                    upd = (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt_().add_(eps))
                    if low_rank:
                        upd = st["projector"].project_back(upd)
                    if wd:
                        p.mul_(1 - lr * wd)
                    p.add_(upd.to(p.dtype), alpha=-lr)
            return None

    return GaLore2AdamW


def GaLore2AdamW(params, **kwargs):  # noqa: N802 - a class factory, named like the class it builds
    """Build a GaLore 2 AdamW optimizer (class created on first use; torch imported lazily)."""
    return _adamw_class()(params, **kwargs)
