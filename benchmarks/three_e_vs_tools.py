"""One load instead of three: e3bench's single ``e3bench run`` (speed at batch 1 and 4, energy,
HellaSwag + GSM8K) against the sequence a user would otherwise run for the same three E's:

1. ``lm-eval run`` (its CLI, its ``hf`` model, its own model load) on the same HellaSwag and GSM8K
   items (HellaSwag: e3bench's local copy with lm-eval's preprocessed query; GSM8K: lm-eval's own
   ``gsm8k.yaml``, 0-shot, see ``tests/fakes/lmeval_local.py``), and
2. a latency/energy script with CodeCarbon (:func:`latency_script`, its own model load): batch 1
   and 4, the same prompt length, generated tokens, warm-up and iteration rule as ``e3bench run``,
   one CodeCarbon ``OfflineEmissionsTracker`` per batch size.

Each step is its own process, as a user would run it, timed wall-clock end to end (imports and
model load included), one after the other in this one run; the ratio is (lm-eval + script) /
e3bench. The accuracies are compared on the same items (per item where both log samples).

    python benchmarks/three_e_vs_tools.py                 # 20 items per task, bundled SmolLM2-135M
    python benchmarks/three_e_vs_tools.py --n 4 --max-gen-toks 32 --min-seconds 1   # a quick look
    python benchmarks/three_e_vs_tools.py --n 20 --json out.json

``--threads`` (default: the machine's physical cores as e3bench picks them) is set as
``OMP_NUM_THREADS`` for all three processes.
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

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def latency_script(argv: list[str]) -> int:
    """The latency/energy script a user writes without e3bench: transformers ``generate`` at each
    batch size, fixed output length, CodeCarbon around the measured iterations."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch-sizes", default="1,4")
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--warmup-iters", type=int, default=1)
    ap.add_argument("--min-iters", type=int, default=5)
    ap.add_argument("--min-seconds", type=float, default=5.0)
    args = ap.parse_args(argv)
    import logging

    import torch
    from codecarbon import OfflineEmissionsTracker
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logging.getLogger("codecarbon").setLevel(logging.ERROR)
    tok = AutoTokenizer.from_pretrained(args.model, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, trust_remote_code=False).eval()
    text = "The quick brown fox jumps over the lazy dog. " * args.prompt_tokens
    ids = tok(text, return_tensors="pt").input_ids[:, : args.prompt_tokens]
    out = {}
    for bs in [int(x) for x in args.batch_sizes.split(",")]:
        batch = ids.repeat(bs, 1)
        mask = torch.ones_like(batch)

        def step(batch=batch, mask=mask):
            with torch.inference_mode():
                model.generate(batch, attention_mask=mask, max_new_tokens=args.max_new_tokens,
                               min_new_tokens=args.max_new_tokens, do_sample=False, pad_token_id=tok.eos_token_id)  # fmt: skip

        for _ in range(args.warmup_iters):
            step()
        tracker = OfflineEmissionsTracker(country_iso_code="USA", save_to_file=False, log_level="error",
                                          measure_power_secs=1)  # fmt: skip
        tracker.start()
        lat, t0 = [], time.perf_counter()
        while len(lat) < args.min_iters or time.perf_counter() - t0 < args.min_seconds:
            t = time.perf_counter()
            step()
            lat.append(time.perf_counter() - t)
        tracker.stop()
        kwh = float(tracker.final_emissions_data.energy_consumed)
        toks = bs * args.max_new_tokens * len(lat)
        out[bs] = {"iterations": len(lat), "latency_ms_mean": 1000 * sum(lat) / len(lat),
                   "tokens_per_s": toks / sum(lat), "energy_j": kwh * 3.6e6, "j_per_token": kwh * 3.6e6 / toks}  # fmt: skip
        print(f"bs{bs}: {out[bs]}", flush=True)
    print("JSON " + json.dumps(out))
    return 0


