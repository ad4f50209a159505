"""Sweeps (expand, capability skips, subprocess runs, kill -9 + resume) and the report."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import run_cli
from e3bench.config.validate import ConfigError
from e3bench.core.errors import E3Error
from e3bench.sweep.plan import expand
from fakes.toy_backend import registered


@pytest.fixture
def toy_backend():
    with registered() as cls:
        yield cls


def _write_sweep(tmp_path, tiny_models, *, name="s", extra_base="", grid_extra=""):
    mc = tmp_path / "mc.jsonl"
    mc.write_text(
        "\n".join(
            json.dumps({"query": q, "choices": ["joules", "watts", "seconds"], "gold": g})
            for q, g in [("Energy is measured in", 0), ("Power is measured in", 1), ("Time is measured in", 2),
                         ("The answer is", 0)]  # fmt: skip
        )
        + "\n"
    )
    y = tmp_path / "sweep.yaml"
    y.write_text(
        f"""name: {name}
base:
  batch_sizes: [1, 2]
  max_new_tokens: 3
  prompt_tokens: 8
  min_iters: 2
  min_seconds: 0
  idle_seconds: 0.2
  tasks: ["jsonl_mc:path={mc}"]
{extra_base}
grid:
  model: ["{tiny_models['decoder']}"]
  dtype: [fp32, bf16, fp16]
{grid_extra}
"""
    )
    return y


def test_expand_skips_impossible_combinations(tmp_path, tiny_models):
    plan = expand(_write_sweep(tmp_path, tiny_models), output_dir=str(tmp_path / "out"))
    assert [c.dtype for c in plan.runs] == ["fp32", "bf16"]
    assert len(plan.skipped) == 1 and "fp16" in plan.skipped[0].reason and "cpu" in plan.skipped[0].reason
    assert all(c.sweep == "s" for c in plan.runs)


def test_sweep_typo_names_the_key(tmp_path):
    y = tmp_path / "bad.yaml"
    y.write_text("name: x\ngrid:\n  dtpye: [fp32]\n")
    with pytest.raises(E3Error) as ei:
        expand(y)
    assert "dtpye" in ei.value.problem and "dtype" in ei.value.fix
    y.write_text("name: x\ngird:\n  dtype: [fp32]\n")
    with pytest.raises(E3Error, match="gird"):
        expand(y)


def test_sweep_typos_fail_before_any_run_with_every_line(tmp_path, toy_backend):
    """Issue 11: meter, region, task and backend-option typos used to plan 2 runs and fail in each."""
    y = tmp_path / "typo.yaml"
    y.write_text(
        "name: typo\n"
        "base:\n"
        "  meter: nvm\n"
        "  region: Atlantis\n"
        "  tasks: [mmlu, hellaswagg]\n"
        "  backend: toy\n"
        "  backend_options: {n_ctx: 4096}\n"
        "grid:\n"
        "  dtype: [fp32, int8]\n"
        "  trackers: [[wandb], [wandbb]]\n"
    )
    with pytest.raises(ConfigError) as ei:
        expand(y)
    lines = ei.value.one_lines()
    assert lines[0] == f"{y}:3 (base.meter): unknown meter 'nvm' — fix: did you mean 'nvml'?"
    assert lines[1].startswith(f"{y}:4 (base.region): unknown grid region 'Atlantis'")
    assert lines[2:] == [
        f"{y}:5 (base.tasks.1): unknown task 'hellaswagg' — fix: did you mean 'hellaswag'?",
        f"{y}:7 (base.backend_options.n_ctx): backend 'toy' has no option 'n_ctx' — fix: its options: width (int, default 8); mode (str, default 'fast')",
        f"{y}:10 (grid.trackers.1.0): unknown tracker 'wandbb' — fix: did you mean 'wandb'?",
    ]  # each problem once, although 4 combinations share it


def test_sweep_file_mistakes(tmp_path):
    y = tmp_path / "s.yaml"
    y.write_text("")
    with pytest.raises(E3Error, match="is empty"):  # S02: planned a default run before
        expand(y)
    y.write_text("name: d\ngrid:\n  dtype: [fp32]\n  dtype: [bf16]\n")
    with pytest.raises(ConfigError) as ei:  # S05: the last dtype silently won
        expand(y)
    assert ei.value.one_lines() == [
        f"{y}:4 (grid.dtype): key 'grid.dtype' is given twice (first at line 3)"
        " — fix: keep one of them: YAML would silently use the last"
    ]
    y.write_text("name: ../../escaped\ngrid:\n  dtype: [fp32]\n")
    with pytest.raises(ConfigError) as ei:  # S08: the record went outside --output-dir
        expand(y)
    assert ei.value.one_lines()[0].startswith(f"{y}:1 (name): bad value for 'sweep': must be one folder name")
    with pytest.raises(E3Error) as ei:  # S01: the fix used to talk about --config
        expand(tmp_path / "nope.yaml")
    assert ei.value.fix == "check the path given to e3bench sweep"


def test_plan_skips_what_this_machine_cannot_run(tmp_path, toy_backend):
    y = tmp_path / "s.yaml"
    y.write_text("name: k\nbase:\n  backend: toy\ngrid:\n  dtype: [fp32, bf16]\n  backend_options: [{width: 2}]\n")
    plan = expand(y)
    assert [c.dtype for c in plan.runs] == ["fp32"] and plan.runs[0].backend_options == {"width": 2}
    assert [s.reason for s in plan.skipped] == ["precision 'bf16' not supported on cpu (supported on cpu: fp32, int8)"]


def _records(root):
    return sorted(p for p in root.rglob("*.json") if "samples" not in p.parts and not p.name.startswith("."))


@pytest.mark.slow
def test_kill9_then_resume_loses_and_duplicates_nothing(tmp_path, tiny_models):
    y = _write_sweep(tmp_path, tiny_models, name="resume", grid_extra="  seed: [0, 1]")
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "e3bench", "sweep", str(y), "-o", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    deadline = time.time() + 300
    while time.time() < deadline and not _records(out):
        time.sleep(0.5)
    assert _records(out), "first run never finished"
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its running child die mid-way
    proc.wait()
    n_before = len(_records(out))
    assert n_before < 4
    res = run_cli("sweep", str(y), "-o", str(out))
    assert res.returncode == 0, res.stderr
    assert f"({n_before} already complete)" in res.stdout
    recs = _records(out)
    assert len(recs) == 4  # 2 dtypes × 2 seeds, each exactly once
    hashes = [json.loads(p.read_text())["config_hash"] for p in recs]
    assert len(set(hashes)) == 4
    assert all(json.loads(p.read_text())["status"] == "ok" for p in recs)
    again = run_cli("sweep", str(y), "-o", str(out))
    assert "(4 already complete)" in again.stdout and len(_records(out)) == 4


def test_crashing_run_becomes_a_failed_record(tmp_path, tiny_models):
    from e3bench.config.run import build_config
    from e3bench.sweep.executors.local import LocalExecutor

    cfg = build_config(overrides=dict(model="not/a-real-model-anywhere", output_dir=str(tmp_path), sweep="f"))
    rec = LocalExecutor().run(cfg)
    assert rec.status == "failed" and "Hugging Face hub" in rec.error
    assert (tmp_path / "f" / f"{cfg.config_hash()}.json").exists()


@pytest.fixture(scope="module")
def report_results(tmp_path_factory, tiny_models):
    """Two real runs (fp32, bf16) of the tiny decoder with a multiple-choice task, in-process."""
    from e3bench.bench.runner import run_one
    from e3bench.config.run import build_config
    from e3bench.sweep.finish import finish_run

    tmp = tmp_path_factory.mktemp("rep")
    y = _write_sweep(tmp, tiny_models, name="rep")
    plan = expand(y, output_dir=str(tmp / "out"))
    for cfg in plan.runs:
        finish_run(run_one(cfg), cfg, resumable=True)
    failed = build_config(overrides=dict(model="x/y", output_dir=str(tmp / "out"), sweep="rep"))
    from e3bench.bench import envinfo
    from e3bench.results.schema import failed_record

    finish_run(failed_record(failed, "example failure", envinfo.collect(sample_cpu=False)), failed, resumable=True)
    return tmp / "out"


def test_report_files_and_content(report_results):
    from e3bench.report.render import build_report

    rep = build_report(report_results)
    names = set(rep.files)
    for f in ("runs.csv", "tasks.csv", "pivot.csv", "table.tex", "summary.md", "report.html",
              "plots/pareto_energy.png", "plots/throughput.png", "plots/accuracy.png", "quantization.csv"):  # fmt: skip
        assert f in names, f
    md = (rep.out_dir / "summary.md").read_text()
    assert "Executive summary" in md and "Pareto-optimal" in md and "example failure" in md
    (cmp,) = rep.comparisons
    assert cmp.reference.endswith("fp32 cpu") and cmp.variant.endswith("bf16 cpu")
    # the comparison is the records' own scores: bf16 accuracy / fp32 accuracy, PASS at ≥ 99 %
    acc = {}
    for f in report_results.rglob("*.json"):
        r = json.loads(f.read_text())
        if isinstance(r, dict) and r.get("status") == "ok" and "effectiveness" in r:
            acc[r["config"]["dtype"]] = r["effectiveness"][0]["metrics"]["acc"]
    assert acc["fp32"] > 0
    (task,) = cmp.tasks
    assert task.retained.estimate == pytest.approx(acc["bf16"] / acc["fp32"], rel=1e-12)
    assert task.retained_verdict in ("PASS", "FAIL", "INCONCLUSIVE") and not task.paired
    html = (rep.out_dir / "report.html").read_text()
    # interactive figures drawn by the one plotly.min.js beside the page, each linking its PNG and PDF
    assert html.count("<script src='plotly.min.js'") == 1 and (rep.out_dir / "plotly.min.js").stat().st_size > 1e6
    assert "Plotly.newPlot('fig-pareto_energy'" in html and "<table>" in html
    assert "href='plots/pareto_energy.pdf'" in html and (rep.out_dir / "plots" / "pareto_energy.pdf").exists()
    assert len(html) < 200_000  # no plotly.js, no PNG inlined
    tex = (rep.out_dir / "table.tex").read_text()
    assert r"\begin{tabular}" in tex and r"J per in+out token [95\% CI]" in tex
    runs_csv = (rep.out_dir / "runs.csv").read_text().splitlines()
    assert len(runs_csv) == 1 + 2 * 2 + 1  # header + 2 runs × 2 batch sizes + the failed run


def test_report_screenshot_in_headless_chromium(report_results, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not chromium:
        pytest.skip("headless Chromium not installed (apt-get install chromium)")
    from PIL import Image

    from e3bench.report.render import build_report

    rep = build_report(report_results, tmp_path / "r")
    shot = tmp_path / "shot.png"
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'ud'}", "--hide-scrollbars", "--window-size=1300,1400",
         "--virtual-time-budget=10000", "--allow-file-access-from-files",
         f"--screenshot={shot}", (rep.out_dir / "report.html").as_uri()],
        capture_output=True, timeout=120,
    )  # fmt: skip
    assert shot.exists()
    img = Image.open(shot).convert("L")
    hist = img.histogram()
    dark = sum(hist[:128]) / sum(hist)
    assert 0.005 < dark < 0.5  # text and the Pareto plot are drawn, not a blank page
    # the Pareto figure sits near the top: its area has plot ink (not just background)
    top = img.crop((0, 200, 1300, 700))
    assert len(set(top.getdata())) > 20


def test_ls_filters_and_errors(report_results):
    res = run_cli("ls", str(report_results), "--filter", "dtype=bf16", "--columns", "dtype,batch_size,status")
    assert res.returncode == 0 and "bf16" in res.stdout and "fp32" not in res.stdout
    bad = run_cli("ls", str(report_results), "--filter", "dtyp=bf16")
    assert bad.returncode == 2 and "did you mean 'dtype'" in bad.stderr


def test_ls_filters_that_compare_across_kinds_are_refused(report_results):
    """SQLite compares a number with text without a word (every number sorts before every
    text): ``dtype>1`` listed every run and ``batch_size>abc`` none. Both are one clear line."""
    num = run_cli("ls", str(report_results), "--filter", "batch_size>abc")
    assert num.returncode == 2 and "batch_size holds numbers and 'abc' is not one" in num.stderr, num.stderr
    text = run_cli("ls", str(report_results), "--filter", "dtype>1")
    assert text.returncode == 2 and "dtype holds text" in text.stderr and "dtype=VALUE" in text.stderr, text.stderr
    ok = run_cli("ls", str(report_results), "--filter", "batch_size>=1", "--filter", "dtype!=1", "--columns", "dtype")
    assert ok.returncode == 0 and "bf16" in ok.stdout, ok.stdout + ok.stderr


def test_export_csv_and_parquet(report_results, tmp_path):
    res = run_cli("export", str(report_results), "-o", str(tmp_path / "t.csv"))
    assert res.returncode == 0 and (tmp_path / "t.csv").read_text().startswith("run_id,")
    res = run_cli("export", str(report_results), "-o", str(tmp_path / "t.parquet"))
    assert res.returncode == 0
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "t.parquet").num_rows == 5
    bad = run_cli("export", str(report_results), "-o", str(tmp_path / "t.xlsx"))
    assert bad.returncode == 2 and ".csv, .parquet, .json or .md" in bad.stderr


def test_empty_and_mixed_schema_dirs(tmp_path, report_results):
    from e3bench.report.render import build_report

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(E3Error, match="no e3bench results"):
        build_report(empty)
    mixed = tmp_path / "mixed"
    shutil.copytree(report_results, mixed)
    (mixed / "rep" / "old.json").write_text(json.dumps({"schema_version": 99, "run_id": "old"}))
    rep = build_report(mixed)
    assert any("schema_version 99" in w for w in rep.warnings)


def test_scan_hands_other_kinds_over_unread(tmp_path):
    """finetune/train-suite records share a results directory with run records; the store neither
    loads nor complains about documents of another kind: it hands them over by kind, so the
    report reads every file once."""
    from e3bench.results import store

    (tmp_path / "finetune").mkdir()
    (tmp_path / "finetune" / "ft.json").write_text(json.dumps({"schema_version": 1, "run_id": "f", "kind": "finetune"}))
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "suite.json").write_text(json.dumps({"schema_version": 1, "run_id": "s", "kind": "train-suite"}))
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "broken.json").write_text(json.dumps({"schema_version": 1, "run_id": "r"}))
    (tmp_path / "runs" / "user.json").write_text(json.dumps([1, 2]))
    found = store.scan(tmp_path)
    assert found.records == []
    assert len(found.problems) == 1 and "broken.json" in found.problems[0] and "invalid record" in found.problems[0]
    assert {k: [p.name for p, _ in v] for k, v in found.others.items()} == {
        "finetune": ["ft.json"], "train-suite": ["suite.json"]}
    assert found.others["finetune"][0][1]["run_id"] == "f"


def _copy_record(src, dst, **changes):
    data = json.loads(src.read_text())
    data.update(changes)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(json.dumps(data))
    return dst


def test_scan_finds_results_under_a_folder_named_samples(tmp_path, report_results):
    """Only ``samples`` folders inside the results directory hold samples: a results directory
    that itself lies under a folder named ``samples`` is read like any other."""
    from e3bench.results import store

    src = next(report_results.glob("rep/*.json"))
    root = tmp_path / "samples" / "results"
    _copy_record(src, root / "s1" / "a.json")
    _copy_record(src, root / "s1" / "samples" / "not-a-record.json", run_id="in-samples")
    found = store.scan(root)
    assert [p.name for p, _ in found.records] == ["a.json"] and found.problems == []


def test_index_reads_only_changed_files(tmp_path, report_results, monkeypatch):
    """``ls``'s index re-reads only new or changed record files and forgets deleted ones."""
    from e3bench.results import index, store
    from e3bench.results.flatten import rows_of

    root = tmp_path / "res"
    shutil.copytree(report_results, root)
    n_files = len(list(store.json_files(root)))
    reads: list = []
    real = store.read_document
    monkeypatch.setattr(store, "read_document", lambda p: reads.append(p.name) or real(p))
    first = index.query(root, [], ["run_id", "dtype", "batch_size"])
    assert len(reads) == n_files and len(first) == 5
    reads.clear()
    assert index.query(root, [], ["run_id", "dtype", "batch_size"]) == first and reads == []
    ok = sorted(p for p in (root / "rep").glob("*.json") if json.loads(p.read_text())["status"] == "ok")
    _copy_record(ok[0], root / "rep" / "copy.json", run_id="copy-1")
    ok[1].unlink()
    rows = index.query(root, ["run_id=copy-1"], ["run_id", "batch_size"])
    assert reads == ["copy.json"] and rows == [{"run_id": "copy-1", "batch_size": 1}, {"run_id": "copy-1", "batch_size": 2}]
    runs, tasks, warnings = index.load_rows(root)
    assert (runs, tasks) == rows_of(store.scan(root).records) and len(runs) == 5 and warnings == []
    (root / ".e3bench-index.sqlite").write_text("not a database")  # damaged: rebuilt
    assert len(index.query(root, [], ["run_id"])) == 5
    monkeypatch.setattr(index, "INDEX_NAME", "no-such-dir/index.sqlite")  # cannot be written: in memory
    assert len(index.query(root, [], ["run_id"])) == 5 and not (root / "no-such-dir").exists()


