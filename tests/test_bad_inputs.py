"""The bad-input table of issue 13: one parametrized test per KIND of bad input, each case run
through the real CLI (``python -m e3bench ...`` in a subprocess: what a user sees).

Every error case asserts the same contract (``refused``): a nonzero exit, exactly one
``error: <problem> — fix: <fix>`` line naming the problem, no traceback, the earlier record in
the output folder unchanged, and nothing written outside the output folder; where the kind
allows, the error comes before the model loads (no ``· loading`` line). Success cases assert
exit 0 and the value that makes them right.

Case ids follow ``../shared/findings/bad-inputs.md`` where a row exists (``scripts/
replay_bad_inputs.py`` replays the whole table). Detailed tests of the same kinds live in
``test_bad_inputs_security.py`` (hostile files), ``test_bad_inputs_results.py`` (results side),
``test_run_limits.py`` (run limits) and ``test_sweep_robust.py`` (sweeps).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT
from fakes.subproc import plugin_env
from test_bad_inputs_security import finetuned  # noqa: F401 - a fixture: a finetune folder with a checkpoint

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
SETPRIV = shutil.which("setpriv")
RO_PREFIX = [SETPRIV, "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search",
             "--"] if IS_ROOT and SETPRIV else []  # fmt: skip
FAST = ["--min-iters", "2", "--min-seconds", "0", "--warmup-iters", "0", "--set", "idle_seconds=0",
        "--max-new-tokens", "4", "--prompt-tokens", "8", "--batch-size", "1", "--meter", "none"]  # fmt: skip
SWEEP_BASE = """base:
  model: "{model}"
  batch_sizes: [1]
  max_new_tokens: 4
  prompt_tokens: 8
  min_iters: 1
  min_seconds: 0
  warmup_iters: 0
  idle_seconds: 0
  meter: none
"""


def pending(kind: str):
    """A case another helper is fixing now (strict: it must fail until the fix lands)."""
    return pytest.mark.xfail(strict=True, reason=f"pending: {kind}")


def cli(*args, env: dict | None = None, unprivileged: bool = False, umask: int | None = None, timeout: int = 300):
    """``python -m e3bench *args`` with stdin closed; ``unprivileged``: without root's bypass of
    file permissions (so ``chmod 555`` bites)."""
    cmd = [*(RO_PREFIX if unprivileged else []), sys.executable, "-m", "e3bench", *map(str, args)]
    pre = (lambda: os.umask(umask)) if umask is not None else None
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          env={**os.environ, **(env or {})}, preexec_fn=pre)  # fmt: skip


def files(root: Path) -> dict[str, str]:
    """Every file under ``root`` with its SHA-256 (what must not change)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}  # fmt: skip


class Place:
    """A case's folder: ``out`` holds an earlier record; ``call`` runs the CLI and checks that the
    record is intact and that nothing new appeared outside ``out``."""

    def __init__(self, tmp: Path, record: Path) -> None:
        self.tmp, self.out = tmp, tmp / "out"
        (self.out / "runs").mkdir(parents=True)
        shutil.copy(record, self.out / "runs" / "earlier.json")

    def call(self, *args, **kw) -> subprocess.CompletedProcess:
        """Run the CLI; assert the output folder's earlier record and everything outside it kept."""
        before = files(self.tmp)
        res = cli(*args, **kw)
        after = files(self.tmp)
        assert after.get("out/runs/earlier.json") == before["out/runs/earlier.json"], "earlier results changed"
        outside = {k: v for k, v in after.items() if not k.startswith("out/")}
        assert outside == {k: v for k, v in before.items() if not k.startswith("out/")}, "written outside -o"
        return res