def _timed(cmd: list[str], env: dict, log: Path) -> float:
    t0 = time.perf_counter()
    with log.open("w") as f:
        p = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    dt = time.perf_counter() - t0
    if p.returncode:
        sys.exit(f"{cmd[0]} failed (exit {p.returncode}); its output: {log}")
    return dt


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def _e3bench_results(out_dir: Path) -> dict[str, dict]:
    """task → {metrics, samples} from the one record ``e3bench run`` wrote under ``out_dir``."""
    recs = []
    for p in out_dir.rglob("*.json"):
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except ValueError:
            continue
        if isinstance(doc, dict) and "run_id" in doc and "effectiveness" in doc:
            recs.append(doc)
    if len(recs) != 1:
        sys.exit(f"expected one e3bench record under {out_dir}, found {len(recs)}")
    r = recs[0]
    out = {}
    for t in r["effectiveness"]:
        f = t.get("samples_file")
        out[t["task"]] = {"metrics": t["metrics"], "samples": _read_jsonl(Path(f)) if f and Path(f).is_file() else None}
    out["_efficiency"] = {"generation": [{"batch_size": g["batch_size"], "tpot_ms": (g.get("tpot_ms") or {}).get("mean")}
                                         for g in r["efficiency"]["generation"]]}  # fmt: skip
    return out


def _lm_eval_results(out_dir: Path) -> dict[str, dict]:
    (res,) = list(out_dir.rglob("results_*.json"))
    r = json.loads(res.read_text(encoding="utf-8"))
    out = {}
    for task, m in r["results"].items():
        files = list(out_dir.rglob(f"samples_{task}_*.jsonl"))
        out[task] = {"metrics": m, "samples": sorted(_read_jsonl(files[0]), key=lambda s: s["doc_id"]) if files else None}
    return out


