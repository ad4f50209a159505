"""The lm-eval adapter maps lm-eval's three request types onto our Backend."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from e3bench.core.api import Generation, LogLik
from e3bench.core.errors import E3Error, MissingExtra

pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install 'e3bench[lmeval]')")

from e3bench.evals.lmeval_engine import make_lm, run_lm_eval, to_task_scores  # noqa: E402


class Fake:
    name = "fake"
    architecture = "decoder-only"

    def __init__(self):
        self.gen_params = []

    def encode(self, text):
        return [ord(c) for c in text]

    def encode_context(self, text, *, max_new_tokens):
        return self.encode(text), False

    def loglikelihood(self, requests):
        return [LogLik(-float(len(c)), len(c) == 2, len(c)) for _, c in requests]

    def loglikelihood_rolling(self, texts):
        return [LogLik(-2.0 * len(t), False, len(t)) for t in texts]

    def generate(self, prompts, params):
        self.gen_params.append(params)
        return [Generation([1], " 42\n\nQuestion: more")] * len(prompts)


def _req(*args):
    return SimpleNamespace(args=args)


def test_adapter_request_types():
    be = Fake()
    lm = make_lm(be)
    assert lm.loglikelihood([_req("ctx", " ab"), _req("ctx", " abcd")]) == [(-3.0, False), (-5.0, False)]
    assert lm.loglikelihood_rolling([_req("hello")]) == [-10.0]
    out = lm.generate_until([_req("Q: ?", {"until": ["Question:", "\n\n"], "max_gen_toks": 7, "do_sample": False})])
    assert out == [" 42"]
    p = be.gen_params[-1]
    assert p.max_new_tokens == 7 and not p.do_sample and not p.ignore_eos
    assert "Question:" in p.stop


def test_unknown_lm_eval_task_is_a_clear_error():
    with pytest.raises(E3Error, match="lm-eval does not know"):
        run_lm_eval(Fake(), ["hellaswagg"], limit=1)


def test_to_task_scores():
    res = {"results": {"t": {"alias": "t", "acc,none": 0.5, "acc_stderr,none": 0.1,
                             "exact_match,strict-match": 0.25}},
           "n-samples": {"t": {"original": 10, "effective": 4}}}
    (s,) = to_task_scores(res)
    assert s.metrics == {"acc": 0.5, "exact_match,strict-match": 0.25}
    assert s.stderr == {"acc": 0.1}
    assert s.n_items == 4


def test_missing_extra_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "lm_eval", None)  # makes `import lm_eval` fail
    with pytest.raises(MissingExtra) as info:
        make_lm(Fake())
    assert "e3bench[lmeval]" in info.value.fix
