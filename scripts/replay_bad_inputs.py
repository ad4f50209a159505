"""Replay the bad-input table of ../shared/findings/bad-inputs.md against the current code.

The table (issue 13) lists 177 bad inputs by id, subcommand, description and the verdict they
got then (G = handled well, P = partly, B = badly). It holds no exact commands, so each row's
command is rebuilt here (``CASES``) from its description, with the placeholders of the table's
own setup: ``TL``/``TB`` (tiny Llama / BERT from ``tests/fakes/testing.build_tiny_models``,
context 512), ``GGUF`` (the bundled smollm2-135m), ``IN`` (a folder of prepared bad files),
``OUT`` (a results folder seeded with ``runs/earlier.json``, whose hash is checked after every
case), ``RO`` (the command runs without root's permission bypass, so ``chmod 555`` bites).

Each case runs ``python -m e3bench ...`` in a scratch folder with a timeout and is classified:

* G: an error where an error is right — nonzero exit, exactly one ``error:`` line (or a click
  usage error) holding what the case needs named, no traceback, before the model loads where
  the case says so; or a success where success is right (exit 0, the case's check holds);
* B: a traceback, exit 0 on bad input, a hang (timeout), earlier results changed, or a file
  written outside the output folder;
* P: in between (a clear line but after the model loaded, not naming the problem, several
  lines, a clear failure where success was right).

Usage::

    PYTHONPATH=src:tests python scripts/replay_bad_inputs.py [--slow] [--only A21,S08] [--json F]

It prints the counts before (the table) and now (replayed) and one line per row whose verdict
changed (``-v``: every row). Rows needing minutes (``slow``) run only with ``--slow``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: the findings next to the checkout (main: ../shared; a worktree /work/wt/NAME: ../../shared)
SHARED = next((d for d in (ROOT.parent / "shared", ROOT.parent.parent / "shared") if d.is_dir()), ROOT.parent / "shared")
TABLE = SHARED / "findings" / "bad-inputs.md"
FAST = "--min-iters 2 --min-seconds 0 --warmup-iters 0 --set idle_seconds=0 --batch-size 1 --max-new-tokens 4 --prompt-tokens 8"
RO = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search", "--"]
NOISE = re.compile(r"^(Failed to load .*torchao|W\d{4} |Writing model shards|\s*$)")


@dataclass
class Case:
    """One row's command (a template over the placeholders) and what a good outcome is."""

    cmd: str
    expect: str = "error"  # "error" | "ok" | "partial" (A93) | "failed-runs" (S13)
    want: tuple[str, ...] = ()  # substrings the error line must hold
    unwanted: tuple[str, ...] = ()  # substrings it must not hold
    preload: bool = False  # the error must come before the model loads
    ro: bool = False  # run without root's permission bypass
    slow: bool = False
    timeout: int = 240
    check: str | None = None  # name of an extra check (CHECKS)
    sigint: bool = False
    notes: list[str] = field(default_factory=list)


def C(cmd: str, expect: str = "error", **kw) -> Case:  # noqa: N802 - a table constructor
    """Shorthand for the table below."""
    return Case(cmd, expect, **kw)


RUN = "run -m {TL} " + FAST + " -o {OUT} --meter none"
RUN_C = "run -m {TL} --min-iters 2 --min-seconds 0 --warmup-iters 0 --prompt-tokens 8 -o {OUT} --meter none"  # the file's keys
GG = "run -m {IN}/{f} " + FAST + " -o {OUT} --meter none"
SW = "sweep {IN}/{f} -o {OUT}"
FT = "finetune -m {TL} --train-file {IN}/mc.jsonl --eval-file {IN}/mc.jsonl --batch-size 4 --eval-every 2 --max-eval-samples 4 --max-seq-len 32 --meter none --idle-seconds 0 -o {OUT}"
TR = "train --suite {IN}/tiny.toml --meter none --idle-seconds 0 --no-plot -o {OUT}"

