"""Log-likelihood scoring: batched/shared-context results equal a naive one-by-one forward pass,
and tokenization follows lm-evaluation-harness."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from e3bench.core.api import LogLik  # noqa: E402
from e3bench.core.errors import E3Error  # noqa: E402
from e3bench.backends.hf_scorer import hf_loglikelihood_tokens  # noqa: E402
from e3bench.backends.tokenization import encode_pair, resolve_max_length, rolling_windows  # noqa: E402

CONTEXTS = [
    "The quick brown fox",
    "Question: what is two plus two?\nAnswer:",
    "Energy is measured in ",  # trailing space moves to the continuation
    "A",
    "Latency is the time a request takes; throughput is how many tokens per second come out. "
    "The answer is",
]
CHOICES = [" jumps over the lazy dog.", " four", " 4", " joules", "watts and power", " A", " B"]


def _requests():
    reqs = [(c, x) for c in CONTEXTS for x in CHOICES]
    reqs.append(("", "The quick brown fox"))  # empty context → BOS as context
    return reqs


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from fakes.testing import build_tiny_models

    return build_tiny_models(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def decoder(tiny):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny["decoder"])
    model = AutoModelForCausalLM.from_pretrained(tiny["decoder"], dtype=torch.float32).eval()
    return model, tok


@pytest.fixture(scope="module")
def seq2seq(tiny):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny["encoder-decoder"])
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny["encoder-decoder"], dtype=torch.float32).eval()
    return model, tok


def _score(model, tok, reqs, *, architecture="decoder-only", max_length=None, **kw):
    """lm-eval's tokenization, then the batched scorer (what PyTorchBackend.loglikelihood does)."""
    enc = [encode_pair(tok, c, x, architecture=architecture) for c, x in reqs]
    return hf_loglikelihood_tokens(
        model, enc, device="cpu", architecture=architecture,
        max_length=max_length or resolve_max_length(model.config, tok), **kw,
    )


@pytest.fixture(scope="module")
def backend(tiny):
    from e3bench.backends.models import resolve
    from e3bench.backends.pytorch import PyTorchBackend

    b = PyTorchBackend()
    b.load(resolve(str(tiny["decoder"])), "fp32", "cpu")
    yield b
    b.close()


def _naive_causal(model, tok, reqs, max_length=None):
    out = []
    for c, x in reqs:
        ctx, cont = encode_pair(tok, c, x)
        full = (ctx + cont)
        if max_length:
            full = full[-(max_length + 1):]
        inp = torch.tensor([full[:-1]])
        with torch.no_grad():
            logits = model(input_ids=inp).logits[0]
        lp = torch.log_softmax(logits.float(), -1)[-len(cont):]
        tgt = torch.tensor(cont)
        out.append(
            LogLik(float(lp.gather(1, tgt[:, None]).sum()), bool((lp.argmax(-1) == tgt).all()), len(cont))
        )
    return out


def _naive_seq2seq(model, tok, reqs):
    out = []
    for c, x in reqs:
        ctx, cont = encode_pair(tok, c, x, architecture="encoder-decoder")
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ctx]), labels=torch.tensor([cont])).logits[0]
        lp = torch.log_softmax(logits.float(), -1)
        tgt = torch.tensor(cont)
        out.append(
            LogLik(float(lp.gather(1, tgt[:, None]).sum()), bool((lp.argmax(-1) == tgt).all()), len(cont))
        )
    return out


def _assert_close(got, want, tol=1e-4):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.n_tokens == w.n_tokens
        assert math.isfinite(g.logprob)
        assert abs(g.logprob - w.logprob) < tol, (g, w)
        assert g.is_greedy == w.is_greedy


@pytest.mark.parametrize("batch_size", [1, 3, 64])
@pytest.mark.parametrize("strategy", ["shared-prefix", "full"])
def test_causal_batched_equals_naive(decoder, batch_size, strategy):
    model, tok = decoder
    reqs = _requests()
    want = _naive_causal(model, tok, reqs)
    got = _score(
        model, tok, reqs, batch_size=batch_size, strategy=strategy,
    )
    _assert_close(got, want)


def test_causal_small_token_budget_and_truncation(decoder):
    model, tok = decoder
    reqs = _requests()
    want = _naive_causal(model, tok, reqs, max_length=8)
    got = _score(
        model, tok, reqs, batch_size=4, max_length=8, token_budget=40,
    )
    _assert_close(got, want)


@pytest.mark.parametrize("batch_size", [1, 5])
def test_seq2seq_batched_equals_naive(seq2seq, batch_size):
    model, tok = seq2seq
    reqs = [r for r in _requests() if r[0]]
    want = _naive_seq2seq(model, tok, reqs)
    got = _score(
        model, tok, reqs, architecture="encoder-decoder", batch_size=batch_size,
    )
    _assert_close(got, want)


