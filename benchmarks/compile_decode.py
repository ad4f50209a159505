"""Does the ``pytorch-compile`` path (static KV cache + torch.compile of the decode step) decode
faster than eager PyTorch here? Bare ``model.generate`` both ways on the same loaded model, in
one process, interleaved rounds, identical greedy tokens checked.

    flock -w 900 /tmp/e3-measure.lock nice -n 0 .venv/bin/python benchmarks/compile_decode.py \\
        [--model smollm2-135m] [--prompt-tokens 128] [--new-tokens 64] [--rounds 5]

* eager: ``generate`` with transformers' default dynamic KV cache (what ``-b pytorch`` runs).
* compiled: ``generate(cache_implementation="static", compile_config=CompileConfig(fullgraph=True,
  mode=<--mode>))`` with CPU compilation allowed (what ``-b pytorch-compile`` runs).
* decode tokens/s of one call = (n − 1) / (t(token n) − t(token 1)), the times read in a
  streamer's ``put`` (prefill excluded); the round's ratio is compiled ÷ eager; printed: the
  median of each side, the geometric mean of the ratios with a 95 % CI (t over the rounds' logs).
* compile time: the first compiled call's wall time (prefill, torch.compile of the decode step,
  decode) minus the median steady compiled call's, stated as such.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from overhead import ratio_ci  # benchmarks/overhead.py: geometric mean + 95 % CI over rounds

from e3bench.backends import models
from e3bench.backends.factory import make_backend
from e3bench.bench import prompts
from e3bench.core.host import THREADS_SOURCES, resolve_threads


class Stamps:
    """A streamer recording the wall time of every ``put`` after the prompt's."""

    def __init__(self) -> None:
        self.t: list[float] = []
        self.first = True

    def put(self, value) -> None:
        if self.first:
            self.first = False
            return
        self.t.append(time.perf_counter())

    def end(self) -> None:
        return None


def call(model, ids, n_new: int, compile_config=None) -> tuple[float, float, list[int]]:
    """One greedy generate: (wall s, decode tokens/s, new token ids)."""
    kw = {} if compile_config is None else {"cache_implementation": "static", "compile_config": compile_config}
    st = Stamps()
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n_new,
                             min_new_tokens=n_new, do_sample=False, temperature=None, top_p=None, top_k=None,
                             pad_token_id=model.generation_config.pad_token_id or 0, streamer=st, **kw)  # fmt: skip
    wall = time.perf_counter() - t0
    return wall, (len(st.t) - 1) / (st.t[-1] - st.t[0]), out[0, ids.shape[1] :].tolist()


def main() -> None:
    from transformers.generation.configuration_utils import CompileConfig

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--mode", default="default", help="torch.compile mode (CPU: default)")
    args = ap.parse_args()
    threads, source = resolve_threads(None)
    backend = make_backend("pytorch", threads=threads)
    t0 = time.perf_counter()
    backend.load(models.resolve(args.model), "fp32", "cpu")
    print(f"{args.model} fp32 cpu, {threads} threads ({THREADS_SOURCES[source]}), torch {torch.__version__}; "
          f"loaded in {time.perf_counter() - t0:.1f} s")  # fmt: skip
    model = backend.model
    ids = torch.tensor([prompts.load_prompts(backend.encode, None, args.prompt_tokens).batch(1, offset=0)[0]])
    cc = CompileConfig(fullgraph=True, mode=args.mode)
    cc._compile_all_devices = True

    eager_warm, _, want = call(model, ids, args.new_tokens)
    first, _, got = call(model, ids, args.new_tokens, cc)
    print(f"first eager call {eager_warm:.1f} s; first compiled call {first:.1f} s (prefill + compilation + decode)")
    same = got == want
    eager, comp, ratios, walls = [], [], [], []
    for r in range(args.rounds):  # alternate the order: drift hits both sides
        order = ("e", "c") if r % 2 == 0 else ("c", "e")
        got_r = {}
        for side in order:
            wall, tok_s, toks = call(model, ids, args.new_tokens, cc if side == "c" else None)
            got_r[side] = (tok_s, toks)
            if side == "c":
                walls.append(wall)
        same = same and got_r["c"][1] == got_r["e"][1] == want
        eager.append(got_r["e"][0])
        comp.append(got_r["c"][0])
        ratios.append(got_r["c"][0] / got_r["e"][0])
        print(f"round {r + 1}: eager {got_r['e'][0]:.1f} tok/s, compiled {got_r['c'][0]:.1f} tok/s, "
              f"ratio {ratios[-1]:.3f}", flush=True)  # fmt: skip
    g, lo, hi = ratio_ci(ratios)
    print(f"decode tokens/s, bs 1, prompt {ids.shape[1]} tokens, {args.new_tokens} new: eager median "
          f"{statistics.median(eager):.1f}, compiled median {statistics.median(comp):.1f}; "
          f"compiled/eager {g:.3f} [95% CI {lo:.3f}, {hi:.3f}] over {args.rounds} rounds")  # fmt: skip
    print(f"compile time (first compiled call − median steady compiled call): {first - statistics.median(walls):.1f} s")
    print(f"greedy tokens identical (eager vs compiled, every call): {same}")
    backend.close()


if __name__ == "__main__":
    main()