CASES: dict[str, Case] = {
    "A01": C(RUN.replace("{TL}", "nosuchmodel")),
    "A02": C(RUN.replace("{TL}", "HuggingFaceTB/SmolLM2-360M-Instruct")),
    "A03": C(RUN.replace("{TL}", "foo/bar")),
    "A04": C(RUN.replace("{TL}", "/nonexistent/nope/model.gguf")),
    "A05": C(RUN.replace("{TL}", "./nodir/sub")),
    **{k: C(GG.replace("{f}", f), want=(f,)) for k, f in [
        ("A06", "empty.gguf"), ("A07", "trunc3.gguf"), ("A08", "trunc1000.gguf"), ("A09", "trunc1m.gguf"),
        ("A10", "trunc50.gguf"), ("A11", "truncm1.gguf"), ("A12", "flipmagic.gguf"), ("A13", "badversion.gguf"),
        ("A14", "hugetensors.gguf"), ("A15", "hugekv.gguf"), ("A16", "hugekeylen.gguf"), ("A17", "flipmeta.gguf"),
        ("A18", "noweights"), ("A19", "badconfig"), ("A20", "unktype"), ("A21", "truncst"), ("A22", "nodirconfig"),
        ("A23", "notmodel.txt")]},  # fmt: skip
    "A24": C(RUN.replace("{TL}", "''"), unwanted=("directory .",)),
    "A25": C(RUN + " --dtype fp64", preload=True),
    "A26": C(RUN + " --dtype fp16"),
    "A27": C(RUN + " --device cuda"),
    "A28": C(RUN + " --device tpu", preload=True),
    "A29": C(RUN + " --batch-size 0", preload=True),
    "A30": C(RUN + " --batch-size=-1", preload=True),
    "A31": C(RUN + " --batch-size abc", preload=True),
    "A32": C(RUN + " --batch-size ,", preload=True),
    "A33": C(RUN + " --batch-size 1.5", preload=True),
    "A34": C(RUN + " --prompt-tokens 0", preload=True),
    "A35": C(RUN + " --prompt-tokens 600", want=("512",)),
    "A36": C(RUN.replace("{TL}", "{TB}") + " --prompt-tokens 600", want=("512",)),
    "A37": C(RUN + " --max-new-tokens 0", preload=True),
    "A38": C(RUN + " --max-new-tokens 600", want=("512",)),
    "A39": C(RUN + " --prompts {IN}/p_empty.txt", want=("p_empty.txt",)),
    "A40": C(RUN + " --prompts {IN}/p_blank.txt", want=("p_blank.txt",)),
    "A41": C(RUN + " --prompts {IN}/p_binary.txt", want=("p_binary.txt",)),
    "A42": C(RUN + " --prompts {IN}/p_latin1.txt", want=("p_latin1.txt",)),
    "A43": C(RUN + " --prompts {IN}/missing.txt", want=("missing.txt",)),
    "A44": C(RUN + " --prompts {IN}/missing_prompts"),
    "A45": C(RUN + " --prompts gsm8k:nofield", want=("nofield",)),
    "A46": C(RUN + " --prompts nosuchds:question", want=("nosuchds",)),
    "A47": C(RUN + " --tasks nosuchtask", preload=True),
    "A48": C(RUN + " --tasks mmlu:foo=1", want=("foo",), preload=True),
    "A49": C(RUN + " --tasks mmlu:fewshot", preload=True),
    "A50": C(RUN + " --tasks mmlu:num_fewshot=0,subjects=anatomy --limit 2", "ok", check="task_mmlu"),
    "A51": C(RUN + " --tasks jsonl_mc:path=/nonexistent/nope.jsonl", want=("nope.jsonl",), preload=True),
    "A52": C(RUN + " --tasks mmlu:num_fewshot=-1", preload=True),
    "A53": C(RUN + " --tasks mmlu --limit 0", preload=True),
    "A54": C(RUN + " --tasks mmlu --limit=-5", preload=True),
    **{k: C(RUN_C + f" -c {{IN}}/{f}", want=w, preload=True) for k, f, w in [
        ("A55", "y_syntax.yaml", ("y_syntax.yaml",)), ("A56", "y_unknown.yaml", ("modle",)),
        ("A57", "y_type.yaml", ("max_new_tokens",)), ("A58", "y_bs.yaml", ("abc",)),
        ("A59", "y_python.yaml", ("y_python.yaml",)), ("A60", "y_list.yaml", ("mapping",)),
        ("A61", "y_bo.yaml", ("backend_options",)), ("A62", "nope.yaml", ("nope.yaml",)), ("A63", "", ())]},  # fmt: skip
    "A64": C(RUN + " --region XX-NOWHERE", preload=True),
    "A65": C(RUN + " --meter rapl"),
    "A66": C(RUN + " --meter nvml"),
    "A67": C(RUN + " --meter bogus", preload=True),
    "A68": C(RUN + " --cross-check bogus", preload=True),
    "A69": C(RUN.replace("--meter none", "--meter estimate") + " --cpu-tdp-w=-5", want=("cpu_tdp_w",), preload=True),
    "A70": C(RUN.replace("--meter none", "--meter estimate") + " --cpu-tdp-w 0", want=("cpu_tdp_w",), preload=True),
    "A71": C(RUN.replace("--meter none", "--meter estimate") + " --cpu-tdp-w nan", want=("cpu_tdp_w",), preload=True),
    "A72": C(RUN.replace("{OUT}", "{IN}/afile"), want=("afile",), preload=True),
    "A73": C(RUN.replace("{OUT}", "{IN}/afile/sub"), want=("afile",), preload=True),
    "A74": C(RUN + " --set max_new_tokens", preload=True),
    "A75": C(RUN + " --set max_new_token=4", preload=True),
    "A76": C(RUN + " --set min_iters=abc", preload=True),
    "A77": C(RUN.replace("{TL}", "{IN}/модель-😀").replace("{OUT}", "{OUT}/вывод-😀"), "ok", check="record"),
    "A78": C(RUN.replace("{TL}", "модель-😀")),
    "A79": C(RUN + " --backend pytorh", preload=True),
    "A80": C(RUN + " -O nosuchopt=1", preload=True),
    "A81": C(RUN + " --threads 0", want=("threads",), preload=True),
    "A82": C(RUN + " --threads=-1", want=("threads",), preload=True),
    "A83": C(RUN + " --min-seconds=-1", preload=True),
    "A84": C(RUN + " --engine bogus", preload=True),
    "A85": C(RUN + " --trackers bogus", preload=True),
    "A86": C(RUN + " --min-seconds nan", want=("min_seconds",), preload=True),
    "A87": C(RUN + " --dtype q4_k_m"),
    "A88": C(RUN + " --max-new-tokens=-3", preload=True),
    "A89": C(RUN + " --warmup-iters=-1", preload=True),
    "A90": C(RUN + " --max-new-token 4"),
    "A91": C(RUN.replace(FAST, "--min-iters 1000 --min-seconds 600 --warmup-iters 0 --set idle_seconds=0 --batch-size 1"
                         " --max-new-tokens 4 --prompt-tokens 8"), want=("nterrupt",), sigint=True),
    "A92": C(RUN + " --batch-size 100000", "ok", slow=True, timeout=900, check="record"),
    "A93": C("run -m smollm2-135m " + FAST + " -o {OUT} --meter none --batch-size 1,100000", "partial",
             slow=True, timeout=900, check="oom"),
    "A94": C(RUN.replace("{OUT}", "{IN}/ro"), want=("ro",), preload=True, ro=True),
    "A95": C(RUN, preload=True, ro=True, check="ro_out"),
    "S01": C("sweep {IN}/nope.yaml -o {OUT}", want=("nope.yaml",), unwanted=("--config",)),
    "S02": C(SW.replace("{f}", "s_emptyfile.yaml") + " --dry-run", want=("s_emptyfile.yaml",)),
    "S03": C(SW.replace("{f}", "s_emptygrid.yaml") + " --dry-run", "ok"),
    "S04": C(SW.replace("{f}", "s_emptylist.yaml")),
    "S05": C(SW.replace("{f}", "s_dup.yaml") + " --dry-run", want=("dtype",)),
    "S06": C(SW.replace("{f}", "s_dupbase.yaml") + " --dry-run", want=("model",)),
    "S07": C(SW.replace("{f}", "s_combo.yaml"), "ok", timeout=400),
    "S08": C(SW.replace("{f}", "s_escape.yaml"), check="no_escape"),
    "S09": C(SW.replace("{f}", "s_abs.yaml"), check="no_escape"),
    "S10": C(SW.replace("{f}", "s_bs0.yaml")),
    "S11": C(SW.replace("{f}", "s_unktop.yaml")),
    "S12": C(SW.replace("{f}", "s_scalar.yaml")),
    "S13": C(SW.replace("{f}", "s_badmodel.yaml"), "failed-runs", check="sweep_kept_good", timeout=400),
    "S14": C(SW.replace("{f}", "s_emptygrid.yaml") + " --executor bogus"),
    "S15": C(SW.replace("{f}", "s_emptygrid.yaml") + " --executor ray", "ok", slow=True, timeout=600),
    "S16": C(SW.replace("{f}", "s_sweepkey.yaml") + " --dry-run", "ok"),
    "S17": C(SW.replace("{f}", "s_python.yaml")),
    "S18": C("sweep {IN} -o {OUT}", unwanted=("--config",)),
    "S19": C(SW.replace("{f}", "s_emptygrid.yaml").replace("{OUT}", "{IN}/afile"), want=("afile",), preload=True),
    "S20": C(SW.replace("{f}", "s_emptygrid.yaml").replace("{OUT}", "{IN}/ro"), want=("ro",), preload=True, ro=True),
    "R01": C("report {IN}/nope"),
    "R02": C("report {IN}/emptydir"),
    "R03": C("report {IN}/r_corrupt", want=("bad.json",)),
    "R04": C("report {IN}/r_other"),
    "R05": C("report {IN}/r_newplus -o {OUT}/rep", "ok"),
    "R06": C("report {IN}/r_new", want=("new.json",)),
    "R07": C("report {IN}/r_mixed -o {OUT}/rep", "ok"),
    "R08": C("report {IN}/r_wrongtypes", want=("wrong.json",)),
    "R09": C("report {BASE} -o /proc/e3report"),
    "R10": C("report {BASE} -o {IN}/ro/rep", ro=True),
    "R11": C("report {RECORD}", want=("is a file",)),
    "R12": C("report {IN}/r_array"),
    "R13": C("report {IN}/r_nonutf8"),
    "R14": C("report {IN}/r_failed"),
    "R15": C("report {IN}/r_mathtext -o {OUT}/rep", "ok"),
    "L01": C("ls {IN}/nope"),
    "L02": C("ls {BASE} -f model"),
    "L03": C("ls {BASE} -f modle=x"),
    "L04": C("ls {BASE} -f \"model=x' OR '1'='1\"", "ok"),
    "L05": C("ls {BASE} --columns 'model FROM runs; DROP TABLE runs; --'"),
    "L06": C("ls {IN}/ro_results", "ok", ro=True),
    "L07": C("ls {BASE} -f model>5", want=("does not compare as a number",)),  # was "no matching runs", rc 0
    "L08": C("ls {IN}/emptydir"),
    "L09": C("ls {BASE}", "ok", check="concurrent_ls"),
    "E01": C("export {BASE} -o /proc/x.csv"),
    "E02": C("export {BASE} -o {OUT}/x.xlsx"),
    "E03": C("export {BASE} -o {IN}/emptydir"),
    "E04": C("export {BASE} -o {IN}/ro/x.parquet", ro=True),
    "E05": C("export {BASE} -o {IN}/ro/x.csv", ro=True),
    "E06": C("export {BASE} -o {IN}/afile/x.parquet"),
    "E07": C("export {IN}/emptydir -o {OUT}/x.csv"),
    "E08": C("export {BASE}"),
    "F01": C(FT.replace("{TL}", "nosuchmodel")),
    "F02": C(FT.replace("--train-file {IN}/mc.jsonl --eval-file {IN}/mc.jsonl", "--task nosuch")),
    "F03": C(FT + " --mode bogus"),
    "F04": C(FT + " --batch-size 0"),
    "F05": C(FT + " --max-steps 0", want=("max",)),
    "F06": C(FT.replace("--train-file {IN}/mc.jsonl", "--train-file /nonexistent/nope.jsonl")),
    "F07": C(FT.replace("--train-file {IN}/mc.jsonl", "--train-file {IN}/t_bad.jsonl")),
    "F08": C(FT.replace("--train-file {IN}/mc.jsonl", "--train-file {IN}/t_nogold.jsonl")),
    "F09": C(FT + " --lora-r 0"),
    "F10": C(FT + " --target-accuracy 2"),
    "F11": C(FT + " --device cuda"),
    "F12": C(FT + " --precision fp16 --device cpu"),
    "F13": C(FT + " --optimizer bogus"),
    "F14": C(FT + " --lr=-1"),
    "F15": C(FT + " --lora-targets nosuchmodule"),
    "F16": C(FT + " --max-steps 2 --resume", "ok", timeout=400),
    "T01": C("train --suite /nonexistent/nope.toml -o {OUT}"),
    "T02": C("train --suite {IN}/bad.toml -o {OUT}"),
    "T03": C("train --suite {IN}/u.toml -o {OUT}"),
    "T04": C(TR + " --max-steps 0", want=("max", "steps"), timeout=300),
    "T05": C(TR + " --text /nonexistent/nope.txt"),
    "T06": C(TR + " --baseline nosuch"),
    "T07": C("train -o {OUT}"),
    "T08": C(TR + " --set optim.lr"),
    "T09": C(TR + " --set optim.lr=abc"),
    "T10": C(TR + " --text {IN}/e.txt"),
    "T11": C("train --suite {IN}/w.toml -o {OUT}"),
    "K01": C("tasks extra"),
    "K02": C("tasks --bogus"),
    "K03": C("nosuchcommand"),
}