def refused(res, *needles: str, preload: bool = True) -> str:
    """Nonzero exit, one ``error: ... — fix: ...`` line holding every needle, no traceback; with
    ``preload``, before any model loaded."""
    text = res.stdout + res.stderr
    assert "Traceback" not in text, text[-3000:]
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert res.returncode not in (0, None) and len(lines) == 1, (res.returncode, text[-3000:])
    assert " — fix: " in lines[0], lines[0]
    for n in needles:
        assert n in lines[0], (n, lines[0])
    if preload:
        assert "· loading" not in text, text[-2000:]
    return lines[0]


@pytest.fixture(scope="module")
def record(tmp_path_factory, tiny_models) -> Path:
    """One real record of the tiny decoder (the 'earlier result' every case must leave intact)."""
    out = tmp_path_factory.mktemp("rec")
    res = cli("run", "-m", tiny_models["decoder"], *FAST, "-o", out, "-q")
    assert res.returncode == 0, res.stderr[-3000:]
    (rec,) = (out / "runs").glob("*.json")
    return rec


@pytest.fixture
def place(tmp_path, record) -> Place:
    return Place(tmp_path, record)


def _sweep(place: Place, model, text: str, name: str = "s") -> Path:
    y = place.tmp / "s.yaml"
    y.write_text(text.replace("{base}", SWEEP_BASE.format(model=model)).replace("{name}", name))
    return y


# --- security: code is never executed from a file -------------------------------------------


def _crafted(path: Path, marker: Path) -> None:
    from test_bad_inputs_security import crafted_pt

    crafted_pt(path, marker)


CODE = ["A59 yaml python tag in --config", "S17 yaml python tag in a sweep file", "model folder ships code (auto_map)",
        "pickle as pytorch_model.bin", "crafted optimizer.pt on finetune --resume"]  # fmt: skip


@pytest.mark.parametrize("case", CODE)
def test_code_in_a_file_is_never_executed(place, tiny_models, case, request):
    marker = place.tmp / "MARKER"
    tag = f"!!python/object/apply:os.system ['touch {marker}']"
    if case.startswith("A59"):
        (place.tmp / "c.yaml").write_text(f"max_new_tokens: {tag}\n")
        line = refused(place.call("run", "-c", place.tmp / "c.yaml", "-o", place.out), "c.yaml")
    elif case.startswith("S17"):
        y = _sweep(place, tiny_models["decoder"], "name: s\n{base}grid:\n  dtype: " + tag + "\n")
        line = refused(place.call("sweep", y, "-o", place.out), str(y))
    elif case.startswith("model folder"):
        from test_bad_inputs_security import remote_code_dir

        model = remote_code_dir(tiny_models["decoder"], place.tmp / "remote", marker)
        line = refused(place.call("run", "-m", model, *FAST, "-o", place.out), "--trust-remote-code")
    elif case.startswith("pickle"):
        model = place.tmp / "m"
        shutil.copytree(tiny_models["decoder"], model)
        (model / "model.safetensors").unlink()
        _crafted(model / "pytorch_model.bin", marker)
        line = refused(place.call("run", "-m", model, *FAST, "-o", place.out), "pytorch_model.bin", preload=False)
    else:
        src, args = request.getfixturevalue("finetuned")
        shutil.rmtree(place.out)
        shutil.copytree(src, place.out)
        (place.out / "runs").mkdir(exist_ok=True)
        shutil.copy(request.getfixturevalue("record"), place.out / "runs" / "earlier.json")
        (ckpt,) = (place.out / "finetune" / "checkpoints").iterdir()
        _crafted(ckpt / "optimizer.pt", marker)
        line = refused(place.call(*args, "--max-steps", "4", "-o", place.out, "--resume"), "optimizer.pt",
                       preload=False)  # fmt: skip
    assert not marker.exists(), f"code from a file ran ({line})"


# --- security: names that become paths stay one folder inside -o ------------------------------

NAMES = {"S08 sweep name ../../../x": ("file", "../../../escaped"), "S09 absolute sweep name": ("file", "/tmp/e3-abs-sweep"),
         "--set sweep=../x": ("set", "../escaped"), "--sweep /abs": ("flag", "/tmp/e3-abs-sweep")}  # fmt: skip


