"""The ``pytorch-compile`` backend: static KV cache + torch.compile of the decode step
(transformers' auto-compile), greedy outputs equal to the eager ``pytorch`` backend's."""

from __future__ import annotations

import pytest

from e3bench.backends.factory import make_backend
from e3bench.backends.models import resolve
from e3bench.core import registry
from e3bench.core.api import GenParams
from e3bench.core.errors import E3Error


def test_registered_with_its_own_options():
    cls = registry.backends.get("pytorch-compile")
    assert cls.__module__ == "e3bench.backends.pytorch_compile"
    b = make_backend("pytorch-compile", {"mode": "max-autotune-no-cudagraphs", "fullgraph": False}, threads=1)
    assert (b.options.mode, b.options.fullgraph) == ("max-autotune-no-cudagraphs", False)
    with pytest.raises(E3Error, match="mode"):
        make_backend("pytorch-compile", {"mode": "fastest"})
    with pytest.raises(E3Error, match="compile"):  # the pytorch backend's dynamic-compile switch is not its
        make_backend("pytorch-compile", {"compile": True})


def test_refuses_what_it_does_not_run(tiny_models):
    b = make_backend("pytorch-compile", threads=1)
    with pytest.raises(E3Error, match="int8"):
        b.load(resolve(str(tiny_models["decoder"])), "int8", "cpu")
    with pytest.raises(E3Error, match="encoder-only|decoder-only"):
        from e3bench.bench import limits

        problems = limits.capability_problems(
            type(b), spec=resolve(str(tiny_models["encoder"])), config=limits.peek_config(
                resolve(str(tiny_models["encoder"])), None), device="cpu", precision="fp32")  # fmt: skip
        raise problems[0]


def test_load_sets_static_cache_and_cpu_compile(tiny_models):
    b = make_backend("pytorch-compile", threads=1)
    info = b.load(resolve(str(tiny_models["decoder"])), "fp32", "cpu")
    gen = b.model.generation_config
    assert gen.cache_implementation == "static"
    assert gen.compile_config.mode == "default" and gen.compile_config.fullgraph
    assert gen.compile_config._compile_all_devices  # else transformers skips compiling on the CPU
    assert any("static KV cache + torch.compile(mode='default'" in n for n in info.notes)
    b.close()


@pytest.mark.slow
def test_greedy_outputs_equal_eager_and_the_decode_step_is_compiled(varied_decoder):
    """Padded batch of two prompts of different lengths, 12 greedy tokens: the same ids as the
    eager backend, and the compiled call exists (transformers really compiled)."""
    spec = resolve(str(varied_decoder))
    eager = make_backend("pytorch", threads=1)
    eager.load(spec, "fp32", "cpu")
    comp = make_backend("pytorch-compile", threads=1)
    comp.load(spec, "fp32", "cpu")
    prompts = [eager.encode("the quick brown fox jumps over"), eager.encode("a b")]
    params = GenParams(max_new_tokens=12, min_new_tokens=12, ignore_eos=True)
    want = [g.token_ids for g in eager.generate(prompts, params)]
    steps: list[int] = []
    got = [g.token_ids for g in comp.generate(prompts, params, on_token=steps.append)]
    assert got == want and len(set(map(tuple, want))) == 2
    assert steps == list(range(1, 13))  # one callback per decode step, as the eager path gives
    assert hasattr(comp.model, "_compiled_call")
    again = [g.token_ids for g in comp.generate(prompts[1:], params)]  # new batch size: recompiles
    assert again == want[1:]
    eager.close()
    comp.close()
