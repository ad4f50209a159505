"""Backends × precisions on the bundled SmolLM2-135M: decode tok/s, TTFT, peak RSS, accuracy.

Per backend it also prints the bytes one decode step reads and the roofline fraction (decode
tok/s over ``bandwidth / bytes per step``), both computed the same way for every backend and
precision (``e3bench.core.decodebytes``: each weight once, an embedding lookup as one row, tied
embeddings once, KV cache not included); a fraction above 100 % is printed as a measurement
error, never as a fraction.

Every configuration runs ``e3bench.bench.runner.run_one`` — the same path as ``e3bench run`` — in its
own subprocess, so peak RSS (``ru_maxrss``) belongs to that configuration alone. Accuracy is
HellaSwag (``--limit`` items, acc_norm) through ``e3bench.evals.tasks`` on the same loaded backend;
"retained" is the ratio to PyTorch fp32 (MLPerf's rule of thumb: ≥ 99 %).

For llama.cpp the script also times a 64-token generation twice over: with our clock inside
``on_token`` and with the library's own counters (``llama_perf_context``: eval time / eval
tokens) on the same file, and prints the difference (target: within 5 %). For ONNX Runtime GenAI it
reproduces onnxruntime-genai's own benchmark_e2e.py method on the same build (TTFT and TPOT, target:
within 5 %).

    E3BENCH_DATA_DIR=../shared/data python benchmarks/backends.py            # full table
    python benchmarks/backends.py --configs pytorch:fp32,llamacpp:int4 --limit 50
    python benchmarks/backends.py --configs onnxrt:int8:int8_mode=static   # backend:precision[:k=v;k=v]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT = (
    "pytorch:fp32,pytorch:bf16,pytorch:int8,pytorch:int4,"
    "onnxrt:fp32,onnxrt:int8,onnxrt:int8:int8_mode=static,"
    "ortgenai:fp32,ortgenai:int4,"
    "llamacpp:int4,llamacpp:int8,llamacpp:fp16"
)
#: what the generic precision means on each backend, for the table
LABEL = {
    ("llamacpp", "int4"): "Q4_1 (shipped)", ("llamacpp", "int8"): "Q8_0", ("llamacpp", "fp16"): "F16",
    ("ortgenai", "int4"): "int4 (MatMulNBits)",
}  # fmt: skip


def parse_item(item: str) -> tuple[str, str, dict]:
    """``backend:precision[:key=value;key=value]`` → (backend, precision, backend options)."""
    backend, precision, *rest = item.split(":", 2)
    opts = dict(kv.split("=", 1) for kv in rest[0].split(";")) if rest else {}
    return backend, precision, opts


def child(item: str, args) -> dict:
    from e3bench.config.run import RunConfig
    from e3bench.bench.runner import run_one

    backend, precision, opts = parse_item(item)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cfg = RunConfig(
        model=args.model,
        backend=backend,
        backend_options=opts,
        dtype=precision,
        threads=args.threads,
        batch_sizes=(1,),
        prompt_tokens=args.prompt_tokens,
        max_new_tokens=args.max_new_tokens,
        warmup_iters=1,
        min_iters=args.iters,
        min_seconds=0.0,
        max_seconds=120.0,
        idle_seconds=0.0,
        tasks=tuple(t for t in args.tasks.split(",") if t),
        limit=args.limit,
        log_samples=True,  # per-item scores: "retained" is judged by a paired interval
        output_dir=tempfile.mkdtemp(prefix="e3b-bench-"),
    )
    t0 = time.perf_counter()
    rec = run_one(cfg)
    g = rec.efficiency.generation[0]
    out = {
        "backend": backend,
        "precision": precision,
        "options": opts,
        "dtype_run": rec.model.dtype,
        "weights_mb": rec.model.weights_bytes / 2**20,  # bytes per decode step (core.decodebytes), MiB
        **_roofline(rec, g),
        "load_s": rec.efficiency.load_time_s,
        "decode_tok_s": g.decode_tokens_per_s.mean if g.decode_tokens_per_s else None,
        "decode_ci95": (
            (g.decode_tokens_per_s.ci95_high - g.decode_tokens_per_s.ci95_low) / 2 if g.decode_tokens_per_s else None
        ),
        "ttft_ms": g.ttft_ms.p50 if g.ttft_ms else None,
        "peak_rss_mb": rec.efficiency.peak_rss_bytes / 2**20,
        "accuracy": {t.task: t.metrics for t in rec.effectiveness},
        "scores": {t.task: {"stderr": t.stderr, "n_items": t.n_items, "samples_file": t.samples_file}
                   for t in rec.effectiveness},
        "warnings": rec.warnings,
        "wall_s": time.perf_counter() - t0,
    }
    if backend == "llamacpp":
        out["llama_perf"] = llama_perf_check(precision, args)
    if backend == "ortgenai":
        out["og_e2e"] = og_e2e_check(precision, args)
    return out


def _roofline(rec, g) -> dict:
    """The record's roofline for the batch-1 row: fraction (None when flagged), the flag, bandwidth."""
    rl = rec.efficiency.roofline
    if rl is None:
        return {"roofline_pct": None, "roofline_error": "no roofline (no bandwidth for this device)", "bandwidth_gb_s": None}
    return {
        "roofline_pct": None if g.roofline_fraction is None else 100 * g.roofline_fraction,
        "roofline_error": rl.measurement_error,
        "bandwidth_gb_s": rl.bandwidth_bytes_per_s / 1e9,
        "bandwidth_how": "; ".join(
            x for x in (rl.bandwidth_method, rl.bandwidth_source and f"source: {rl.bandwidth_source}",
                        rl.bandwidth_measured_utc and f"measured {rl.bandwidth_measured_utc}",
                        rl.bandwidth_other_cpu_busy_pct is not None and f"other CPU load {rl.bandwidth_other_cpu_busy_pct:.0f} %")
            if x
        ),
        "bytes_rule": rl.weights_rule,
    }