# --- the prepared bad files ------------------------------------------------------------------

_SWEEP_BASE = """base:
  model: {TL}
  batch_sizes: [1]
  max_new_tokens: 4
  prompt_tokens: 8
  min_iters: 2
  min_seconds: 0
  warmup_iters: 0
  idle_seconds: 0
  meter: none
"""


def _record(base: Path) -> Path:
    (rec,) = (base / "runs").glob("*.json")
    return rec


def prepare(scratch: Path, env: dict) -> dict[str, str]:
    """Build the tiny models, a real record, and every bad file; returns the placeholders."""
    sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]
    from fakes.testing import build_tiny_models

    from e3bench.backends.models import ALIASES, bundled_path

    tiny = build_tiny_models(scratch / "tiny")
    tl, tb = tiny["decoder"], tiny["encoder"]
    inp = scratch / "in"
    inp.mkdir()
    ph = {"TL": str(tl), "TB": str(tb), "IN": str(inp), "FAST": FAST}
    base = scratch / "base"
    res = _cli(f"run -m {tl} {FAST} -o {base} --meter none -q", env, scratch)
    if res.returncode != 0:
        sys.exit(f"setup run failed:\n{res.stderr[-3000:]}")
    rec = _record(base)
    ph.update(BASE=str(base), RECORD=str(rec))
    seed = scratch / "seed" / "runs"
    seed.mkdir(parents=True)
    shutil.copy(rec, seed / "earlier.json")
    good = json.loads(rec.read_text())

    gguf = bundled_path(ALIASES["smollm2-135m"])
    if gguf is not None:
        data = Path(gguf).read_bytes()
        (inp / "empty.gguf").write_bytes(b"")
        for name, blob in [("trunc3", data[:3]), ("trunc1000", data[:1000]), ("trunc1m", data[: 1 << 20]),
                           ("trunc50", data[: len(data) // 2]), ("truncm1", data[:-1])]:  # fmt: skip
            (inp / f"{name}.gguf").write_bytes(blob)

        def patched(name: str, off: int, raw: bytes) -> None:
            b = bytearray(data)
            b[off : off + len(raw)] = raw
            (inp / f"{name}.gguf").write_bytes(bytes(b))

        patched("flipmagic", 0, bytes([data[0] ^ 0xFF]))
        patched("badversion", 4, struct.pack("<I", 255))
        patched("hugetensors", 8, struct.pack("<Q", 1 << 62))
        patched("hugekv", 16, struct.pack("<Q", 1 << 62))
        patched("hugekeylen", 24, struct.pack("<Q", 1 << 40))
        patched("flipmeta", 0x30, bytes([data[0x30] ^ 0xFF]))

    def model_copy(name: str) -> Path:
        d = inp / name
        shutil.copytree(tl, d)
        return d

    d = model_copy("noweights")
    for w in d.glob("*.safetensors"):
        w.unlink()
    (model_copy("badconfig") / "config.json").write_text("{not json")
    d = model_copy("unktype")
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "model_type": "nosuchtype"}))
    d = model_copy("truncst")
    w = d / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    (inp / "nodirconfig").mkdir()
    (inp / "notmodel.txt").write_text("hello\n")
    model_copy("модель-😀")

    (inp / "p_empty.txt").write_text("")
    (inp / "p_blank.txt").write_text("\n\n   \n")
    (inp / "p_binary.txt").write_bytes(bytes(range(128, 256)) * 8)
    (inp / "p_latin1.txt").write_bytes("café crème brûlée\n".encode("latin-1"))

    yamls = {
        "y_syntax.yaml": "model: x\n  bad: [unclosed\n",
        "y_unknown.yaml": "modle: x\n",
        "y_type.yaml": "max_new_tokens: ten\n",
        "y_bs.yaml": "batch_sizes: '1,abc'\n",
        "y_python.yaml": "!!python/object/apply:os.system ['touch {m}']\n".format(m=scratch / "PWNED"),
        "y_list.yaml": "- model\n- x\n",
        "y_bo.yaml": "backend_options: 5\n",
    }
    base_yaml = _SWEEP_BASE.format(TL=tl)
    sweeps = {
        "s_emptyfile.yaml": "",
        "s_emptygrid.yaml": f"name: s_emptygrid\n{base_yaml}grid: {{}}\n",
        "s_emptylist.yaml": f"name: s_emptylist\n{base_yaml}grid:\n  dtype: []\n",
        "s_dup.yaml": f"name: s_dup\n{base_yaml}grid:\n  dtype: [fp32]\n  dtype: [bf16]\n",
        "s_dupbase.yaml": f"name: s_dupbase\n{base_yaml}  model: {tb}\ngrid: {{}}\n",
        "s_combo.yaml": f"name: s_combo\n{base_yaml}grid:\n  dtype: [fp16, int8]\n",
        "s_escape.yaml": f"name: ../../../escaped_sweep\n{base_yaml}grid: {{}}\n",
        "s_abs.yaml": f"name: {scratch}/abs_sweep\n{base_yaml}grid: {{}}\n",
        "s_bs0.yaml": f"name: s_bs0\n{base_yaml.replace('[1]', '[0]')}grid: {{}}\n",
        "s_unktop.yaml": f"name: s_unktop\n{base_yaml}gird: {{}}\n",
        "s_scalar.yaml": f"name: s_scalar\n{base_yaml}grid:\n  dtype: fp32\n",
        "s_badmodel.yaml": f"name: s_badmodel\n{base_yaml}grid:\n  model: [/nonexistent/model-dir, {tl}]\n",
        "s_sweepkey.yaml": f"name: s_sweepkey\n{base_yaml}grid:\n  sweep: [a, b]\n",
        "s_python.yaml": f"name: s_python\n{base_yaml}grid:\n  dtype: !!python/object/apply:os.system ['true']\n",
    }
    for name, text in {**yamls, **sweeps}.items():
        (inp / name).write_text(text)

    (inp / "afile").write_text("I am a file\n")
    for d in ("ro", "emptydir"):
        (inp / d).mkdir()
    (inp / "ro").chmod(0o555)
    shutil.copytree(base, inp / "ro_results")
    for p in [inp / "ro_results", *(inp / "ro_results").rglob("*")]:
        p.chmod(0o555 if p.is_dir() else 0o444)

    def results(name: str, files: dict[str, object]) -> None:
        d = inp / name / "runs"
        d.mkdir(parents=True)
        for f, content in files.items():
            (d / f).write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())

    newer = {**good, "schema_version": 99}
    wrong = {**good, "batches": "many", "config": 5}
    failed = {**good, "status": "failed", "error": "boom", "run_id": "failed1", "batches": []}
    math = {**good, "model": {**good["model"], "name": "$\\badcommand{$"}}
    results("r_corrupt", {"bad.json": b"{not json"})
    results("r_other", {"other.json": {"hello": "world"}})
    results("r_newplus", {"new.json": newer, "good.json": good})
    results("r_new", {"new.json": newer})
    results("r_mixed", {"good.json": good, "bad.json": b"{oops", "trunc.json": json.dumps(good).encode()[:200]})
    results("r_wrongtypes", {"wrong.json": wrong})
    results("r_array", {"a.json": [1, 2], "n.json": None, "x.json": 5})
    results("r_nonutf8", {"u.json": b"\xff\xfe\xfa{"})
    results("r_failed", {"failed.json": failed})
    results("r_mathtext", {"m.json": math})

    mc = [{"query": f"Is {w} blue?", "choices": ["no", "yes"], "gold": int(w == "blue")}
          for w in ["blue", "red", "green", "blue", "dark", "blue", "pale", "sky"]]  # fmt: skip
    (inp / "mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mc))
    (inp / "t_bad.jsonl").write_text("{'query': 1}\n")
    (inp / "t_nogold.jsonl").write_text(json.dumps({"query": "q", "choices": ["a", "b"]}) + "\n")

    text = (Path(os.environ.get("E3BENCH_DATA_DIR", SHARED / "data")) / "text" / "tinyshakespeare.txt")
    corpus = text.read_text()[:60000] if text.exists() else ("To be or not to be, that is the question. " * 2000)
    (inp / "corpus.txt").write_text(corpus)
    tiny_toml = (f'name = "baseline"\n[model]\nhidden_size = 32\nlayers = 1\nheads = 2\nkv_heads = 2\n'
                 f'intermediate_size = 64\nseq_len = 32\n[data]\ntext = "{inp / "corpus.txt"}"\nbatch_size = 4\n'
                 f'[train]\nmax_steps = 100\neval_every = 50\neval_batches = 1\ndevice = "cpu"\n')  # fmt: skip
    (inp / "tiny.toml").write_text(tiny_toml)
    (inp / "bad.toml").write_text("name = = 'x'\n")
    (inp / "u.toml").write_text('name = "u"\n[model]\nhiddn_size = 3\n')
    (inp / "w.toml").write_text('name = "w"\n[model]\nlayers = "four"\n')
    (inp / "e.txt").write_text("")
    return ph


# --- running and classifying ---------------------------------------------------------------


def _cli(cmd: str, env: dict, cwd: Path, *, ro: bool = False, timeout: int = 240, sigint: bool = False):
    argv = [*(RO if ro else []), sys.executable, "-m", "e3bench", *shlex.split(cmd)]
    if sigint:  # Ctrl-C once it measures (the same helper as tests/test_bad_inputs.py)
        from test_bad_inputs import interrupted_during_measurement

        rc, out, err = interrupted_during_measurement(argv, cwd / "log", env)
        return subprocess.CompletedProcess(argv, rc, out, err)
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, errors="replace", start_new_session=True)  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return subprocess.CompletedProcess(argv, None, out, err)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _tree_hash(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}  # fmt: skip