def test_two_runs_of_one_config_keep_their_own_samples(tmp_path, tiny_models):
    """Samples files are keyed by run id: a second run of the same configuration does not
    overwrite the first run's predictions while its record still points at them."""
    from e3bench.bench.runner import run_one
    from e3bench.config.run import build_config
    from e3bench.core.ids import run_id
    from fakes.testing import FakeBackend

    class Longest(FakeBackend):
        def loglikelihood(self, requests):
            return [x.__class__(-x.logprob, x.is_greedy, x.n_tokens) for x in super().loglikelihood(requests)]

    mc = tmp_path / "mc.jsonl"
    mc.write_text(json.dumps({"query": "Pick", "choices": ["a", "bbb"], "gold": 0}) + "\n")
    cfg = build_config(overrides=dict(
        model=str(tiny_models["decoder"]), batch_sizes="1", max_new_tokens=2, prompt_tokens=4, warmup_iters=0,
        min_iters=1, min_seconds=0.0, meter="none", idle_seconds=0, tasks=[f"jsonl_mc:path={mc}"], log_samples=True,
        output_dir=str(tmp_path / "out"),
    ))  # fmt: skip
    first = run_one(cfg, backend=FakeBackend())
    while run_id(cfg.config_hash()) == first.run_id:  # run ids have one-second resolution
        time.sleep(0.05)
    second = run_one(cfg, backend=Longest())
    assert first.run_id != second.run_id
    files = [rec.effectiveness[0].samples_file for rec in (first, second)]
    assert files[0] != files[1] and first.run_id in files[0] and second.run_id in files[1]
    preds = [[json.loads(ln)["pred"] for ln in open(f).read().splitlines()] for f in files]
    assert preds == [[0], [1]]  # each record's samples are its own run's predictions