@pytest.mark.parametrize("case", list(NAMES))
def test_names_become_one_folder_inside_the_output_dir(place, tiny_models, case):
    how, name = NAMES[case]
    out = place.out / "deep"
    if how == "file":
        y = _sweep(place, tiny_models["decoder"], f"name: {json.dumps(name)}\n{{base}}grid: {{}}\n")
        res = place.call("sweep", y, "-o", out)
    else:
        flag = ["--set", f"sweep={name}"] if how == "set" else ["--sweep", name]
        res = place.call("run", "-m", tiny_models["decoder"], *FAST, "-o", out, *flag)
    refused(res, "one folder name", repr(name))
    assert not Path("/tmp/e3-abs-sweep").exists() and not (place.tmp / "escaped").exists()


# --- unknown model; damaged model files -------------------------------------------------------

MODELS = {"A01 unknown alias": "nosuchmodel", "A03 hub id, offline": "foo/bar", "A04 missing .gguf": "/nonexistent/m.gguf",
          "A78 unicode name": "модель-😀", "A24 empty": ""}  # fmt: skip


@pytest.mark.parametrize("case", list(MODELS))
def test_unknown_model(place, case):
    name = MODELS[case]
    needles = [repr(name)[1:-1]] if name else ["--model"]
    refused(place.call("run", "-m", name, *FAST, "-o", place.out), *needles, preload="hub" not in case)  # the hub is tried


def _damage(tiny: Path, d: Path, how: str) -> tuple[Path, str]:
    if how.endswith(".gguf"):
        f = d.parent / "m.gguf"
        f.write_bytes(b"" if "empty" in how else b"GGUF" + b"\xff" * 60)
        return f, str(f)
    shutil.copytree(tiny, d)
    w = d / "model.safetensors"
    if "truncated" in how:
        w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    elif "header" in how:
        w.write_bytes(b"\xff" * 8 + w.read_bytes()[8:])
    elif "config" in how:
        (d / "config.json").write_text("{not json")
        return d, str(d / "config.json")
    elif "no weights" in how:
        w.unlink()
        return d, str(d)
    return d, str(w)


@pytest.mark.parametrize("how", ["A21 truncated safetensors", "safetensors header length garbage", "A19 config.json not JSON",
                                 "A18 no weights", "A06 empty.gguf", "A14 corrupt.gguf"])  # fmt: skip
def test_damaged_model_file(place, tiny_models, how):
    model, named = _damage(tiny_models["decoder"], place.tmp / "m", how)
    refused(place.call("run", "-m", model, *FAST, "-o", place.out), named, preload=False)


# --- meaningless values, refused before the model loads ---------------------------------------

VALUES = {
    "A69 --cpu-tdp-w -5": ["--meter", "estimate", "--cpu-tdp-w=-5"], "A70 --cpu-tdp-w 0": ["--meter", "estimate", "--cpu-tdp-w", "0"],
    "A71 --cpu-tdp-w nan": ["--meter", "estimate", "--cpu-tdp-w", "nan"], "A81 --threads 0": ["--threads", "0"],
    "A82 --threads -1": ["--threads=-1"], "A86 --min-seconds nan": ["--min-seconds", "nan"],
    "--max-seconds nan": ["--max-seconds", "nan"], "A29 --batch-size 0": ["--batch-size", "0"],
    "A37 --max-new-tokens 0": ["--max-new-tokens", "0"], "A53 --limit 0": ["--tasks", "mmlu", "--limit", "0"],
}  # fmt: skip
NEEDLE = {"A69": "cpu_tdp_w", "A70": "cpu_tdp_w", "A71": "cpu_tdp_w", "A81": "threads", "A82": "threads", "A86": "min_seconds",
          "--m": "max_seconds", "A29": "batch", "A37": "max_new_tokens", "A53": "limit"}  # fmt: skip