def _first_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if not NOISE.match(ln)]
    errs = [ln for ln in lines if ln.startswith("error:")]
    return (errs or lines or ["(no output)"])[0][:160]


def _extra_check(name: str, out: Path, scratch: Path, res, env, cwd) -> str | None:
    """An extra condition for some rows; returns what is wrong, or None."""
    if name == "record":
        return None if list(out.rglob("runs/*.json")) or list(out.rglob("*/*.json")) else "no record written"
    if name == "task_mmlu":
        recs = [json.loads(p.read_text()) for p in out.rglob("runs/*.json") if p.name != "earlier.json"]
        return None if recs and "mmlu" in json.dumps(recs[-1].get("tasks", recs[-1])) else "no mmlu result in the record"
    if name == "no_escape":
        bad = [p for p in (scratch / "escaped_sweep", scratch / "abs_sweep", scratch.parent / "escaped_sweep") if p.exists()]
        return f"wrote outside -o: {bad}" if bad else None
    if name == "sweep_kept_good":
        recs = [json.loads(p.read_text()) for p in out.rglob("*.json") if p.name != "earlier.json"]
        return None if any(r.get("status") == "ok" for r in recs) else "the good configuration's record is missing"
    if name == "oom":  # refused before loading (nothing measured), or the batch-1 result kept
        recs = [json.loads(p.read_text()) for p in out.rglob("runs/*.json") if p.name != "earlier.json"]
        if not recs and "· loading" not in res.stdout + res.stderr:
            return None
        return None if recs and recs[-1]["efficiency"].get("generation") else "the batch-1 result was lost"
    if name == "concurrent_ls":
        for _ in range(5):
            d = scratch / f"ls-{time.monotonic_ns()}"
            shutil.copytree(env["_BASE"], d)
            argv = [sys.executable, "-m", "e3bench", "ls", str(d)]
            procs = [subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True) for _ in range(2)]  # fmt: skip
            outs = [p.communicate(timeout=300) for p in procs]
            if any(p.returncode != 0 for p in procs):
                return "a concurrent ls failed: " + _first_line(next(o[1] for o, p in zip(outs, procs, strict=True) if p.returncode))
        return None
    return None


