"""Does ``e3bench ls`` and ``e3bench report`` hold up at 10,000 records? Writes synthetic but valid
records (each one a :class:`~e3bench.results.schema.ResultRecord` that loads with
:func:`e3bench.results.store.load`) into a temporary folder, then times the commands as a user
runs them (a fresh ``python -m e3bench`` process each, wall clock) and prints the sizes of what
the report wrote.

    .venv/bin/python benchmarks/report_scale.py [--records 10000] [--repeats 2] [--keep DIR] [--profile]

Targets (issue 14): ``ls`` <= 1 s on a warm index, ``report`` <= 15 s, ``report.html`` <= 3 MB;
each printed with PASS/MISS by wall time and, for the timings, by CPU time too (what the command
would take on an idle machine when other work shares this one).
The records: ``records / repeats`` configurations (model x backend x dtype x batch sizes x
prompt length x output length x seed), each run ``repeats`` times (same config hash, other run id),
2-3 batch sizes with 10 measured iterations and every raw sample, an estimated energy figure per
batch size, and one or two tasks with standard errors. ``--profile`` also runs the report in this
process under cProfile and prints the 25 most expensive functions.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import itertools
import math
import os
import pstats
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from e3bench.bench import envinfo
from e3bench.config.run import RunConfig
from e3bench.core.timing import summarize
from e3bench.energy.accounting import EnergySummary
from e3bench.results import store
from e3bench.results.index import INDEX_NAME
from e3bench.results.schema import BatchResult, Efficiency, ModelInfo, RawSamples, ResultRecord, TaskResult

MODELS = {"SmolLM2-135M": 135e6, "SmolLM2-360M": 360e6, "Qwen2.5-0.5B": 494e6, "TinyLlama-1.1B": 1.1e9,
          "Qwen2.5-1.5B": 1.54e9, "gemma-2-2b": 2.6e9, "Phi-3.5-mini": 3.8e9, "Llama-3.1-8B": 8.0e9}  # fmt: skip
BACKENDS = {"pytorch": 1.0, "onnxrt": 1.3, "llamacpp": 1.6, "vllm": 4.0}
DTYPES = {"fp32": (1.0, 4.0, 0.0), "bf16": (1.7, 2.0, 0.002), "fp16": (1.8, 2.0, 0.001), "int8": (2.2, 1.0, 0.01),
          "int4": (2.9, 0.5, 0.03)}  # dtype: (speed factor, bytes per parameter, accuracy lost)  # fmt: skip
BATCHES = ((1, 4), (1, 8), (4, 16, 32))
PROMPTS = (64, 128, 256, 512)
OUTPUTS = (32, 64)


def _configs(n: int, workloads: int = 8) -> list[dict]:
    """``n`` distinct configurations (as stored: ``RunConfig.model_dump``) over the first
    ``workloads`` (prompt, output) length pairs: the grid in a seeded random order (so a few
    hundred cover every model, backend and precision), then the grid again with another ``seed``."""
    lengths = list(itertools.product(PROMPTS, OUTPUTS))[:workloads]
    grid = [(m, b, d, bs, p, o) for m, b, d, bs, (p, o) in itertools.product(MODELS, BACKENDS, DTYPES, BATCHES, lengths)]
    random.Random(1).shuffle(grid)
    out = []
    for seed, (model, backend, dtype, batches, prompt, output) in itertools.islice(itertools.product(range(1000), grid), n):
        device = "cuda" if backend == "vllm" else "cpu"
        cfg = RunConfig(model=f"org/{model}", backend=backend, dtype=dtype, device=device, batch_sizes=batches,
                        prompt_tokens=prompt, max_new_tokens=output, seed=seed, min_iters=10, tasks=("hellaswag",),
                        limit=500, sweep=f"{model}-{backend}")  # fmt: skip
        out.append({"config": cfg.model_dump(mode="json"), "hash": cfg.config_hash()})
    return out


def _energy(rng: random.Random, window: str, tokens: float, seconds: float, power_w: float) -> EnergySummary:
    gross = power_w * seconds
    net = gross * rng.uniform(0.55, 0.7)
    return EnergySummary(window=window, method="estimated", sensor="cpu-tdp model (synthetic)", basis="net",
                         duration_s=seconds, gross_energy_j=gross, net_energy_j=net, idle_power_w=power_w * 0.35,
                         mean_power_w=power_w, ept_total_j_per_token=net / tokens, ept_out_j_per_token=net / tokens,
                         tokens_per_j=tokens / net)  # fmt: skip


def _batch(rng: random.Random, bs: int, prompt: int, out: int, tok_s: float, power_w: float) -> BatchResult:
    iters = 10
    gap = 1e3 / tok_s * (1 + 0.15 * math.log2(bs))  # ms between tokens of one sequence
    itl = [[rng.gauss(gap, gap * 0.05) for _ in range(out - 1)] for _ in range(iters)]
    ttft = [rng.gauss(prompt * bs * gap / 40, gap) + gap for _ in range(iters)]
    e2e = [t + sum(g) for t, g in zip(ttft, itl, strict=True)]
    seconds = sum(e2e) / 1e3
    decode = [bs * (out - 1) / ((e - t) / 1e3) for e, t in zip(e2e, ttft, strict=True)]
    return BatchResult(
        batch_size=bs, iterations=iters, measured_s=seconds, min_iters_asked=iters,
        input_tokens_per_request_mean=prompt, output_tokens_per_request=out, e2e_ms=summarize(e2e),
        ttft_ms=summarize(ttft), tpot_ms=summarize([(e - t) / (out - 1) for e, t in zip(e2e, ttft, strict=True)]),
        itl_ms=summarize([x for g in itl for x in g]), prefill_tokens_per_s=summarize([bs * prompt * 1e3 / t for t in ttft]),
        decode_tokens_per_s=summarize(decode), throughput_tokens_per_s=bs * out * iters / seconds,
        requests_per_s=bs * iters / seconds,
        energy=_energy(rng, f"generation bs{bs}", bs * (prompt + out) * iters, seconds, power_w),
        raw=RawSamples(e2e_ms=e2e, ttft_ms=ttft, itl_ms=itl, output_tokens=[out] * iters),
    )  # fmt: skip


def _record(rng: random.Random, i: int, c: dict, manifest) -> ResultRecord:
    cfg = c["config"]
    name = cfg["model"].split("/")[-1]
    params = MODELS[name]
    speed, bytes_per_param, lost = DTYPES[cfg["dtype"]]
    tok_s = 2.5e10 / params * speed * BACKENDS[cfg["backend"]] * rng.uniform(0.9, 1.1)
    power = 300.0 if cfg["device"] == "cuda" else 45.0
    acc = min(0.85, 0.3 + 0.06 * math.log2(params / 1e8)) - lost + rng.gauss(0, 0.004)
    tasks = [TaskResult(task="hellaswag", engine="e3bench", metrics={"acc": acc - 0.05, "acc_norm": acc},
                        stderr={"acc": math.sqrt(acc * (1 - acc) / 500), "acc_norm": math.sqrt(acc * (1 - acc) / 500)},
                        n_items=500, duration_s=40.0, examples_per_s=12.5)]  # fmt: skip
    return ResultRecord(
        run_id=f"20260101T{i // 3600 % 24:02d}{i // 60 % 60:02d}{i % 60:02d}-{i:06x}",
        created_utc=f"2026-01-{1 + i // 86400:02d}T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}+00:00",
        status="ok", config=cfg, config_hash=c["hash"], manifest=manifest,
        model=ModelInfo(name=name, source="hub", path=f"/models/{name}", architecture="decoder-only",
                        model_type="llama", parameters=int(params), weights_bytes=int(params * bytes_per_param),
                        dtype=cfg["dtype"], device=cfg["device"]),
        efficiency=Efficiency(load_time_s=rng.uniform(1, 9), load_note="synthetic", prompt_source="synthetic",
                              peak_rss_bytes=int(params * bytes_per_param * rng.uniform(1.2, 1.3) + 4e8),
                              generation=[_batch(rng, bs, cfg["prompt_tokens"], cfg["max_new_tokens"], tok_s, power)
                                          for bs in cfg["batch_sizes"]]),
        effectiveness=tasks, duration_s=rng.uniform(60, 600),
    )  # fmt: skip


def write_records(root: Path, n: int, repeats: int = 2, seed: int = 0, workloads: int = 8) -> int:
    """Write ``n`` synthetic records under ``root`` (``n / repeats`` configurations over
    ``workloads`` prompt/output lengths, each run ``repeats`` times); returns the bytes written."""
    rng = random.Random(seed)
    manifest = envinfo.collect(sample_cpu=False)
    configs = _configs(max(1, n // repeats), workloads)
    for i in range(n):
        c = configs[i % len(configs)]
        rec = _record(rng, i, c, manifest)
        store.save(rec, root, c["config"]["sweep"])
    return sum(p.stat().st_size for p in root.rglob("*.json"))


def _cli(*args: str) -> tuple[float, float, subprocess.CompletedProcess]:
    """Run ``e3bench ARGS`` in a fresh process: (wall seconds, CPU seconds, the result). CPU time
    (user + system of the child) is what the command costs on a machine shared with other work,
    where wall time also counts waiting for a core."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "e3bench", *args], capture_output=True, text=True,
                         env={**os.environ, "COLUMNS": "200"})  # fmt: skip
    took = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    if res.returncode != 0:
        raise SystemExit(f"e3bench {' '.join(args)} failed ({res.returncode}):\n{res.stderr[-2000:]}")
    return took, cpu, res