def roofline_cell(r: dict) -> str:
    """The roofline column: the fraction, or why there is none (a fraction > 100 % is an error)."""
    if r.get("roofline_error"):
        return "measurement error (>100 %)" if "measurement error" in r["roofline_error"] else "—"
    return fmt(r.get("roofline_pct"), ".1f") + (" %" if r.get("roofline_pct") is not None else "")


def llama_perf_check(precision: str, args) -> dict:
    """Our decode tok/s (clock in on_token) vs llama.cpp's own counters, same file, same run."""
    from e3bench.core.api import GenParams
    from e3bench.backends.llamacpp import LlamaCppBackend
    from e3bench.backends.models import resolve
    from e3bench.core.timing import clock

    b = LlamaCppBackend(threads=args.threads)
    b.load(resolve(args.model), precision, "cpu")
    ids = b.encode("The history of the Roman Empire begins with the founding of the city of Rome. " * 4)
    b.generate([ids], GenParams(max_new_tokens=8))  # warm-up
    rows = []
    for _ in range(3):
        stamps: list[float] = []
        b.perf_reset()
        b.generate([ids], GenParams(max_new_tokens=64), on_token=lambda _n, s=stamps: s.append(clock()))
        p = b.perf()
        ours = (len(stamps) - 1) / (stamps[-1] - stamps[0])
        lib = p["eval_tokens"] / (p["eval_ms"] / 1e3)
        rows.append((ours, lib))
    b.close()
    ours = sum(r[0] for r in rows) / len(rows)
    lib = sum(r[1] for r in rows) / len(rows)
    return {"ours_tok_s": ours, "llama_perf_tok_s": lib, "diff_pct": 100 * (ours - lib) / lib, "file": str(b.gguf_path)}