def classify(case: Case, res, earlier_ok: bool, extra: str | None, elapsed: float) -> tuple[str, str]:
    """G / P / B and why (see the module docstring)."""
    text = (res.stdout or "") + "\n" + (res.stderr or "")
    if res.returncode is None:
        return "B", f"hang: killed after {case.timeout} s"
    if "Traceback (most recent call last)" in text:
        return "B", "traceback"
    if not earlier_ok:
        return "B", "earlier results changed"
    if extra and case.check in ("no_escape",):
        return "B", extra
    errs = [ln for ln in (res.stderr or "").splitlines() if ln.startswith("error:")]
    usage = res.returncode == 2 and ("Usage:" in text or "No such option" in text or "No such command" in text)
    if case.expect == "ok":
        if res.returncode != 0:
            return ("P", "failed with a clear line where success was right") if len(errs) == 1 else ("B", f"exit {res.returncode}")
        return ("P", extra) if extra else ("G", "success")
    if case.expect == "failed-runs":  # a sweep whose runs failed: exit 1 and a summary naming them
        ok = res.returncode == 1 and "failed runs" in (res.stdout or "") and not extra
        return ("G", "exit 1 with the failed runs listed") if ok else ("P" if res.returncode else "B", extra or f"exit {res.returncode}")
    if case.expect == "partial":  # A93: a clear line and the earlier batch kept
        if extra:
            return "B", extra
        return ("G", "clear line; nothing measured is lost") if errs or res.returncode == 0 else ("P", "no clear line")
    if case.sigint:
        if res.returncode != 130:
            return "B", f"exit {res.returncode} after SIGINT"
        return ("G", "exit 130 with a line") if any(w in text for w in case.want) else ("P", "exit 130 but no message")
    if res.returncode == 0:
        return "B", "exit 0 on bad input"
    if usage and not errs:
        return "G", "usage error"
    if len(errs) != 1:
        return "P", f"{len(errs)} error lines (exit {res.returncode})"
    line = errs[0]
    missing = [w for w in case.want if w.lower() not in line.lower()]
    if missing:
        return "P", f"the line does not name {missing}"
    if any(u in line for u in case.unwanted):
        return "P", f"misleading: line says {[u for u in case.unwanted if u in line]}"
    if case.preload and "· loading" in text:
        return "P", "clear line, but only after the model loaded"
    if extra:
        return "P", extra
    return "G", "one clear line"