@pytest.mark.parametrize("case", [*VALUES, "F05 finetune --max-steps 0", "T04 train --max-steps 0", "S10 sweep batch_sizes [0]"])
def test_meaningless_values_are_refused_before_loading(place, tiny_models, case):
    if case in VALUES:
        res = place.call("run", "-m", tiny_models["decoder"], *FAST, "-o", place.out, *VALUES[case])
        refused(res, NEEDLE[case[:3]])
    elif case.startswith("F05"):
        data = place.tmp / "mc.jsonl"
        data.write_text(json.dumps({"query": "Is it blue?", "choices": ["no", "yes"], "gold": 1}) + "\n")
        refused(place.call("finetune", "-m", tiny_models["decoder"], "--train-file", data, "--eval-file", data,
                           "--max-steps", "0", "--meter", "none", "-o", place.out), "--max-steps")  # fmt: skip
    elif case.startswith("T04"):
        res = place.call("train", "--suite", ROOT / "configs" / "train" / "baseline.toml", "--max-steps", "0",
                         "--meter", "none", "--idle-seconds", "0", "-o", place.out)  # fmt: skip
        refused(res, "max_steps", "greater than or equal to 1")
    else:
        y = _sweep(place, tiny_models["decoder"], "name: s\n{base}grid: {}\n")
        y.write_text(y.read_text().replace("batch_sizes: [1]", "batch_sizes: [0]"))
        refused(place.call("sweep", y, "-o", place.out), "batch sizes must be ≥ 1")


# --- duplicate YAML keys; empty sweep files ----------------------------------------------------


@pytest.mark.parametrize("case", ["run --config", "S05 sweep grid", "S06 sweep base"])
def test_duplicate_yaml_keys(place, tiny_models, case):
    if case == "run --config":
        y = place.tmp / "c.yaml"
        y.write_text(f"model: {tiny_models['decoder']}\nmax_new_tokens: 4\nmax_new_tokens: 8\n")
        res = place.call("run", "-c", y, "-o", place.out)
    elif case.startswith("S05"):
        y = _sweep(place, tiny_models["decoder"], "name: s\n{base}grid:\n  dtype: [fp32]\n  dtype: [bf16]\n")
        res = place.call("sweep", y, "-o", place.out, "--dry-run")
    else:
        y = _sweep(place, tiny_models["decoder"], "name: s\n{base}  meter: estimate\ngrid: {}\n")
        res = place.call("sweep", y, "-o", place.out, "--dry-run")
    refused(res, "given twice", str(y))


@pytest.mark.parametrize("text", ["", "# only a comment\n\n", "{}\n"], ids=["S02 0 bytes", "comments only", "empty mapping"])
def test_empty_sweep_file(place, text):
    y = place.tmp / "s.yaml"
    y.write_text(text)
    refused(place.call("sweep", y, "-o", place.out, "--dry-run"), str(y))


# --- task option syntax ------------------------------------------------------------------------

TASKS = {"A47 unknown task": ("nosuchtask", "nosuchtask"), "A49 option not key=value": ("mmlu:fewshot", "fewshot"),
         "A48 unknown option": ("mmlu:foo=1", "foo"), "A52 bad option value": ("mmlu:num_fewshot=-1", "num_fewshot"),
         "A50 second option's value checked before loading": ("mmlu:num_fewshot=0,subjects=nosuchsubject", "nosuchsubject")}  # fmt: skip


@pytest.mark.parametrize("case", [*TASKS,
                                  "A50 documented name:k=v,k=v runs"])  # fmt: skip
def test_task_option_syntax(place, tiny_models, case):
    if case.endswith("runs"):
        res = place.call("run", "-m", tiny_models["decoder"], *FAST, "-o", place.out,
                         "--tasks", "mmlu:num_fewshot=0,subjects=anatomy", "--limit", "2")  # fmt: skip
        assert res.returncode == 0, res.stderr[-3000:]
        (rec,) = (p for p in (place.out / "runs").glob("*.json") if p.name != "earlier.json")
        (task,) = json.loads(rec.read_text())["effectiveness"]
        assert task["n_items"] == 2 and list(task["details"]["subjects"]) == ["anatomy"], task
        assert task["details"]["num_fewshot"] == 0
        return
    spec, needle = TASKS[case]
    refused(place.call("run", "-m", tiny_models["decoder"], *FAST, "-o", place.out, "--tasks", spec), needle)