def test_latex_escapes_every_special_character():
    from e3bench.report.tables import latex_escape, latex_table

    assert latex_escape(r"a\b_c%d&e#f$g{h}i~j^k") == (
        r"a\textbackslash{}b\_c\%d\&e\#f\$g\{h\}i\textasciitilde{}j\textasciicircum{}k")
    tex = latex_table([{"name": "gpt2 #1", "x": None}], ["name", "x"], "50% of $5")
    assert r"gpt2 \#1 & - \\" in tex and r"\caption{50\% of \$5}" in tex


def test_table_cells_use_the_one_number_formatter():
    from e3bench.report.tables import cell

    assert [cell(None), cell(float("nan")), cell(12345), cell(7), cell(0.123456), cell(12345.6), cell("fp32"),
            cell(True)] == ["-", "-", "12345", "7", "0.123", "12346", "fp32", "True"]  # fmt: skip


def test_executor_without_its_extra_fails_before_the_plan_runs(tmp_path):
    from rich.console import Console

    from e3bench.cli.sweep import run_sweep
    from e3bench.core import registry
    from e3bench.core.errors import MissingExtra

    y = tmp_path / "s.yaml"
    y.write_text("name: x\ngrid:\n  seed: [0]\n")
    registry.executors.register("needs_x", "e3bench_no_such_mod:X", extra="x", requires=("e3bench_no_such_mod",))
    try:
        with pytest.raises(MissingExtra) as ei:
            run_sweep(y, executor="needs_x", output_dir=str(tmp_path / "o"), ray_address=None, dry_run=False,
                      console=Console(file=open(os.devnull, "w")))  # fmt: skip
        assert ei.value.fix == "pip install 'e3bench[x]'"
        run_sweep(y, executor="needs_x", output_dir=str(tmp_path / "o"), ray_address=None, dry_run=True,
                  console=Console(file=open(os.devnull, "w")))  # fmt: skip  # a dry run needs no executor
    finally:
        registry.executors.unregister("needs_x")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("variant_acc", "stderr", "word"), [
    (0.5, 0.0001, "PASS"),         # 100 % retained, CI (99.96–100.04 %) above 99 %
    (0.4, 0.0001, "FAIL"),         # 80 %, CI far below 99 %
    (0.495, 0.08, "INCONCLUSIVE"),  # 99 % point estimate, CI spans 99 %: no verdict from it
    (0.6, 0.08, "INCONCLUSIVE"),   # 120 % point estimate but 40 items: the CI reaches below 99 %
])
def test_retained_99_percent_is_judged_by_its_ci(variant_acc, stderr, word):
    """MLPerf's rule of thumb with statistics: PASS only when the whole 95 % CI of retained
    (variant ÷ reference) is ≥ 99 %, FAIL when it is below, INCONCLUSIVE when it spans 99 %.
    The old rule read the point estimate (0.6 / 0.5 = 120 % was a PASS from 40 items)."""
    from e3bench.report.compare import TaskScore
    from e3bench.report.variants import compare_to_reference
    from fakes_report import summary

    ref = summary("fp32", tasks={"mc": TaskScore("mc", "acc", 0.5, 0.0001 if word != "INCONCLUSIVE" else 0.08, 40)})
    var = summary("int8", tasks={"mc": TaskScore("mc", "acc", variant_acc, stderr, 40)})
    (cmp,) = compare_to_reference([ref, var])
    (t,) = cmp.tasks
    assert t.retained.estimate == pytest.approx(variant_acc / 0.5)
    assert t.retained_verdict == word and cmp.quality_verdict == word
    assert not t.paired