def parse_table(path: Path) -> dict[str, dict]:
    """The rows of the findings table: id → {cmd, what, verdict, first}."""
    rows = {}
    for ln in path.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\| ([A-Z]\d\d) \|", ln)
        if not m:
            continue
        cells = [c.strip() for c in ln.strip().strip("|").split(" | ")]
        rows[m.group(1)] = {"cmd": cells[1], "what": cells[2], "verdict": cells[6], "first": cells[-1]}
    return rows


def main(argv: list[str] | None = None) -> int:
    """Replay the table; print counts before/now and the rows that changed."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slow", action="store_true", help="also run the rows that need minutes")
    ap.add_argument("--only", default="", help="comma list of row ids")
    ap.add_argument("--json", type=Path, help="write every row's outcome here")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every row")
    ap.add_argument("--table", type=Path, default=TABLE, help=f"the findings table (default {TABLE})")
    args = ap.parse_args(argv)
    if not args.table.is_file():
        print(f"error: no findings table at {args.table} — fix: pass --table PATH/bad-inputs.md", file=sys.stderr)
        return 2
    rows = parse_table(args.table)
    ids = [i for i in rows if not args.only or i in args.only.split(",")]
    scratch = Path(tempfile.mkdtemp(prefix="e3-replay-"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
    env.setdefault("E3BENCH_DATA_DIR", str(SHARED / "data"))
    print(f"scratch: {scratch}; preparing inputs ...", flush=True)
    ph = prepare(scratch, env)
    env["_BASE"] = ph["BASE"]
    outcomes = {}
    for rid in ids:
        case = CASES.get(rid)
        if case is None:
            outcomes[rid] = {"now": "-", "why": "no command rebuilt for this row", "first": ""}
            continue
        if case.slow and not args.slow:
            outcomes[rid] = {"now": "-", "why": "slow: run with --slow", "first": ""}
            continue
        cwd = scratch / "cases" / rid
        cwd.mkdir(parents=True)
        out = cwd / "out"
        shutil.copytree(scratch / "seed", out)
        before = _tree_hash(out)
        if case.check == "ro_out":
            for p in [out, *out.rglob("*")]:
                p.chmod(0o555 if p.is_dir() else 0o444)
        cmd = case.cmd.format(**ph, OUT=out)
        t0 = time.monotonic()
        res = _cli(cmd, env, cwd, ro=case.ro, timeout=case.timeout, sigint=case.sigint)
        elapsed = time.monotonic() - t0
        for p in [out, *out.rglob("*")]:
            if p.is_dir() and not p.is_symlink():
                p.chmod(0o755)
        after = _tree_hash(out)
        earlier_ok = after.get("runs/earlier.json") == before["runs/earlier.json"]
        extra = _extra_check(case.check, out, scratch, res, env, cwd) if case.check else None
        verdict, why = classify(case, res, earlier_ok, extra, elapsed)
        outcomes[rid] = {"now": verdict, "why": why, "rc": res.returncode, "seconds": round(elapsed, 1),
                         "first": _first_line((res.stderr or "") + "\n" + (res.stdout or "")), "cmd": cmd}  # fmt: skip
        was = rows[rid]["verdict"]
        print(f"{rid} {was}->{verdict} ({elapsed:5.1f} s) {why}: {outcomes[rid]['first'][:110]}", flush=True)
    before_counts = Counter(rows[i]["verdict"] for i in ids)
    now_counts = Counter(o["now"] for o in outcomes.values())
    print(f"\nbefore (the table, {len(ids)} rows): " + ", ".join(f"{k} {before_counts[k]}" for k in "GPB"))
    print("now (replayed):            " + ", ".join(f"{k} {now_counts[k]}" for k in "GPB")
          + (f", not run {now_counts['-']}" if now_counts["-"] else ""))  # fmt: skip
    print("\nrow  before now  why / first line now")
    for rid in ids:
        o, was = outcomes[rid], rows[rid]["verdict"]
        if args.verbose or o["now"] != was:
            print(f"{rid}  {was}      {o['now']}    {o['why']}: {o['first'][:120]}")
    if args.json:
        args.json.write_text(json.dumps({"before": rows, "now": outcomes}, indent=1, ensure_ascii=False))
    if not args.keep:
        for p in [scratch, *scratch.rglob("*")]:
            if p.is_dir() and not p.is_symlink():
                p.chmod(0o755)
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