@pytest.mark.parametrize("spec, needle", [("siqa", "siqa"), ("jsonl_mc:path={bad}", "missing field 'query'")],
                         ids=["no data for a built-in task", "JSONL without the task's fields"])  # fmt: skip
def test_task_data_is_checked_before_loading(place, tiny_models, spec, needle):
    """A requested task whose data cannot be found or read was a warning after the whole speed
    run, with exit 0; now one line before the model loads."""
    bad = place.tmp / "qa.jsonl"
    bad.write_text('{"prompt": "2+2?", "answer": "4"}\n')
    empty = place.tmp / "nodata"
    empty.mkdir()
    res = place.call("run", "-m", tiny_models["decoder"], *FAST, "-o", place.out, "--tasks", spec.format(bad=bad),
                     env={"E3BENCH_DATA_DIR": str(empty), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})  # fmt: skip
    refused(res, needle)


# --- output folder: a file, under a file, read-only: refused before the model loads ----------

OUTS = {"A72 run -o a file": ("run", "file"), "A73 run -o under a file": ("run", "file/sub"),
        "A94 run -o read-only": ("run", "ro"), "A95 run -o read-only with earlier results": ("run", "out"),
        "S19 sweep -o a file": ("sweep", "file"), "S20 sweep -o read-only": ("sweep", "ro")}  # fmt: skip


@pytest.mark.parametrize("case", list(OUTS))
def test_unwritable_output_dir_is_refused_before_loading(place, tiny_models, case):
    command, where = OUTS[case]
    (place.tmp / "file").write_text("a file\n")
    (place.tmp / "ro").mkdir()
    target = place.out if where == "out" else place.tmp / where
    if where in ("ro", "out"):
        if IS_ROOT and not SETPRIV:
            pytest.skip("root without setpriv: chmod cannot bite")
        for p in [target, *target.rglob("*")]:
            p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        if command == "run":
            res = place.call("run", "-m", tiny_models["decoder"], *FAST, "-o", target, unprivileged=True)
        else:
            y = _sweep(place, tiny_models["decoder"], "name: s\n{base}grid: {}\n")
            res = place.call("sweep", y, "-o", target, unprivileged=True)
    finally:
        for p in [target, *target.rglob("*")] if target.is_dir() else []:
            p.chmod(0o755 if p.is_dir() else 0o644)
    refused(res, "--output-dir", str(place.tmp / where.split("/")[0]))


# --- report / export write errors; nothing reportable ----------------------------------------

WRITES = {"R09 report -o under /proc": ["report", "{res}", "-o", "/proc/e3-report"],
          "E01 export under /proc": ["export", "{res}", "-o", "/proc/e3.csv"],
          "E03 export -o a directory": ["export", "{res}", "-o", "{tmp}/dir"],
          "E06 export parquet under a file": ["export", "{res}", "-o", "{tmp}/file/x.parquet"],
          "report -o a file": ["report", "{res}", "-o", "{tmp}/file"]}  # fmt: skip


@pytest.mark.parametrize("case", list(WRITES))
def test_report_and_export_write_errors(place, case):
    (place.tmp / "file").write_text("x")
    (place.tmp / "dir").mkdir()
    args = [a.format(res=place.out, tmp=place.tmp) for a in WRITES[case]]
    refused(place.call(*args), args[-1])


@pytest.mark.parametrize("command", ["report", "ls", "export"])
@pytest.mark.parametrize("content", [{"schema_version": 99, "run_id": "n"}, {"schema_version": 1, "run_id": "w", "config": 3}],
                         ids=["R06 only a newer schema", "R08 only an invalid record"])  # fmt: skip
