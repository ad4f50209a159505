"""Is e3bench's measurement free? Compare its decode tokens/s with a bare ``model.generate``
loop on the same loaded model, in the same process, over many interleaved rounds, and say
whether the ratio is resolved against the target (≥ 0.98).

    nice -n 10 .venv/bin/python benchmarks/overhead.py [--model smollm2-135m] [--rounds 16]

Each round measures both sides once, alternating which goes first (A B, B A, A B, ...) so drift
and order effects hit both equally:

* e3bench: the runner's own generation loop (:func:`e3bench.bench.loops.generation`: on_token
  callbacks, synchronize, the metered window with meter ``none``), batch 1, ``--iters``
  iterations; its decode tokens/s = (n − 1) / (E2E − TTFT), mean over the iterations.
* bare: ``model.generate`` with no hook at all; decode tokens/s = (n − 1) / (t(n) − t(1)), t(k)
  the median wall time of ``--reps`` calls producing exactly k tokens (prefill removed by
  difference).

The round's ratio is e3bench ÷ bare. The printed ratio is the geometric mean over rounds with a
95 % CI from the t distribution over the rounds' log ratios (rounds are the paired unit). The
verdict against 0.98: PASS when the whole CI is at or above it, FAIL when the whole CI is below,
INCONCLUSIVE when it spans it (more rounds, or a quieter machine, narrow it).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from e3bench.backends import models
from e3bench.backends.factory import make_backend
from e3bench.bench import loops, prompts
from e3bench.config.run import build_config
from e3bench.core.host import THREADS_SOURCES, resolve_threads
from e3bench.core.timing import t_critical_95
from e3bench.energy.window import MeteredWindow

TARGET = 0.98


def bare_decode_tok_s(model, ids, mask, n_new: int, reps: int) -> float:
    """Decode tokens/s of a bare ``model.generate`` by the difference method (module docstring)."""

    def t_gen(k: int) -> float:
        t0 = time.perf_counter()
        with torch.inference_mode():
            model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=k, min_new_tokens=k,
                           do_sample=False, temperature=None, top_p=None, top_k=None,
                           pad_token_id=model.generation_config.pad_token_id or 0)  # fmt: skip
        return time.perf_counter() - t0

    t1 = statistics.median(t_gen(1) for _ in range(reps))
    tn = statistics.median(t_gen(n_new) for _ in range(reps))
    return ids.shape[0] * (n_new - 1) / (tn - t1)


def ratio_ci(ratios: list[float]) -> tuple[float, float, float]:
    """Geometric mean of ``ratios`` and its 95 % CI (t over the log ratios)."""
    logs = [math.log(r) for r in ratios]
    m = statistics.fmean(logs)
    if len(logs) < 2:
        return math.exp(m), float("nan"), float("nan")
    half = t_critical_95(len(logs) - 1) * statistics.stdev(logs) / math.sqrt(len(logs))
    return math.exp(m), math.exp(m - half), math.exp(m + half)


def verdict(low: float, high: float, target: float = TARGET) -> str:
    """PASS / FAIL / INCONCLUSIVE of a CI [low, high] against ``target``."""
    if math.isnan(low):
        return "INCONCLUSIVE"
    if low >= target:
        return "PASS"
    return "FAIL" if high < target else "INCONCLUSIVE"


def main() -> None:
    """Run the interleaved rounds and print one line per round, then the ratio with its CI."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=16)
    ap.add_argument("--iters", type=int, default=3, help="e3bench iterations per round")
    ap.add_argument("--reps", type=int, default=3, help="bare calls per length per round")
    args = ap.parse_args()

    cfg = build_config(
        overrides=dict(model=args.model, batch_sizes="1", prompt_tokens=args.prompt_tokens,
                       max_new_tokens=args.new_tokens, meter="none", idle_seconds=0,
                       warmup_iters=0, min_iters=args.iters, min_seconds=0),  # fmt: skip
    )
    threads, source = resolve_threads(cfg.threads)
    backend = make_backend(cfg.backend, cfg.backend_options, cache_dir=cfg.cache_dir, threads=threads)
    backend.load(models.resolve(cfg.model), cfg.dtype, cfg.device)
    window = MeteredWindow.create("none", sync=backend.synchronize)
    ps = prompts.load_prompts(backend.encode, None, cfg.prompt_tokens)
    ids, mask = backend._batch(ps.batch(1), "left")
    rule = loops.StoppingRule(0, args.iters, 0.0, 600.0)

    def ours() -> float:
        res = loops.generation(backend, window, ps, 1, max_new_tokens=args.new_tokens, seed=0, rule=rule,
                               warnings=[])  # fmt: skip
        return res.decode_tokens_per_s.mean

    def bare() -> float:
        return bare_decode_tok_s(backend.model, ids, mask, args.new_tokens, args.reps)

    bare_decode_tok_s(backend.model, ids, mask, 4, 1)  # warm both paths
    ours()
    ratios = []
    for r in range(args.rounds):
        if r % 2 == 0:
            a, b = ours(), bare()
        else:
            b, a = bare(), ours()
        ratios.append(a / b)
        order = "e3bench first" if r % 2 == 0 else "bare first"
        print(f"round {r + 1:2d} ({order}): e3bench {a:.2f} tok/s   bare generate {b:.2f} tok/s   "
              f"ratio {ratios[-1]:.3f}", flush=True)  # fmt: skip
    window.close()
    backend.close()
    g, low, high = ratio_ci(ratios)
    print(f"\nmodel {args.model}, prompt {args.prompt_tokens} tokens, {args.new_tokens} new tokens, batch 1, "
          f"{threads} threads ({THREADS_SOURCES[source]}; torch reads back {torch.get_num_threads()})")  # fmt: skip
    print(f"ratio e3bench / bare decode tokens/s = {g:.3f} [95% CI {low:.3f}–{high:.3f}] over {args.rounds} "
          f"interleaved rounds (geometric mean, t over log ratios): {verdict(low, high)} against target ≥ {TARGET}")


if __name__ == "__main__":
    main()