def test_results_keep_request_order_and_distinguish_choices(decoder):
    model, tok = decoder
    reqs = [("The quick brown fox", " jumps"), ("The quick brown fox", " four")]
    a = _score(model, tok, reqs)
    b = _score(model, tok, reqs[::-1])
    assert a[0].logprob == pytest.approx(b[1].logprob, abs=1e-5)
    assert a[1].logprob == pytest.approx(b[0].logprob, abs=1e-5)
    assert a[0].logprob != pytest.approx(a[1].logprob, abs=1e-6)


def test_encode_pair_matches_lm_eval_rules(decoder):
    _, tok = decoder
    # trailing whitespace of the context moves into the continuation
    ctx, cont = encode_pair(tok, "Energy is measured in ", "joules")
    ctx2, cont2 = encode_pair(tok, "Energy is measured in", " joules")
    assert (ctx, cont) == (ctx2, cont2)
    # causal: split of the whole encoding
    whole = tok.encode("Energy is measured in joules")
    assert ctx + cont == whole
    # empty context → BOS (prefix token) as context
    ctx, cont = encode_pair(tok, "", "The fox")
    assert ctx == [tok.bos_token_id]
    assert cont == tok.encode("The fox", add_special_tokens=False)


def test_encode_pair_matches_lm_eval_implementation(decoder):
    pytest.importorskip("lm_eval")
    from lm_eval.api.model import TemplateLM

    _, tok = decoder

    class _T(TemplateLM):
        backend = "causal"
        eot_token_id = tok.eos_token_id

        def tok_encode(self, s, add_special_tokens=None, **kw):
            from e3bench.backends.tokenization import tok_encode

            return tok_encode(tok, s, add_special_tokens)

        _loglikelihood_tokens = loglikelihood_rolling = generate_until = None

    lm = object.__new__(_T)
    for c, x in _requests():
        if c:
            assert [list(t) for t in lm._encode_pair(c, x)] == [list(t) for t in encode_pair(tok, c, x)]


def test_rolling_windows_match_lm_eval():
    lm_eval_utils = pytest.importorskip("lm_eval.utils")
    toks = list(range(100, 137))
    for max_len, ctx_len in [(8, 1), (8, 4), (50, 1), (5, 5)]:
        want = [
            lm_eval_utils.make_disjoint_window(w)
            for w in lm_eval_utils.get_rolling_token_windows(toks, 0, max_len, ctx_len)
        ]
        assert rolling_windows(toks, 0, max_len, ctx_len) == want