def test_nothing_reportable_names_the_skipped_file(place, command, content):
    res_dir = place.out / "res"  # the folder read is where e3bench keeps its index
    (res_dir / "runs").mkdir(parents=True)
    (res_dir / "runs" / "only.json").write_text(json.dumps(content))
    extra = ["-o", place.out / "x.csv"] if command == "export" else ["-o", place.out / "rep"] if command == "report" else []
    refused(place.call(command, res_dir, *extra), str(res_dir / "runs" / "only.json"))


@pytest.mark.parametrize("case", ["L04 SQL in a filter value", "L05 SQL in a column name"])
def test_ls_filters_are_data_not_sql(place, case):
    if case.startswith("L04"):
        res = place.call("ls", place.out, "-f", "model=x' OR '1'='1")
        assert res.returncode == 0 and "no matching runs" in res.stdout, res.stdout + res.stderr[-2000:]
    else:
        refused(place.call("ls", place.out, "--columns", "model FROM runs; DROP TABLE runs; --"), "unknown column")
    again = place.call("ls", place.out, "--columns", "run_id,status")
    assert again.returncode == 0 and " ok " in again.stdout  # the index is intact


# --- a missing extra: the install hint keeps the extra, and comes before the work ------------

EXTRAS = {"sweep --executor ray": ("ray", "sweep", "e3bench[ray]"), "run --dtype int8": ("torchao", "int8", "e3bench[quant]"),
          "run --trackers mlflow": ("mlflow", "mlflow", "e3bench[trackers]")}  # fmt: skip


@pytest.mark.parametrize("case", ["sweep --executor ray", "run --dtype int8", "run --trackers mlflow"])
def test_missing_extra_names_the_extra_before_running(place, tiny_models, case):
    module, what, hint = EXTRAS[case]
    env = plugin_env(place.tmp / "plug", hide=(module,))
    if what == "sweep":
        y = _sweep(place, tiny_models["decoder"], "name: s\n{base}grid: {}\n")
        res = place.call("sweep", y, "-o", place.out, "--executor", "ray", env=env)
    elif what == "int8":
        res = place.call("run", "-m", tiny_models["decoder"], *FAST, "-o", place.out, "--dtype", "int8", env=env)
    else:
        res = place.call("run", "-m", tiny_models["decoder"], *FAST, "-o", place.out, "--trackers", "mlflow", env=env)
    refused(res, f"pip install '{hint}'")


# --- report outputs are inert text; files follow the umask ------------------------------------


def _variant(record: Path, dst: Path, name: str) -> None:
    data = json.loads(record.read_text())
    data["model"]["name"] = name
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(json.dumps(data))


@pytest.mark.parametrize("name", ['=HYPERLINK("http://evil.example","x")', "@SUM(A1:A2)", "R15 $\\badcommand{$"])
def test_report_outputs_keep_names_as_text(place, record, name):
    res_dir = place.out / "res"
    _variant(record, res_dir / "runs" / "r.json", name)
    if name.startswith("R15"):
        res = place.call("report", res_dir, "-o", place.out / "rep")  # crashed inside matplotlib's math text
        assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr[-3000:]
        assert name[4:] in (place.out / "rep" / "runs.csv").read_text()
        return
    res = place.call("export", res_dir, "-o", place.out / "x.csv")
    assert res.returncode == 0, res.stderr[-3000:]
    rows = list(csv.DictReader((place.out / "x.csv").open()))
    assert {r["model"] for r in rows} == {"'" + name}  # neutralised, not a formula


def test_written_files_follow_the_umask(place):
    res = place.call("export", place.out, "-o", place.out / "x.csv", umask=0o027)
    assert res.returncode == 0, res.stderr[-2000:]
    assert oct(stat.S_IMODE((place.out / "x.csv").stat().st_mode)) == "0o640"  # not mkstemp's 0o600


