"""Is e3bench's measurement free? Compare its decode tokens/s with a bare ``model.generate``
loop on the same loaded model, in the same process, interleaved (A B A B ...) so machine drift
hits both sides equally. Prints the ratio; the target is ≥ 0.98.

    .venv/bin/python benchmarks/overhead.py [--model smollm2-135m] [--rounds 4]

Bare decode tokens/s = (n − 1) / (t(n) − t(1)) where t(k) is the wall time of
``model.generate`` producing exactly k tokens: the time of the first token (prefill) is
removed by difference, with no hook in the bare loop at all.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from e3bench.config.run import build_config
from e3bench.backends.factory import make_backend
from e3bench.bench.runner import Runner


def bare_decode_tok_s(model, ids, mask, n_new: int, reps: int) -> float:
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()

    cfg = build_config(
        overrides=dict(model=args.model, batch_sizes="1", prompt_tokens=args.prompt_tokens,
                       max_new_tokens=args.new_tokens, meter="none", idle_seconds=0,
                       warmup_iters=0, min_iters=3, min_seconds=0),  # fmt: skip
    )
    backend = make_backend(cfg.backend, cfg.backend_options, cache_dir=cfg.cache_dir, threads=cfg.threads)
    from e3bench.backends import models
    from e3bench.bench import prompts

    runner = Runner(cfg, backend=backend)
    runner._setup_energy()
    backend.load(models.resolve(cfg.model), cfg.dtype, cfg.device)
    ps = prompts.load_prompts(backend.encode, None, cfg.prompt_tokens)
    ids, mask = backend._batch(ps.batch(1), "left")
    # warm both paths
    bare_decode_tok_s(backend.model, ids, mask, 4, 1)
    runner._generation(ps, 1)

    ours, bare = [], []
    for r in range(args.rounds):
        res = runner._generation(ps, 1)
        ours.append(res.decode_tokens_per_s.mean)
        bare.append(bare_decode_tok_s(backend.model, ids, mask, args.new_tokens, 3))
        print(f"round {r + 1}: e3bench {ours[-1]:.2f} tok/s   bare generate {bare[-1]:.2f} tok/s", flush=True)
    o, b = statistics.median(ours), statistics.median(bare)
    print(f"\nmodel {args.model}, prompt {args.prompt_tokens} tokens, {args.new_tokens} new tokens, "
          f"torch threads {torch.get_num_threads()}")  # fmt: skip
    print(f"decode tokens/s  e3bench (median of {args.rounds}) = {o:.2f}   bare model.generate = {b:.2f}")
    print(f"ratio e3bench / bare = {o / b:.3f}   (target ≥ 0.98: {'PASS' if o / b >= 0.98 else 'FAIL'})")


if __name__ == "__main__":
    main()