def main() -> int:
    if sys.argv[1:2] == ["--as-latency-script"]:
        return latency_script(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="HF model directory (default: the bundled SmolLM2-135M, converted once)")
    ap.add_argument("--data", default=os.environ.get("E3BENCH_DATA_DIR", "/work/shared/data"))
    ap.add_argument("--n", type=int, default=20, help="items per task (default 20)")
    ap.add_argument("--max-gen-toks", type=int, default=256, help="GSM8K generated tokens at most (default 256)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--min-seconds", type=float, default=5.0, help="speed: seconds per batch size (e3bench's default 5)")
    ap.add_argument("--json", help="write the summary here")
    args = ap.parse_args()

    sys.path.insert(0, str(ROOT / "src"))
    sys.path.insert(0, str(ROOT / "tests"))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from eval_speed import bundled_model
    from fakes.lmeval_local import read_jsonl, write_gsm8k_task, write_jsonl, write_mc_task

    from e3bench.core.host import resolve_threads

    model_dir = Path(args.model) if args.model else bundled_model()
    threads = args.threads or resolve_threads(None)[0]
    tmp = Path(tempfile.mkdtemp(prefix="e3bench-3e-"))
    data = tmp / "data"
    hs = write_jsonl(data / "hellaswag" / "validation.jsonl",
                     read_jsonl(Path(args.data) / "hellaswag" / "validation.jsonl")[: args.n])  # fmt: skip
    gsm = write_jsonl(data / "gsm8k" / "test.jsonl", read_jsonl(Path(args.data) / "gsm8k" / "test.jsonl")[: args.n])
    yamls = tmp / "yamls"
    yamls.mkdir()
    write_mc_task(yamls, "t3_hellaswag", hs, "hellaswag")
    write_gsm8k_task(yamls, "t3_gsm8k", gsm, args.max_gen_toks)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "E3BENCH_DATA_DIR": str(data), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_DATASETS_CACHE": str(tmp / "hf-datasets"),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    speed = ["--batch-size", "1,4", "--prompt-tokens", "128", "--max-new-tokens", "32", "--warmup-iters", "1",
             "--min-iters", "5", "--min-seconds", str(args.min_seconds)]  # fmt: skip
    load = os.getloadavg()
    print(f"model {model_dir}, {args.n} items per task, threads {threads}, load {load[0]:.2f}", flush=True)
    e3_cmd = [str(BIN / "e3bench"), "run", "--model", str(model_dir), "--threads", str(threads), *speed,
              "--tasks", f"hellaswag,gsm8k:max_new_tokens={args.max_gen_toks}", "--limit", str(args.n),
              "--log-samples", "-o", str(tmp / "e3"), "--quiet"]  # fmt: skip
    lm_cmd = [str(BIN / "lm-eval"), "run", "--model", "hf", "--model_args", f"pretrained={model_dir},dtype=float32",
              "--tasks", "t3_hellaswag,t3_gsm8k", "--include_path", str(yamls), "--device", "cpu",
              "--batch_size", "1", "--output_path", str(tmp / "lm"), "--log_samples"]  # fmt: skip
    lat_cmd = [sys.executable, __file__, "--as-latency-script", "--model", str(model_dir), "--batch-sizes", "1,4",
               "--prompt-tokens", "128", "--max-new-tokens", "32", "--warmup-iters", "1", "--min-iters", "5",
               "--min-seconds", str(args.min_seconds)]  # fmt: skip
    t_e3 = _timed(e3_cmd, env, tmp / "e3bench.log")
    print(f"e3bench run: {t_e3:.1f} s", flush=True)
    t_lm = _timed(lm_cmd, env, tmp / "lm-eval.log")
    print(f"lm-eval run: {t_lm:.1f} s", flush=True)
    t_lat = _timed(lat_cmd, env, tmp / "latency.log")
    print(f"latency/energy script with CodeCarbon: {t_lat:.1f} s", flush=True)

    e3 = _e3bench_results(tmp / "e3")
    lm = _lm_eval_results(tmp / "lm")
    agree = {}
    hs3, hsl = e3["hellaswag"], lm["t3_hellaswag"]
    for k in ("acc", "acc_norm"):
        agree[f"hellaswag_{k}"] = (hs3["metrics"][k], hsl["metrics"][f"{k},none"])
    if hs3["samples"] and hsl["samples"]:
        agree["hellaswag_items_identical"] = [(s["acc"], s["acc_norm"]) for s in hs3["samples"]] == [
            (float(s["acc"]), float(s["acc_norm"])) for s in hsl["samples"]]
    g3, gl = e3["gsm8k"], lm["t3_gsm8k"]
    for k, f in (("strict", "strict-match"), ("flexible", "flexible-extract")):
        agree[f"gsm8k_exact_match_{k}"] = (g3["metrics"][f"exact_match_{k}"], gl["metrics"][f"exact_match,{f}"])
    if g3["samples"] and gl["samples"]:
        texts = {s["doc_id"]: s["resps"][0][0] for s in gl["samples"]}
        agree["gsm8k_texts_identical"] = [s["generation"] for s in g3["samples"]] == [texts[i] for i in sorted(texts)]
    same = all(v[0] == v[1] if isinstance(v, tuple) else v for v in agree.values())
    tools = t_lm + t_lat
    summary = {"model": str(model_dir), "items_per_task": args.n, "threads": threads, "load_before": load,
               "load_after": os.getloadavg(), "e3bench_run_s": t_e3, "lm_eval_run_s": t_lm,
               "latency_codecarbon_script_s": t_lat, "tools_total_s": tools, "wall_time_ratio": tools / t_e3,
               "accuracies": agree, "accuracies_agree": same, "logs": str(tmp)}  # fmt: skip
    print(f"tools (lm-eval + CodeCarbon script) {tools:.1f} s vs e3bench run {t_e3:.1f} s: "
          f"ratio {tools / t_e3:.2f}x; accuracies agree on the same items: {same}")
    for k, v in agree.items():
        print(f"  {k}: " + (f"e3bench {v[0]:.4f} lm-eval {v[1]:.4f}" if isinstance(v, tuple) else str(v)))
    print("JSON " + json.dumps(summary))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