# --- concurrent use --------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["L09 two ls at once", "L06 ls on a read-only folder", "two sweeps on one folder"])
def test_concurrent_use(place, tiny_models, case):
    if case.startswith("L09"):
        for i in range(3):
            root = place.tmp / f"r{i}"
            shutil.copytree(place.out, root)
            cmd = [sys.executable, "-m", "e3bench", "ls", str(root), "--columns", "run_id,status"]
            procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
            outs = [p.communicate(timeout=300) for p in procs]
            assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
            assert outs[0][0] == outs[1][0] and " ok " in outs[0][0]
    elif case.startswith("L06"):
        if IS_ROOT and not SETPRIV:
            pytest.skip("root without setpriv: chmod cannot bite")
        for p in [place.out, *place.out.rglob("*")]:
            p.chmod(0o555 if p.is_dir() else 0o444)
        try:
            res = place.call("ls", place.out, "--columns", "run_id,status", unprivileged=True)
        finally:
            for p in [place.out, *place.out.rglob("*")]:
                p.chmod(0o755 if p.is_dir() else 0o644)
        assert res.returncode == 0 and " ok " in res.stdout, res.stderr[-2000:]
    else:
        env = plugin_env(place.tmp / "plug")
        y = _sweep(place, tiny_models["decoder"], "name: s\n{base}  backend: fake\ngrid:\n  seed: [0, 1, 2, 3]\n"
                   "  backend_options: [{prefill_s: 0.3}]\n")  # fmt: skip
        cmd = [sys.executable, "-m", "e3bench", "sweep", str(y), "-o", str(place.out)]
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                 for _ in range(2)]  # fmt: skip
        outs = [p.communicate(timeout=600) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
        seeds = [json.loads(p.read_text())["config"]["seed"] for p in (place.out / "s").glob("*.json")]
        assert sorted(seeds) == [0, 1, 2, 3]  # each configuration ran once (before: twice, overwriting)


def test_a_damaged_index_is_rebuilt_from_the_records(place):
    """The index is a cache of the records: garbage in its file is replaced, the runs listed."""
    (place.out / ".e3bench-index.sqlite").write_bytes(b"not an sqlite file" * 100)
    res = place.call("ls", place.out, "--columns", "run_id,status")
    assert res.returncode == 0 and " ok " in res.stdout, res.stderr[-2000:]
    assert (place.out / ".e3bench-index.sqlite").read_bytes().startswith(b"SQLite format 3")


# --- hangs and limits ------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["hanging backend in a sweep times out", "A93 batch that cannot fit: refused, nothing lost",
                                  "max_seconds cap recorded"])  # fmt: skip
def test_hangs_and_limits(place, tiny_models, case):
    if case.startswith("hanging"):
        env = plugin_env(place.tmp / "plug")
        y = _sweep(place, tiny_models["decoder"], "name: s\n{base}  backend: fake\ngrid:\n"
                   "  backend_options: [{prefill_s: 3600}]\n")  # fmt: skip
        t0 = time.monotonic()
        res = place.call("sweep", y, "-o", place.out, "--timeout-s", "15", env=env, timeout=200)
        assert time.monotonic() - t0 < 180 and res.returncode == 1, res.stderr[-2000:]
        (rec,) = (json.loads(p.read_text()) for p in (place.out / "s").glob("*.json"))
        assert rec["status"] == "failed" and rec["error"].startswith("timeout")
    elif case.startswith("A93"):
        res = place.call("run", "-m", tiny_models["decoder"], *FAST, "-o", place.out, "--batch-size", "1,1000000000",
                         timeout=90)  # fmt: skip
        refused(res, "1000000000", "does not fit")
    else:
        res = place.call("run", "-m", tiny_models["decoder"], *FAST, "-o", place.out, "--min-iters", "100000",
                         "--max-seconds", "1")  # fmt: skip
        assert res.returncode == 0, res.stderr[-2000:]
        (rec,) = (p for p in (place.out / "runs").glob("*.json") if p.name != "earlier.json")
        (gen,) = json.loads(rec.read_text())["efficiency"]["generation"]
        assert "--max-seconds" in (gen.get("cut_by_max_seconds") or ""), gen


