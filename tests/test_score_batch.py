"""``--score-batch-size N | auto`` for log-likelihood tasks (lm-eval's ``--batch_size auto``):
the largest batch that fits (CUDA: try and halve on out-of-memory; CPU: a stated memory budget),
recorded per task, with the same scores as batch 1 (on a tiny model)."""

from __future__ import annotations

import json
import re

import pytest

from e3bench.backends import batch_auto
from e3bench.config.run import build_config
from e3bench.config.validate import ConfigError


def test_halving_stops_at_the_first_batch_that_fits():
    assert batch_auto.halve_until_fits(lambda b: b <= 12) == (8, [64, 32, 16])
    assert batch_auto.halve_until_fits(lambda b: True) == (64, [])
    assert batch_auto.halve_until_fits(lambda b: False) == (1, [64, 32, 16, 8, 4, 2])


def test_cuda_auto_halves_on_out_of_memory_from_the_model():
    """A model that runs out of memory above 12 rows (torch's own exception type, as a GPU
    raises it): the probe catches it and auto settles on 8."""
    import torch

    calls = []

    class OomAbove12(torch.nn.Module):
        config = type("C", (), {"is_encoder_decoder": False})()

        def forward(self, input_ids, use_cache=False):
            calls.append(tuple(input_ids.shape))
            if input_ids.shape[0] > 12:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return None

    n, how = batch_auto.cuda_batch(batch_auto.torch_probe(OomAbove12(), 128, "cpu"), 128)
    assert n == 8 and calls == [(64, 128), (32, 128), (16, 128), (8, 128)]
    assert how == ("auto: 8 for inputs ≤ 128 tokens = the largest of 64, 32, ... whose forward fit in GPU memory "
                   "(64, 32, 16 ran out of memory)")  # fmt: skip


def test_cpu_auto_is_the_budget_over_the_estimated_row():
    cfg = type("C", (), dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                             head_dim=64, intermediate_size=1536, vocab_size=49152))()  # SmolLM2-135M's shape
    row = batch_auto.cpu_row_bytes(cfg, 256, 4)
    assert row == 2 * 30 * 256 * 3 * 64 * 4 + 2 * 256 * 2304 * 4 + 9 * 256 * 256 * 4 + 256 * 49152 * 4
    n, how = batch_auto.cpu_batch(cfg, 256, 4)
    assert n == min(64, (1 << 30) // row) and how.startswith(f"auto: {n} for inputs ≤ 256 tokens = the 1 GiB CPU budget")


def test_config_takes_n_or_auto_and_batch_size_auto_points_to_it():
    assert build_config(overrides={"score_batch_size": "auto"}).score_batch_size == "auto"
    assert build_config(overrides={"score_batch_size": "8"}).score_batch_size == 8
    assert build_config().identity().get("score_batch_size", "absent") == "absent"
    with pytest.raises(ConfigError) as ei:
        build_config(overrides={"batch_sizes": "auto"})
    assert "use --score-batch-size auto" in ei.value.one_lines()[0]


def _requests():
    ctxs = [f"Question {i}: which unit measures energy? Answer:" for i in range(6)] + ["Energy", "The"]
    return [(c, x) for c in ctxs for x in (" joules", " watts", " volts and amperes")]


def test_scores_are_the_same_as_batch_one(tiny_models):
    from e3bench.backends.models import resolve
    from e3bench.backends.pytorch import PyTorchBackend

    b = PyTorchBackend()
    b.load(resolve(str(tiny_models["decoder"])), "fp32", "cpu")
    reqs = _requests()
    got = {}
    for size in (1, 4, "auto"):
        b.score_batch_size = size
        b.score_batches_used = {}
        got[size] = (b.loglikelihood(reqs), dict(b.score_batches_used))
    one = [x.logprob for x in got[1][0]]
    for size in (4, "auto"):
        lps = [x.logprob for x in got[size][0]]
        assert lps == pytest.approx(one, abs=1e-4)  # padding and batching move fp32 by ~1e-5 at most
        for i in range(0, len(reqs), 3):  # every item's choice is the same
            assert max(range(3), key=lambda k: lps[i + k]) == max(range(3), key=lambda k: one[i + k])
        assert [x.is_greedy for x in got[size][0]] == [x.is_greedy for x in got[1][0]]
    (how,) = got["auto"][1]
    assert re.match(r"auto: 64 for inputs ≤ \d+ tokens = the 1 GiB CPU budget", how)  # the tiny model: the cap
    assert list(got[1][1]) == ["1 (--score-batch-size)"]


def test_the_task_record_says_which_batch_scored_it(tiny_models, tmp_path):
    from e3bench.backends.models import resolve
    from e3bench.backends.pytorch import PyTorchBackend
    from e3bench.energy.window import MeteredWindow
    from e3bench.evals.engine import run_tasks

    mc = tmp_path / "mc.jsonl"
    mc.write_text("".join(json.dumps({"query": f"Item {i}: the unit of energy is", "choices": ["joules", "watts"],
                                      "gold": i % 2}) + "\n" for i in range(6)))  # fmt: skip
    b = PyTorchBackend()
    b.load(resolve(str(tiny_models["decoder"])), "fp32", "cpu")
    acc = {}
    for size in (None, "auto"):
        cfg = build_config(overrides=dict(model=str(tiny_models["decoder"]), meter="none", output_dir=str(tmp_path),
                                          tasks=f"jsonl_mc:path={mc}", score_batch_size=size))  # fmt: skip
        (res,) = run_tasks(b, MeteredWindow.create("none"), cfg, run_id="r1")
        acc[size] = res.metrics["acc"]
        if size is None:
            assert res.details["score_batch_size"] == ["16 (default on cpu)"]
        else:
            (how,) = res.details["score_batch_size"]
            assert re.match(r"auto: 64 for inputs ≤ \d+ tokens", how)
    assert acc[None] == acc["auto"]