def test_rolling_loglikelihood_equals_sum_of_token_logprobs(decoder, backend):
    model, tok = decoder
    text = "The quick brown fox jumps over the lazy dog. " * 3
    toks = tok.encode(text)
    (ll,) = backend.loglikelihood_rolling([text], max_length=512)
    # one window: BOS + text[:-1] predicts text
    inp = torch.tensor([[tok.bos_token_id] + toks[:-1]])
    with torch.no_grad():
        lp = torch.log_softmax(model(input_ids=inp).logits[0], -1)
    want = float(lp.gather(1, torch.tensor(toks)[:, None]).sum())
    assert ll.n_tokens == len(toks)
    assert ll.logprob == pytest.approx(want, abs=1e-3)
    # many small windows still score every token exactly once, each window after its own context
    (ll8,) = backend.loglikelihood_rolling([text], max_length=8)
    assert ll8.n_tokens == len(toks)
    windows = rolling_windows(toks, tok.bos_token_id, 8)
    assert len(windows) == -(-len(toks) // 8)
    per_window = hf_loglikelihood_tokens(model, windows, device="cpu", architecture="decoder-only", max_length=8)
    assert ll8.logprob == pytest.approx(sum(x.logprob for x in per_window), abs=1e-4)
    # default window: the model's maximum length (512 for the fixture)
    assert backend.loglikelihood_rolling([text])[0].logprob == pytest.approx(ll.logprob, abs=1e-5)
    with pytest.raises(E3Error, match="at most 512 tokens"):
        backend.loglikelihood_rolling([text], max_length=513)


def test_encoder_only_is_a_clear_error(tiny):
    from e3bench.backends.models import resolve
    from e3bench.backends.pytorch import PyTorchBackend

    b = PyTorchBackend()
    b.load(resolve(str(tiny["encoder"])), "fp32", "cpu")
    for call in (lambda: b.loglikelihood([("a", " b")]), lambda: b.loglikelihood_rolling(["a b"])):
        with pytest.raises(E3Error, match="encoder-only") as info:
            call()
        assert "fine-tun" in info.value.fix
    b.close()


def test_empty_continuation_is_a_clear_error(backend):
    with pytest.raises(E3Error, match="empty"):
        backend.loglikelihood_tokens([([1, 2], [])])
    with pytest.raises(E3Error, match="longer than the model's maximum length 512"):
        backend.loglikelihood_tokens([([1, 2], [5] * 513)])


@pytest.mark.parametrize("batch_size", [1, 4])
def test_single_token_letter_choices_like_mmlu(decoder, batch_size):
    model, tok = decoder
    reqs = [(c, f" {x}") for c in CONTEXTS for x in "ABCD"]
    want = _naive_causal(model, tok, reqs)
    got = _score(model, tok, reqs, batch_size=batch_size)
    _assert_close(got, want)


@pytest.mark.parametrize("batch_size", [1, 2, 16])
def test_choices_sharing_their_start_like_piqa(decoder, batch_size):
    """Continuations that begin alike (PIQA's two solutions): the common start runs with the
    context, each rest over its cache; one continuation may be the start of another."""
    model, tok = decoder
    reqs = []
    for c in CONTEXTS:
        for x in [" put the pan in the oven for ten minutes.", " put the pan in the fridge overnight.",
                  " put the pan", " put the pan in the oven for ten minutes and wait."]:  # fmt: skip
            reqs.append((c, x))
    want = _naive_causal(model, tok, reqs)
    _assert_close(_score(model, tok, reqs, batch_size=batch_size), want)


@pytest.mark.parametrize("batch_size", [1, 2, 16])
def test_few_shot_contexts_sharing_a_stem(decoder, batch_size, monkeypatch):
    """Contexts with a long common stem (few-shot prompts) compute it once and score the rest of
    every context (one-suffix and many-suffix groups alike) over its cache."""
    import e3bench.backends.hf_causal as sc

    model, tok = decoder
    stems = []
    real = sc._stem_clusters
    monkeypatch.setattr(sc, "_stem_clusters", lambda g: [c for c in real(g) if stems.append(c[0]) or True])
    stem = "Question: what is two plus two? Answer: four. The quick brown fox jumps over the lazy dog.\n\n" * 4
    reqs = []
    for q in ["Energy is measured in", "Latency is the time", "A small language model"]:
        for x in [" A", " B", " joules", " tokens per second"]:
            reqs.append((stem + q, x))
        reqs.append((stem + q + " and", " C"))  # single-suffix group inside the stem run
    reqs.append(("Unrelated", " context"))  # no stem: its own cluster
    want = _naive_causal(model, tok, reqs)
    got = _score(model, tok, reqs, batch_size=batch_size)
    _assert_close(got, want)
    shared = [s for s in stems if s]
    assert len(shared) == 1 and len(shared[0]) >= sc.MIN_STEM_TOKENS
    assert len(stems) == 2  # the stem cluster and the loose one


def test_a_stem_shared_across_calls_is_computed_once(decoder, monkeypatch):
    """A task hands its first item over alone (the progress ETA), then the rest: with the
    backend's StemMemo the second call's few-shot stem comes from the first call's cache (no
    pass over it), and every score still equals the naive one."""
    import e3bench.backends.hf_causal as sc

    model, tok = decoder
    stem = "Question: what is two plus two? Answer: four. The quick brown fox jumps over the lazy dog.\n\n" * 12
    first = [(stem + "Energy is measured in", f" {x}") for x in "ABCD"]
    rest = [(stem + q, f" {x}") for q in ["Latency is the time", "A small language model"] for x in "ABCD"]
    rest += [(stem + "Latency is the time", " tokens per second"), (stem + "Latency is the time", " joules")]
    memo = sc.StemMemo()
    passes = []
    real = model.forward
    monkeypatch.setattr(model, "forward", lambda *a, **k: passes.append(k["input_ids"].shape) or real(*a, **k))
    got = _score(model, tok, first, memo=memo)
    assert len(memo.tokens) >= sc.MIN_STEM_SAVED  # the first item's context, kept
    passes.clear()
    got += _score(model, tok, rest, memo=memo)
    stem_len = len(encode_pair(tok, stem + "Latency", " A")[0]) - 2
    assert all(shape[1] < stem_len for shape in passes), passes  # no pass ran over the stem again
    monkeypatch.setattr(model, "forward", real)
    _assert_close(got, _naive_causal(model, tok, first + rest))


def test_cuda_scoring_keeps_sdpa_off_cudnn():
    """cuDNN attention rebuilds a graph per shape (3x slower first pass on an H100); scoring on
    CUDA excludes it, CPU scoring is left alone."""
    import contextlib

    from e3bench.backends.hf_scorer import _no_cudnn_attention

    assert isinstance(_no_cudnn_attention("cpu"), contextlib.nullcontext)
    attention = pytest.importorskip("torch.nn.attention")
    if not hasattr(attention.SDPBackend, "CUDNN_ATTENTION"):
        pytest.skip("this torch has no cuDNN attention backend")
    from torch.nn.attention import SDPBackend

    ctx = _no_cudnn_attention("cuda:0")
    assert not isinstance(ctx, contextlib.nullcontext)
    # sdpa_kernel's generator holds the chosen backends in its frame locals
    backends = ctx.gen.gi_frame.f_locals["backends"]
    assert SDPBackend.CUDNN_ATTENTION not in backends and SDPBackend.FLASH_ATTENTION in backends
