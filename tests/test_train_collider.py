"""Collider token filtering: token selection, and gradients against dense references."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")

from e3bench.train.shared import collider  # noqa: E402


def test_select_tokens_by_threshold_and_by_sparsity():
    loss = torch.tensor([[0.1, 2.0, 0.5, 3.0], [1.0, 0.2, 4.0, 0.3]])
    assert collider.select_tokens(loss, threshold=0.9).tolist() == [[False, True, False, True], [True, False, True, False]]
    m = collider.select_tokens(loss, sparsity=0.25)  # drop the 2 lowest of 8
    assert m.tolist() == [[False, True, True, True], [True, False, True, True]]
    # a threshold above every loss keeps the single hardest token, never none
    assert int(collider.select_tokens(loss, threshold=99.0).sum()) == 1
    assert float(collider.filtered_mean(loss, m)) == pytest.approx((2.0 + 0.5 + 3.0 + 1.0 + 4.0 + 0.3) / 6)


def _mlp(d=16, vocab=11):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(d, 32), torch.nn.GELU(), torch.nn.Linear(32, d, bias=False),
                               torch.nn.Linear(d, vocab))  # fmt: skip


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def test_collider_equals_dense_gradient_of_filtered_loss_without_token_mixing():
    """A per-token model: Collider's smaller GEMMs give exactly the dense autograd gradient of
    the loss over kept tokens, and skip the dropped rows."""
    dense = _mlp()
    filt = copy.deepcopy(dense)
    state = collider.install(filt)
    assert len(state.layers) == 3
    x = torch.randn(4, 8, 16)
    tgt = torch.randint(0, 11, (4, 8))

    def per_token(m):
        logits = m(x)
        return torch.nn.functional.cross_entropy(logits.reshape(-1, 11), tgt.reshape(-1), reduction="none").view(4, 8)

    lt = per_token(filt)
    mask = collider.select_tokens(lt, sparsity=0.5)
    state.set(mask)
    collider.filtered_mean(lt, mask).backward()
    collider.filtered_mean(per_token(dense), mask).backward()
    g_f, g_d = _grads(filt), _grads(dense)
    assert g_f.keys() == g_d.keys()
    for n in g_d:
        torch.testing.assert_close(g_f[n], g_d[n], rtol=1e-5, atol=1e-6)
    assert state.rows_total == 3 * 32 and state.rows_kept == 3 * 16
    assert state.gemm_sparsity() == pytest.approx(0.5)


def _tiny_lm(**kw):
    from e3bench.train.suite.model import ModelSettings, build_model

    ms = ModelSettings(hidden_size=32, layers=2, heads=2, kv_heads=2, intermediate_size=48, seq_len=16)
    return build_model(ms, 64, seed=0, **kw)


def test_collider_on_llama_matches_a_masked_dense_reference_and_filters_every_layer():
    """On the suite's decoder (attention mixes tokens): Collider's gradients equal a dense
    reference in which every linear layer's output gradient is zeroed on dropped rows before
    full-size GEMMs — so the sparse→dense GEMM rewrite is exact — and differ from the plain
    gradient of the filtered loss (the activations of dropped tokens really are filtered)."""
    lm = _tiny_lm(collider_sparsity=0.4)
    ref = _tiny_lm()  # same seed → same weights
    plain = _tiny_lm()
    for a, b in zip(lm.parameters(), ref.parameters(), strict=True):
        assert torch.equal(a, b)
    assert len(lm.collider.layers) == 2 * 7 + 1  # q k v o gate up down per layer + lm_head
    torch.manual_seed(1)
    block = torch.randint(0, 64, (3, 17))
    lm.train()
    loss, main, _ = lm(block)
    mask = lm.collider.keep  # kept rows chosen by the forward
    assert mask.numel() == round(0.6 * 48)
    loss.backward()

    keep = torch.zeros(48, dtype=torch.bool)
    keep[mask] = True
    keep2d = keep.view(3, 16)

    def masked_linear(mod):
        def fwd(x, _orig=mod.forward):
            y = _orig(x)
            if y.requires_grad:
                y.register_hook(lambda g: g * keep2d[..., None].to(g.dtype))
            return y
        mod.forward = fwd

    for m in ref.modules():
        if type(m) is torch.nn.Linear:
            masked_linear(m)

    def filtered_loss(model):
        inp, tgt = block[:, :-1], block[:, 1:]
        h = model.base.model(input_ids=inp).last_hidden_state
        lt = model._ce(model.base.lm_head(h), tgt)
        return collider.filtered_mean(lt, keep2d)

    ref.train()
    plain.train()
    filtered_loss(ref).backward()
    filtered_loss(plain).backward()
    assert float(loss.detach()) == pytest.approx(float(filtered_loss(ref).detach()), rel=1e-6)
    worst_plain = 0.0
    for (n, p), r, q in zip(lm.named_parameters(), ref.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(p.grad, r.grad, rtol=1e-4, atol=1e-6, msg=n)
        worst_plain = max(worst_plain, float((p.grad - q.grad).abs().max()))
    assert worst_plain > 1e-4  # filtering the backward changes the gradient where attention mixes
    st = lm.collider_stats()
    assert st["token_sparsity"] == pytest.approx(0.4, abs=0.02)
    assert st["gemm_row_sparsity"] == pytest.approx(0.4, abs=0.02)


def test_collider_with_mtp_heads_trains_and_eval_is_dense():
    lm = _tiny_lm(collider_threshold=4.0, mtp_k=2)
    block = torch.randint(0, 64, (2, 17))
    lm.train()
    loss, main, aux = lm(block)
    loss.backward()
    assert aux is not None and torch.isfinite(loss)
    assert all(p.grad is not None for p in lm.mtp_heads.parameters())
    lm.eval()
    with torch.no_grad():
        l2, m2, a2 = lm(block)
    assert a2 is None and float(l2) == pytest.approx(float(main), rel=1e-5)


def test_collider_under_gradient_checkpointing_gives_the_same_gradients():
    """The full stack combines Collider with activation checkpointing: the recomputed forward
    in the backward reuses the rows kept by the real forward, so gradients are those without
    checkpointing, and the same share of rows is skipped."""
    a = _tiny_lm(collider_sparsity=0.4)
    b = _tiny_lm(collider_sparsity=0.4)
    b.enable_gradient_checkpointing()
    torch.manual_seed(2)
    block = torch.randint(0, 64, (3, 17))
    calls = {id(a): 0, id(b): 0}
    for m in (a, b):
        q_proj = m.base.model.layers[0].self_attn.q_proj
        q_proj.register_forward_hook(lambda *_, key=id(m): calls.__setitem__(key, calls[key] + 1))
        m.train()
        m(block)[0].backward()
    assert (calls[id(a)], calls[id(b)]) == (1, 2)  # b's layer really ran again in the backward
    for (n, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-7, msg=n)
    assert a.collider.gemm_sparsity() == pytest.approx(b.collider.gemm_sparsity())
    assert a.collider.gemm_sparsity() == pytest.approx(0.4, abs=0.02)