@pytest.mark.parametrize(("case", "args"), [("A35 prompt > context (RoPE)", ["--prompt-tokens", "600"]),
                                            ("A38 prompt + output > context", ["--max-new-tokens", "600"]),
                                            ("A36 prompt > context (BERT)", ["--prompt-tokens", "600"])])  # fmt: skip
def test_longer_than_the_context_is_refused(place, tiny_models, case, args):
    model = tiny_models["encoder" if "BERT" in case else "decoder"]
    refused(place.call("run", "-m", model, *FAST, "-o", place.out, *args, timeout=120), "512", preload=False)


def interrupted_during_measurement(cmd: list[str], log: Path, env: dict | None = None) -> tuple[int, str, str]:
    """Start ``cmd``, wait until it measures (its ``· generation`` progress line, on stderr), send SIGINT to its
    process group (what Ctrl-C in a terminal does); returns (exit status, stdout, stderr)."""
    out, err = log.with_suffix(".out"), log.with_suffix(".err")
    with out.open("w") as o, err.open("w") as e:
        # SIGINT back to its default in the child: a shell's background job (CI, `cmd &`) starts
        # with SIGINT ignored, inherited by its children, and Python then never raises
        # KeyboardInterrupt — a terminal's Ctrl-C reaches a foreground process with the default
        proc = subprocess.Popen(cmd, stdout=o, stderr=e, text=True, start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                                env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"})  # fmt: skip
        deadline = time.monotonic() + 240
        while "· generation" not in err.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, out.read_text(), err.read_text()


def test_ctrl_c_says_what_was_interrupted(place, tiny_models):
    cmd = [sys.executable, "-m", "e3bench", "run", "-m", str(tiny_models["decoder"]), *FAST, "-o", str(place.out),
           "--min-iters", "100000", "--min-seconds", "600"]  # fmt: skip
    rc, out, err = interrupted_during_measurement(cmd, place.out / "log")
    assert rc == 130 and "Traceback" not in out + err, (rc, err[-2000:])
    (line,) = [ln for ln in err.splitlines() if "nterrupted" in ln]
    assert "intact" in line or "earlier" in line, line
    assert [p.name for p in (place.out / "runs").iterdir()] == ["earlier.json"]


# --- exits and labels that tell the truth -----------------------------------------------------


def test_a_sweep_with_failed_runs_exits_nonzero_and_says_which(place, tiny_models):
    y = _sweep(place, tiny_models["decoder"], "name: s\n{base}grid:\n  model: [/nonexistent/model-dir, "
               f"{tiny_models['decoder']}]\n")  # fmt: skip
    res = place.call("sweep", y, "-o", place.out, timeout=400)
    assert res.returncode == 1 and "Traceback" not in res.stdout + res.stderr, res.stderr[-2000:]
    assert "failed runs (1;" in res.stdout and "model-dir" in res.stdout.split("failed runs (1;")[1]
    statuses = sorted(json.loads(p.read_text())["status"] for p in (place.out / "s").glob("*.json"))
    assert statuses == ["failed", "ok"]  # the good configuration kept


def test_sweep_labels_tell_configurations_apart(place, tiny_models):
    y = _sweep(place, tiny_models["decoder"], "name: s\n{base}grid:\n  backend_options: [{compile: false}, {compile: true}]\n")
    res = place.call("sweep", y, "-o", place.out, "--dry-run")
    assert res.returncode == 0, res.stderr[-2000:]
    would = [ln for ln in res.stdout.splitlines() if "would run" in ln]
    assert [("compile=False" in ln, "compile=True" in ln) for ln in would] == [(True, False), (False, True)], would