def og_e2e_check(precision: str, args, reps: int = 5) -> dict:
    """Our TTFT / TPOT (clock in ``on_token``, through the backend) against onnxruntime-genai's
    own benchmark method on the same build: ``benchmark/python/benchmark_e2e.py`` of
    microsoft/onnxruntime-genai, in og 0.18's API (``compute_logits`` is gone: its "prompt
    processing" is ``append_tokens``, its "token generation" + "sampling" one
    ``generate_next_token``): random prompt tokens (its ``--use_random_tokens``),
    ``max_length = min_length = prompt + generated`` (never stops early), warm-up runs, a fresh
    ``og.Model`` from the folder (with the run's thread count, below), greedy (its ``-k 1``)."""
    import numpy as np
    import onnxruntime_genai as og

    from e3bench.core.api import GenParams
    from e3bench.backends.factory import make_backend
    from e3bench.backends.models import resolve
    from e3bench.core.timing import clock

    n, g = args.prompt_tokens, args.max_new_tokens
    ids = np.random.default_rng(0).integers(100, 1000, size=(1, n))
    b = make_backend("ortgenai", {}, threads=args.threads)
    b.load(resolve(args.model), precision, "cpu")
    folder = b.model_dir

    def ours_once():
        stamps: list[float] = []
        t0 = clock()
        b.generate([ids[0].tolist()], GenParams(max_new_tokens=g), on_token=lambda _n, s=stamps: s.append(clock()))
        return stamps[0] - t0, (stamps[-1] - stamps[0]) / (len(stamps) - 1)

    # benchmark_e2e loads og.Model(input_folder): its threads are what genai_config.json says. The
    # builder writes none, and og's default then is not the run's count (on the loaded 2-core
    # machine it ran like 1 thread, about 2x faster than 2 threads there), so the run's count is
    # written into the config here as the backend does: the check compares the methods, not
    # thread counts.
    config = og.Config(str(folder))
    config.overlay(json.dumps({"model": {"decoder": {"session_options": {
        "intra_op_num_threads": args.threads, "inter_op_num_threads": 1}}}}))  # fmt: skip
    model = og.Model(config)

    def lib_once():
        params = og.GeneratorParams(model)
        params.set_search_options(do_sample=False, max_length=n + g, min_length=n + g)
        gen = og.Generator(model, params)
        t = time.perf_counter()
        gen.append_tokens(ids.astype(np.int32))  # prompt processing
        prompt_s = time.perf_counter() - t
        t = time.perf_counter()
        gen.generate_next_token()  # sampling of the first token
        first_s = time.perf_counter() - t
        steps = []
        i = 1
        while not gen.is_done() and i < g:
            t = time.perf_counter()
            gen.generate_next_token()  # token generation + sampling
            steps.append(time.perf_counter() - t)
            i += 1
        return prompt_s + first_s, sum(steps) / len(steps)

    ours_once(), lib_once()  # warm-up (benchmark_e2e: --warmup)
    ours, lib = [], []
    for _ in range(reps):  # interleaved, so a change in the machine's load hits both alike
        ours.append(ours_once())
        lib.append(lib_once())
    b.close()
    ours_ttft, ours_tpot = [x[0] for x in ours], [x[1] for x in ours]
    ttft_o, tpot_o = float(np.median(ours_ttft)), float(np.median(ours_tpot))
    ttft_l, tpot_l = float(np.median([x[0] for x in lib])), float(np.median([x[1] for x in lib]))
    return {
        "ours_ttft_ms": 1e3 * ttft_o, "e2e_ttft_ms": 1e3 * ttft_l, "ttft_diff_pct": 100 * (ttft_o - ttft_l) / ttft_l,
        "ours_tpot_ms": 1e3 * tpot_o, "e2e_tpot_ms": 1e3 * tpot_l, "tpot_diff_pct": 100 * (tpot_o - tpot_l) / tpot_l,
        "reps": reps, "prompt_tokens": n, "new_tokens": g, "folder": str(folder),
    }  # fmt: skip


def fmt(x, spec=".1f", none="—"):
    return none if x is None else format(x, spec)


def retained_cell(ref: dict, row: dict, task: str, metric: str = "acc_norm") -> str:
    """acc_norm retained against the reference with its 95 % interval and the report's word
    (PASS / FAIL / INCONCLUSIVE against MLPerf's 99 %): the report's one comparison of two task
    scores (:func:`e3bench.report.variants.compare_tasks`), paired over the logged items."""
    from e3bench.report.compare import TaskScore
    from e3bench.report.variants import compare_tasks

    def score(r: dict) -> TaskScore:
        s = r.get("scores", {}).get(task, {})
        files = [Path(s["samples_file"])] if s.get("samples_file") else []
        return TaskScore(task, metric, r["accuracy"][task][metric], s.get("stderr", {}).get(metric), s.get("n_items", 0), files)

    c = compare_tasks(score(ref), score(row))
    iv = c.retained
    ci = f" [{100 * iv.low:.1f}, {100 * iv.high:.1f}]" if iv.known else " (no interval)"
    return f"{100 * iv.estimate:.1f}%{ci} {c.retained_verdict}{'' if c.paired else ' (unpaired)'}"


