"""8-bit Muon against fp32 Muon, and the GaLore 2 projector/optimizer, on tiny problems."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from e3bench.train.shared import galore2, muon8bit  # noqa: E402
from e3bench.train.shared.memory import optimizer_state_bytes  # noqa: E402


def _problem(seed=0, shape=(64, 48)):
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(shape, generator=g)
    x = torch.randn(256, shape[1], generator=g)
    return target, x


def _run(make_opt, steps, shape=(64, 48)):
    target, x = _problem(shape=shape)
    w = torch.nn.Parameter(torch.zeros(shape))
    opt = make_opt([w])
    losses = []
    for _ in range(steps):
        loss = ((x @ w.t() - x @ target.t()) ** 2).mean()
        losses.append(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return w.detach(), losses, opt


def test_quantize_round_trip_is_within_half_a_step_per_block():
    x = torch.randn(1000) * torch.linspace(0.01, 10, 1000)  # blocks of very different magnitude
    codes, scale = muon8bit.quantize(x, 256)
    assert codes.dtype == torch.int8 and codes.numel() == 1000 and scale.numel() == 4
    back = muon8bit.dequantize(codes, scale, x.shape, 256)
    per_block_step = (scale / 127).repeat_interleave(256)[:1000]
    assert bool(((back - x).abs() <= per_block_step / 2 + 1e-6).all())


def test_muon8bit_without_quantisation_is_torch_muon_exactly():
    kw = dict(lr=0.02, weight_decay=0.1, momentum=0.95, adjust_lr_fn="match_rms_adamw")
    w_ref, l_ref, _ = _run(lambda p: torch.optim.Muon(p, **kw), 6)
    w_fp, l_fp, _ = _run(lambda p: muon8bit.Muon8bit(p, bits8=False, **kw), 6)
    torch.testing.assert_close(w_fp, w_ref, rtol=0, atol=0)
    assert l_fp == l_ref


def test_muon8bit_tracks_fp32_muon_with_a_quarter_of_the_state():
    kw = dict(lr=0.1, weight_decay=0.0, momentum=0.95, adjust_lr_fn="match_rms_adamw")
    w_ref, l_ref, o_ref = _run(lambda p: torch.optim.Muon(p, **kw), 60)
    w_q, l_q, o_q = _run(lambda p: muon8bit.Muon8bit(p, **kw), 60)
    assert l_q[-1] < 0.1 * l_q[0]  # it trains (48.4 → 3.5)
    assert l_q[-1] == pytest.approx(l_ref[-1], rel=0.05)
    assert float((w_q - w_ref).norm() / w_ref.norm()) < 0.1
    # measured from the state tensors: 3072 int8 codes + 12 fp32 block scales vs 3072 fp32
    assert optimizer_state_bytes(o_ref) == 64 * 48 * 4
    assert optimizer_state_bytes(o_q) == 64 * 48 + 12 * 4
    assert optimizer_state_bytes(o_q) / optimizer_state_bytes(o_ref) == pytest.approx(0.254, abs=0.001)


def test_randomized_svd_projector_finds_the_top_subspace():
    g = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(96, 96, generator=g))
    v, _ = torch.linalg.qr(torch.randn(40, 40, generator=g))
    s = torch.cat([torch.tensor([50.0, 40, 30, 20]), torch.full((36,), 0.01)])
    grad = u[:, :40] @ torch.diag(s) @ v.t()  # rank-4 signal + small noise, 96×40
    proj = galore2.Projector(rank=4, update_proj_gap=10, oversample=4, power_iters=2, seed=0)
    low = proj.project(grad, step=0)
    assert tuple(low.shape) == (96, 4)  # tall matrix: projected on the right (40 → 4)
    back = proj.project_back(low)
    assert float((back - grad).norm() / grad.norm()) < 1e-3
    assert proj.refreshes == 1
    proj.project(grad, step=5)
    assert proj.refreshes == 1  # refreshed every update_proj_gap steps only
    proj.project(grad, step=10)
    assert proj.refreshes == 2


def test_galore2_adamw_caps_the_rank_trains_and_keeps_small_state():
    w_ref, l_ref, o_ref = _run(lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=0.0), 60, shape=(64, 48))
    opt_box = {}

    def make(p):
        opt_box["o"] = galore2.GaLore2AdamW([{"params": p, "rank": 256, "rank_cap": 0.25, "update_proj_gap": 20,
                                              "scale": 1.0}], lr=0.05, weight_decay=0.0)  # fmt: skip
        return opt_box["o"]

    w, losses, o = _run(make, 60, shape=(64, 48))
    assert losses[-1] < 0.35 * losses[0]  # 48.4 → 12.8 (a full-rank target, seen through rank-12 subspaces)
    st = next(iter(o.state.values()))
    assert st["rank"] == 12  # min(256, 0.25 × 48)
    # moments 2 × 64×12 fp32 + projection 12×48 fp32, measured from the tensors
    assert optimizer_state_bytes(o) == (2 * 64 * 12 + 12 * 48) * 4
    assert optimizer_state_bytes(o) < 0.35 * optimizer_state_bytes(o_ref)  # AdamW: 2 × 64×48 fp32 + step