def _line(what: str, wall: float, cpu: float, target: float | None = None) -> str:
    """One timing line; with a target, PASS/MISS by wall time (and by CPU time, which is what it
    would take on an idle machine when others share this one)."""
    out = f"{what:52s} {wall:7.2f} s wall {cpu:7.2f} s CPU"
    if target is not None:
        out += f"   target <= {target:g} s: {_verdict(wall <= target)} (by CPU time: {_verdict(cpu <= target)})"
    return out


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _profile_report(root: Path, out: Path) -> None:
    from e3bench.report.render import build_report

    prof = cProfile.Profile()
    prof.runcall(build_report, root, out)
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(25)
    print(s.getvalue())


def main() -> None:
    """Generate, time, print."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=2, help="runs per configuration")
    ap.add_argument("--keep", type=Path, help="write the records here (kept; reused when it has records) "
                    "instead of a temporary folder")  # fmt: skip
    ap.add_argument("--profile", action="store_true", help="also profile the report in this process")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="e3bench-scale-") as tmp:
        root = args.keep or Path(tmp) / "results"
        t0 = time.perf_counter()
        if args.keep and any(root.rglob("*.json")):
            n = sum(1 for _ in root.rglob("*.json"))
            print(f"reusing the {n} records in {root}")
        else:
            size = write_records(root, args.records, args.repeats)
            print(f"{args.records} records ({args.records // args.repeats} configurations x {args.repeats} repeats), "
                  f"{size / 1e6:.0f} MB, written in {time.perf_counter() - t0:.0f} s to {root}")  # fmt: skip
        (root / INDEX_NAME).unlink(missing_ok=True)  # a kept folder's index from an earlier run
        cold = _cli("ls", str(root))
        warm = _cli("ls", str(root))
        every = _cli("ls", str(root), "--format", "csv")
        filt = _cli("ls", str(root), "--filter", "dtype=int4", "--filter", "batch_size=1")
        n_rows = len(every[2].stdout.splitlines()) - 1
        print(_line("e3bench ls (cold index: builds it)", *cold[:2]))
        print(_line(f"e3bench ls (warm index; the newest 50 of {n_rows:,} rows)", *warm[:2], target=1))
        print(_line(f"e3bench ls --format csv (warm; all {n_rows:,} rows)", *every[:2]))
        print(_line("e3bench ls --filter dtype=int4 --filter batch_size=1", *filt[:2]))
        out = Path(tmp) / "report"
        rep = _cli("report", str(root), "-o", str(out))
        html = out / "report.html"
        print(_line("e3bench report", *rep[:2], target=15))
        mb = html.stat().st_size / 1e6
        print(f"{'report.html':52s} {mb:7.2f} MB   target <= 3 MB: {_verdict(mb <= 3)}")
        other = sorted(p for p in out.rglob("*") if p.is_file() and p != html)
        print(f"other files: {len(other)}, {sum(p.stat().st_size for p in other) / 1e6:.1f} MB "
              f"({', '.join(f'{p.relative_to(out)} {p.stat().st_size / 1e3:.0f} kB' for p in other[:40])})")  # fmt: skip
        if args.profile:
            _profile_report(root, Path(tmp) / "report-profiled")


if __name__ == "__main__":
    main()