def table(rows: list[dict], task: str) -> str:
    ref = next((r for r in rows if r.get("backend") == "pytorch" and r.get("precision") == "fp32" and "error" not in r), None)
    ref_acc = (ref or {}).get("accuracy", {}).get(task, {}).get("acc_norm")
    head = (
        "| backend | precision | bytes/decode step MiB | decode tok/s (±95% CI) | roofline | TTFT p50 ms | "
        f"peak RSS MiB | {task} acc_norm | retained vs pytorch fp32 [95% CI] ≥ 99%? |\n|---|---|---:|---:|---:|---:|---:|---:|---|"
    )
    lines = [head]
    for r in rows:
        label = LABEL.get((r["backend"], r["precision"]), r["precision"])
        if r.get("options"):
            label += " (" + ", ".join(f"{k}={v}" for k, v in r["options"].items()) + ")"
        if "error" in r:
            err = " ".join(r["error"].split())[:100]
            lines.append(f"| {r['backend']} | {label} | — | failed: {err} | | | | | |")
            continue
        acc = r["accuracy"].get(task, {}).get("acc_norm")
        kept = retained_cell(ref, r, task) if acc is not None and ref_acc and r is not ref else ""
        lines.append(
            f"| {r['backend']} | {label} | {fmt(r['weights_mb'], '.0f')} | {fmt(r['decode_tok_s'])} "
            f"(±{fmt(r['decode_ci95'])}) | {roofline_cell(r)} | {fmt(r['ttft_ms'], '.0f')} | {fmt(r['peak_rss_mb'], '.0f')} | "
            f"{fmt(acc, '.3f')} | {kept} |"
        )
    ok = [r for r in rows if "error" not in r]
    if ok:
        bws = sorted({round(r["bandwidth_gb_s"], 1) for r in ok if r.get("bandwidth_gb_s")})
        rule = next((r["bytes_rule"] for r in ok if r.get("bytes_rule")), "")
        hows = sorted({r["bandwidth_how"] for r in ok if r.get("bandwidth_how")})
        lines.append(f"\nroofline = decode tok/s ÷ (bandwidth ÷ bytes per decode step); bandwidth "
                     f"{', '.join(f'{b:g}' for b in bws) or '—'} GB/s ({' | '.join(hows) or 'how: not recorded'}); {rule}")  # fmt: skip
        for r in ok:
            if r.get("roofline_error") and "measurement error" in r["roofline_error"]:
                lines.append(f"{r['backend']} {r['precision']}: {r['roofline_error']}")
    for r in rows:
        lp = r.get("llama_perf")
        if lp:
            lines.append(
                f"\nllama.cpp {LABEL.get(('llamacpp', r['precision']), r['precision'])}: our decode "
                f"{lp['ours_tok_s']:.1f} tok/s vs llama_perf {lp['llama_perf_tok_s']:.1f} tok/s "
                f"({lp['diff_pct']:+.1f}%; {Path(lp['file']).name})"
            )
    for r in rows:
        oe = r.get("og_e2e")
        if oe:
            lines.append(
                f"\nonnxruntime-genai {r['precision']}: ours TTFT {oe['ours_ttft_ms']:.1f} ms / TPOT {oe['ours_tpot_ms']:.2f} ms "
                f"vs benchmark_e2e's method TTFT {oe['e2e_ttft_ms']:.1f} ms ({oe['ttft_diff_pct']:+.1f}%) / TPOT "
                f"{oe['e2e_tpot_ms']:.2f} ms ({oe['tpot_diff_pct']:+.1f}%); medians of {oe['reps']}, "
                f"{oe['prompt_tokens']}+{oe['new_tokens']} tokens, same build"
            )
    lines.append(
        f"\n{task}: 'retained' is acc_norm ÷ pytorch fp32's over the same items, its 95 % interval paired "
        "item by item (Agresti-Min); PASS only when the whole interval is ≥ 99 % (MLPerf's rule of thumb), "
        "INCONCLUSIVE when it spans 99 % (200 items cannot establish 99 %)."
        if task
        else ""
    )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default=DEFAULT, help="comma-separated backend:precision")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--tasks", default="hellaswag", help="'' to skip accuracy")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--json", default=None, help="write all rows here")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        backend, precision, opts = parse_item(args.one)
        try:
            print("E3B-ROW " + json.dumps(child(args.one, args)))
        except Exception as exc:  # noqa: BLE001 - the parent prints it in the table
            err = {"backend": backend, "precision": precision, "options": opts, "error": f"{type(exc).__name__}: {exc}"}
            print("E3B-ROW " + json.dumps(err))
        return 0
    rows = []
    for item in args.configs.split(","):
        backend, precision, opts = parse_item(item)
        print(f"running {backend} {precision} ...", file=sys.stderr, flush=True)
        proc = subprocess.run(
            [sys.executable, __file__, "--one", item, *_strip_configs(sys.argv[1:])],
            capture_output=True,
            text=True,
            check=False,
        )
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("E3B-ROW ")), None)
        if line:
            row = json.loads(line[8:])
        else:  # crashed or killed: say how, with the last line that is not a warning
            last = [ln for ln in proc.stderr.splitlines() if ln.strip() and "Warning" not in ln and " W1" not in ln[:6]]
            why = f"exit {proc.returncode}" + (f": {last[-1].strip()[:200]}" if last else "")
            row = {"backend": backend, "precision": precision, "options": opts, "error": why}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    task = args.tasks.split(",")[0] if args.tasks else ""
    print(table(rows, task))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


def _strip_configs(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--configs":
            skip = True
            continue
        if a.startswith("--configs="):
            continue
        out.append(a)
    return out


if __name__ == "__main__":
    sys.exit(main())
