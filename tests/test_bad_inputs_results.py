"""Bad inputs, concurrency and permissions on the results side (issue 13; issue 12 item 8), through
the real CLI (``python -m e3bench ...`` in a subprocess: what a user sees).

One parametrized test per kind:

1. concurrency and permissions of the index and store (two ``ls`` at once; read-only results
   folders; files written with the user's umask, not ``mkstemp``'s 0600);
2. names that become paths (sweep names, task names in samples files);
3. report outputs (CSV formula injection, ``$`` in plot labels, LaTeX/Markdown specials);
4. write errors of ``report -o`` / ``export -o`` (one line, exit 2, no traceback);
5. nothing reportable (only invalid / newer-schema records): the skipped files named;
6. figures at the smallest measured batch say which batch (sweep of batch sizes [4, 8]).

Cases ids follow ``../shared/findings/bad-inputs.md`` where a row exists (L06, R09, E03, ...).
"""

from __future__ import annotations

import csv
import io
import json
import multiprocessing as mp
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from e3bench.core.errors import E3Error

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
SETPRIV = shutil.which("setpriv")
#: As root, chmod does not bite: drop the capabilities that bypass file permissions.
RO_PREFIX = (
    [SETPRIV, "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search", "--"]
    if IS_ROOT and SETPRIV
    else []
)
needs_permissions = pytest.mark.skipif(IS_ROOT and not SETPRIV, reason="root without setpriv: chmod cannot bite")
FAST = ["--min-iters", "2", "--min-seconds", "0", "--warmup-iters", "0", "--set", "idle_seconds=0",
        "--max-new-tokens", "4", "--prompt-tokens", "8"]  # fmt: skip


def cli(*args: str, umask: int | None = None, unprivileged: bool = False, timeout: int = 600):
    """``python -m e3bench *args``; ``umask`` for the child; ``unprivileged``: as a user whose
    permissions are checked (root drops its DAC capabilities)."""
    cmd = [*(RO_PREFIX if unprivileged else []), sys.executable, "-m", "e3bench", *map(str, args)]
    pre = (lambda: os.umask(umask)) if umask is not None else None
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, preexec_fn=pre)


def one_error_line(res, *needles: str) -> str:
    """The run failed the way a user error should: exit 2, no traceback, exactly one
    ``error: ... — fix: ...`` line on stderr holding every needle."""
    assert "Traceback" not in res.stderr, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert res.returncode == 2 and len(lines) == 1, (res.returncode, res.stderr)
    assert " — fix: " in lines[0], lines[0]
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def make_readonly(root: Path) -> None:
    for p in [root, *root.rglob("*")]:
        p.chmod(0o555 if p.is_dir() else 0o444)


def make_writable(root: Path) -> None:
    for p in [root, *root.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)


@pytest.fixture(scope="module")
def measured(tmp_path_factory, tiny_models) -> Path:
    """One real ``e3bench run`` of the tiny decoder at batch sizes 4 and 8 (no batch 1), with a
    multiple-choice task and ``--log-samples``, under umask 027."""
    tmp = tmp_path_factory.mktemp("measured")
    mc = tmp / "mc.jsonl"
    mc.write_text("".join(json.dumps({"query": q, "choices": ["joules", "watts"], "gold": g}) + "\n"
                          for q, g in [("Energy is measured in", 0), ("Power is measured in", 1)]))  # fmt: skip
    out = tmp / "out"
    res = cli("run", "-m", tiny_models["decoder"], "-o", out, *FAST, "--batch-size", "4,8",
              "--tasks", f"jsonl_mc:path={mc}", "--log-samples", umask=0o027)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def the_record(root: Path) -> Path:
    (rec,) = (p for p in root.rglob("*.json") if "samples" not in p.parts and not p.name.startswith("."))
    return rec


def copy_results(measured: Path, dst: Path) -> Path:
    shutil.copytree(measured, dst)
    make_writable(dst)
    return dst


def variant(src: Path, dst: Path, *, model: str | None = None, dtype: str | None = None, **top) -> Path:
    """A copy of record ``src`` at ``dst`` as another configuration (own config hash and run id)."""
    data = json.loads(src.read_text())
    if model is not None:
        data["model"]["name"] = model
    if dtype is not None:
        data["config"]["dtype"] = dtype
    data["config_hash"] = f"{abs(hash((model, dtype, dst.name))):016x}"[:16]
    data["run_id"] = dst.stem
    data.update(top)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(json.dumps(data))
    return dst


# --- 1. concurrency and permissions ---------------------------------------------------------


def _reader(barrier, jobs, results) -> None:
    """A reader process: for each results folder it is given, wait for the other reader, then
    query the index at the same moment (``None`` ends it)."""
    from e3bench.results import index

    while (root := jobs.get()) is not None:
        barrier.wait()
        try:
            results.put(("ok", index.query(Path(root), [], ["run_id", "batch_size"])))
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            results.put(("error", f"{type(exc).__name__}: {exc}"))


@pytest.mark.parametrize("index_state", ["none", "older format", "stale"])
def test_two_processes_read_one_index_at_once(tmp_path, measured, index_state):
    """L09: two reader processes open one results folder's index at the same moment, 100 times
    (each time a fresh folder). Before: up to 5 of 40 rounds lost one reader to 'no such table:
    files' or a deleted index (the tables were dropped and created outside a transaction, and any
    SQLite error deleted the index file the other process was using); the old code failed at
    least one of these cases in each of 4 runs of this test."""
    import sqlite3

    from e3bench.results.index import INDEX_NAME

    src = copy_results(measured, tmp_path / "src")
    if index_state == "older format":
        con = sqlite3.connect(src / INDEX_NAME)
        con.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
        con.execute("INSERT INTO meta VALUES ('format', 'old')")
        con.commit()
        con.close()
    elif index_state == "stale":
        from e3bench.results import index

        index.query(src, [])
        variant(the_record(src), src / "runs" / "added.json", model="added")
    ctx = mp.get_context("spawn")  # no fork of a process that may hold torch's threads
    barrier, results = ctx.Barrier(2), ctx.Queue()
    jobs = [ctx.Queue(), ctx.Queue()]
    readers = [ctx.Process(target=_reader, args=(barrier, q, results), daemon=True) for q in jobs]
    for p in readers:
        p.start()
    failures = []
    try:
        for i in range(100):
            root = tmp_path / f"r{i}"
            shutil.copytree(src, root)
            for q in jobs:
                q.put(str(root))
            got = [results.get(timeout=120) for _ in readers]
            if any(kind != "ok" for kind, _ in got) or got[0][1] != got[1][1]:
                failures.append(got)
            shutil.rmtree(root)
    finally:
        for q in jobs:
            q.put(None)
        for p in readers:
            p.join(timeout=30)
    assert failures == []
    assert len(got[0][1]) == (4 if index_state == "stale" else 2)


def test_two_ls_commands_at_once(tmp_path, measured):
    """L09 through the CLI: two ``e3bench ls`` started together on a fresh folder, 3 times."""
    for i in range(3):
        root = copy_results(measured, tmp_path / f"r{i}")
        cmd = [sys.executable, "-m", "e3bench", "ls", str(root), "--columns", "run_id,batch_size,status"]
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        outs = [p.communicate(timeout=300) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
        assert outs[0][0] == outs[1][0] and outs[0][0].count(" ok ") == 2


READONLY_CASES = {
    "L06 ls, no index": (["ls", "{ro}"], "none"),
    "ls, index from before a record was added": (["ls", "{ro}"], "stale"),
    "ls, index file damaged": (["ls", "{ro}"], "damaged"),
    "export csv": (["export", "{ro}", "-o", "{tmp}/x.csv"], "stale"),
    "export parquet": (["export", "{ro}", "-o", "{tmp}/x.parquet"], "none"),
    "report -o elsewhere": (["report", "{ro}", "-o", "{tmp}/rep"], "stale"),
}


@needs_permissions
@pytest.mark.parametrize("case", list(READONLY_CASES))
def test_readers_never_need_write_access(tmp_path, measured, case):
    """A read-only results folder can be listed, exported and reported (to a writable -o):
    the index falls back to memory. Before: sqlite3.OperationalError tracebacks."""
    from e3bench.results import index

    args, index_state = READONLY_CASES[case]
    ro = copy_results(measured, tmp_path / "ro")
    if index_state == "stale":
        index.query(ro, [])
        variant(the_record(ro), ro / "runs" / "zz-added.json", model="added-later")
    elif index_state == "damaged":
        (ro / index.INDEX_NAME).write_text("not an sqlite file")
    before = {p: p.read_bytes() for p in ro.rglob("*") if p.is_file()}
    make_readonly(ro)
    try:
        res = cli(*(a.format(ro=ro, tmp=tmp_path) for a in args), unprivileged=True)
    finally:
        make_writable(ro)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr[-3000:]
    assert {p: p.read_bytes() for p in ro.rglob("*") if p.is_file()} == before
    if args[0] == "ls":
        body = res.stdout.split("─\n", 1)[1].splitlines()  # below the header rule
        rows = [ln for ln in body if ln and not ln[0].isspace()]  # a row's first line starts with its run id
        assert len(rows) == (4 if index_state == "stale" else 2), res.stdout
    if index_state == "stale" and args[0] == "export":
        assert (tmp_path / "x.csv").read_text().count("added-later") == 2


@needs_permissions
def test_report_into_a_readonly_results_folder_says_use_o(tmp_path, measured):
    """R10 with the default -o: one line that says to pass -o (before: PermissionError traceback)."""
    ro = copy_results(measured, tmp_path / "ro")
    make_readonly(ro)
    try:
        res = cli("report", ro, unprivileged=True)
    finally:
        make_writable(ro)
    one_error_line(res, str(ro / "report"), "Permission denied", "-o")


def _modes(paths) -> set[str]:
    return {oct(stat.S_IMODE(p.stat().st_mode)) for p in paths}


@pytest.mark.parametrize("what", ["run record", "samples file", "report files", "export csv", "export parquet"])
def test_written_files_follow_the_umask(tmp_path, measured, what):
    """Files e3bench writes get 0o666 & ~umask (umask 027 → 0o640), not mkstemp's private 0o600
    (before: records, samples, CSVs and reports were 0600: teammates could not read them)."""
    if what == "run record":
        files = [the_record(measured)]
    elif what == "samples file":
        files = list(measured.rglob("samples/*.jsonl"))
        assert len(files) == 1
    elif what == "report files":
        res = cli("report", measured, "-o", tmp_path / "rep", umask=0o027)
        assert res.returncode == 0, res.stderr[-2000:]
        files = [p for p in (tmp_path / "rep").rglob("*") if p.is_file()]
        assert {"runs.csv", "summary.md", "report.html", "ttft.png"} <= {p.name for p in files}
        assert _modes(p for p in (tmp_path / "rep").rglob("*") if p.is_dir()) == {"0o750"}
    else:
        out = tmp_path / ("x.csv" if what == "export csv" else "x.parquet")
        assert cli("export", measured, "-o", out, umask=0o027).returncode == 0
        files = [out]
    assert _modes(files) == {"0o640"}


def test_atomic_writes_follow_the_umask(tmp_path):
    from e3bench.core.fsutil import atomic_dir, atomic_write_text

    old = os.umask(0o002)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        with atomic_dir(tmp_path / "d") as d:
            (d / "f").write_text("y")
    finally:
        os.umask(old)
    assert _modes([tmp_path / "a.txt"]) == {"0o664"} and _modes([tmp_path / "d"]) == {"0o775"}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


# --- 2. names that become paths -------------------------------------------------------------

LONG = "x" * 300
SWEEP_NAMES = {
    "S08 ../../../escaped": "../../../escaped",
    "S09 absolute": "/tmp/e3bench-abs-sweep",
    "dot-dot": "..",
    "dot": ".",
    "newline": "a\nb",
    "NUL": "a\x00b",
    "samples (its records would be invisible)": "samples",
    "longer than a file name": LONG,
    "backslash": "a\\b",
}


@pytest.mark.parametrize("how", ["--set sweep=", "--sweep", "sweep file name:"])
@pytest.mark.parametrize("case", list(SWEEP_NAMES))
def test_names_that_become_paths_are_one_safe_component(tmp_path, tiny_models, case, how):
    """A sweep name is one folder inside -o: refused with one line naming the value, before any
    model is loaded; nothing is written anywhere."""
    name = SWEEP_NAMES[case]
    if "\x00" in name and how != "sweep file name:":
        pytest.skip("a NUL cannot be passed in a command-line argument")
    if "\n" in name and how == "--set sweep=":
        pytest.skip("--set values are YAML: 'a<newline>b' is read as 'a b', a valid name")
    out = tmp_path / "deep" / "er" / "out"
    if how == "sweep file name:":
        y = tmp_path / "s.yaml"
        y.write_text(f"name: {json.dumps(name)}\nbase:\n  model: {json.dumps(str(tiny_models['decoder']))}\n"
                     "  batch_sizes: [1]\n  max_new_tokens: 2\n  prompt_tokens: 4\n  min_iters: 1\n"
                     "  min_seconds: 0\n  idle_seconds: 0\ngrid:\n  dtype: [fp32]\n")  # fmt: skip
        res = cli("sweep", y, "-o", out)
    else:
        flag = ["--set", f"sweep={name}"] if how == "--set sweep=" else ["--sweep", name]
        res = cli("run", "-m", tiny_models["decoder"], "-o", out, *FAST, "--batch-size", "1", *flag)
    line = one_error_line(res, "sweep", "one folder name")
    assert repr(name)[:40] in line
    assert "loading" not in res.stdout + res.stderr
    assert not out.exists() and sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == (
        ["s.yaml"] if how == "sweep file name:" else [])  # fmt: skip
    assert not Path("/tmp/e3bench-abs-sweep").exists()


@pytest.mark.parametrize("sweep", ["../x", "/abs", "", "a/b", "samples", LONG])
def test_store_refuses_unsafe_sweep_folders_itself(tmp_path, sweep):
    """Second line of defence: the store never joins an unsafe sweep name into a path."""
    from e3bench.results import store

    with pytest.raises(E3Error, match="sweep name"):
        store.run_dir(tmp_path, sweep)
    with pytest.raises(E3Error):
        store.samples_path(tmp_path, sweep, "r1", "t")


@pytest.mark.parametrize("task", ["a/b", "../../../etc/x", "/abs/task", "jsonl_mc:path=/data/q.jsonl", "..",
                                  "t" * 400, "é" * 200, "a\nb"])  # fmt: skip
def test_task_names_become_one_samples_file_name(tmp_path, task):
    from e3bench.results import store

    p = store.samples_path(tmp_path, "s", "20260101T000000-abc", task)
    assert p.parent == tmp_path / "s" / "samples"
    assert len(p.name.encode()) <= 255 and "/" not in p.name and p.name.endswith(".jsonl")
    other = store.samples_path(tmp_path, "s", "20260101T000000-abc", task + "2")
    assert other != p  # long names keep a hash of the whole: two tasks never share a file


def test_task_names_that_clean_up_alike_keep_two_samples_files(tmp_path):
    """``x_2`` and ``x?2`` are two task names of one run (labels given by the user): the
    character clean-up must not map them onto one samples file (the second overwrote the first)."""
    from e3bench.results import store

    a, b = (store.samples_path(tmp_path, "s", "r", t) for t in ("x_2", "x?2"))
    assert a != b and a.name == "r-x_2.jsonl"


def test_runs_of_one_configuration_started_in_the_same_second_get_distinct_ids():
    """Parallel runs of one configuration in the same second named the same record and samples
    files and overwrote each other (each printed the same ``result:`` path)."""
    from e3bench.core import ids

    got = {ids.run_id("0123456789abcdef") for _ in range(50)}
    assert len(got) == 50 and all(r.split("-")[1] == "0123456789" for r in got)


# --- 3. report outputs ----------------------------------------------------------------------

HOSTILE = {
    "formula": '=HYPERLINK("http://evil.example","click")',
    "plus": "+1+cmd|' /C calc'!A0",
    "minus": "-2+3",
    "at": "@SUM(A1:A2)",
    "tab": "\tx",
    "carriage return": "\rx",
    "R15 mathtext": "$\\badcommand{$",
    "latex specials": "m#_%&{}~^\\$x",
    "markdown pipe": "a|b",
    "blank line": "a\n\nb",
}


@pytest.fixture(scope="module")
def hostile_results(tmp_path_factory, measured) -> Path:
    """Records whose model names are spreadsheet formulas, math text, LaTeX specials (each in
    fp32 and bf16, so the comparison table holds them too)."""
    root = tmp_path_factory.mktemp("hostile") / "res"
    src = the_record(measured)
    for i, name in enumerate(HOSTILE.values()):
        for dtype in ("fp32", "bf16"):
            variant(src, root / "runs" / f"r{i}-{dtype}.json", model=name, dtype=dtype)
    return root


@pytest.fixture(scope="module")
def hostile_report(hostile_results, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hostile-report")
    res = cli("report", hostile_results, "-o", out)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr[-3000:]  # R15: crashed in mathtext
    return out


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("csv_file", ["runs.csv", "tasks.csv", "pivot.csv", "quantization.csv", "export.csv"])
def test_csv_cells_never_start_a_formula(hostile_results, hostile_report, tmp_path, csv_file):
    """OWASP CSV injection: a text cell starting with = + - @ tab or CR gets a leading ' (before:
    '=HYPERLINK(...)' passed through to runs.csv and every export)."""
    if csv_file == "export.csv":
        path = tmp_path / "export.csv"
        assert cli("export", hostile_results, "-o", path).returncode == 0
    else:
        path = hostile_report / csv_file
    rows = list(csv.reader(io.StringIO(path.read_text(), newline="")))
    cells = [c for r in rows for c in r]
    bad = [c for c in cells if c.startswith(FORMULA_START) and not _is_number(c)]
    assert bad == []
    if csv_file in ("runs.csv", "export.csv"):
        models = {r[rows[0].index("model")] for r in rows[1:]}
        assert "'" + HOSTILE["formula"] in models and "'" + HOSTILE["tab"] in models
        assert HOSTILE["R15 mathtext"] in models  # other text unchanged


def test_latex_and_markdown_tables_escape_every_name(hostile_report):
    tex = (hostile_report / "table.tex").read_text()
    assert r"m\#\_\%\&\{\}\textasciitilde{}\textasciicircum{}\textbackslash{}\$x" in tex
    body = tex.split(r"\midrule")[1]
    assert "$" not in body.replace(r"\$", "") and "#" not in body.replace(r"\#", "")
    assert "\n\n" not in tex and r"a b (fixture) pytorch fp32 cpu" in body  # the tiny model is a marked fixture  # a blank line would end the row
    md = (hostile_report / "summary.md").read_text()
    tables = [t.splitlines() for t in md.split("\n\n") if t.startswith("| ")]
    assert len(tables) >= 2  # speed and energy, configurations (and comparisons, warnings)
    for table in tables:
        n_cols = table[0].count(" | ")
        assert all(ln.replace("\\|", "").count(" | ") == n_cols for ln in table[2:])  # a|b: no extra column
    assert "a\\|b (fixture) pytorch fp32 cpu" in md


def test_plot_labels_are_plain_text(hostile_report):
    """R15: the figures were drawn (labels with $...$ are text, not math)."""
    assert {"ttft.png", "energy_per_token.png", "pareto_energy.png"} <= {
        p.name for p in (hostile_report / "plots").iterdir()}  # fmt: skip


MARKUP = "[/]evil[bold red]x"


@pytest.mark.parametrize("where", ["ls table", "report notes", "run summary"])
def test_names_are_printed_as_text_not_rich_markup(tmp_path, measured, where):
    """A model name or file name holding ``[...]`` is printed as it is (before: ``ls`` and the run
    summary crashed with rich's MarkupError on ``[/]``; a skipped ``bad[b].json`` was named
    ``bad.json``)."""
    root = tmp_path / "res"
    variant(the_record(measured), root / "runs" / "r.json", model=MARKUP)
    if where == "ls table":
        res = cli("ls", root, "--columns", "model,status")
        assert res.returncode == 0 and MARKUP in res.stdout, res.stderr[-2000:]
    elif where == "report notes":
        (root / "runs" / "bad[b].json").write_text("{")
        res = cli("report", root, "-o", tmp_path / "rep")
        assert res.returncode == 0 and f"skipped {root / 'runs' / 'bad[b].json'}: not readable JSON" in res.stdout
    else:
        from rich.console import Console

        from e3bench.report.summary import print_summary
        from e3bench.results import store

        buf = io.StringIO()
        print_summary(store.load(root / "runs" / "r.json"), Console(file=buf, width=300))
        assert buf.getvalue().startswith(MARKUP + " · ")


# --- 4. write errors ------------------------------------------------------------------------

WRITE_ERRORS = {
    "R09 report -o under /proc": (["report", "{res}", "-o", "/proc/e3bench-report"], False, "/proc/e3bench-report"),
    "report -o an existing file": (["report", "{res}", "-o", "{file}"], False, "it is a file"),
    "report -o under a file": (["report", "{res}", "-o", "{file}/sub"], False, "Not a directory"),
    "R10 report -o read-only folder": (["report", "{res}", "-o", "{ro}/rep"], True, "Permission denied"),
    "E01 export under /proc": (["export", "{res}", "-o", "/proc/e3bench.csv"], False, "/proc/e3bench.csv"),
    "E03 export to a directory": (["export", "{res}", "-o", "{dir}"], False, "is a directory"),
    "E03 export to a directory named .csv": (["export", "{res}", "-o", "{dir_csv}"], False, "is a directory"),
    "E04 export parquet into a read-only folder": (["export", "{res}", "-o", "{ro}/x.parquet"], True,
                                                    "Permission denied"),  # fmt: skip
    "E05 export csv into a read-only folder": (["export", "{res}", "-o", "{ro}/x.csv"], True, "Permission denied"),
    "E06 export parquet under a file": (["export", "{res}", "-o", "{file}/x.parquet"], False, "Not a directory"),
    "export an unknown format": (["export", "{res}", "-o", "{tmp}/x.xlsx"], False, ".csv, .parquet, .json or .md"),
}


@pytest.mark.parametrize("case", list(WRITE_ERRORS))
def test_write_errors_are_one_line(tmp_path, measured, case):
    """report/export to a place that cannot be written: one error line, exit 2, nothing left
    behind (before: FileNotFoundError / PermissionError / pyarrow tracebacks)."""
    args, unprivileged, needle = WRITE_ERRORS[case]
    if unprivileged and IS_ROOT and not SETPRIV:
        pytest.skip("root without setpriv: chmod cannot bite")
    places = {"res": measured, "tmp": tmp_path, "file": tmp_path / "a-file", "ro": tmp_path / "ro",
              "dir": tmp_path / "dir", "dir_csv": tmp_path / "dir.csv"}  # fmt: skip
    places["file"].write_text("x")
    for d in ("ro", "dir", "dir_csv"):
        places[d].mkdir()
    places["ro"].chmod(0o555)
    try:
        res = cli(*(a.format(**places) for a in args), unprivileged=unprivileged)
    finally:
        places["ro"].chmod(0o755)
    one_error_line(res, needle)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a-file", "dir", "dir.csv", "ro"]


# --- 5. nothing reportable ------------------------------------------------------------------

ONLY_BAD = {
    "R06 only a newer schema_version": ("new.json", {"schema_version": 99, "run_id": "n"}, "schema_version 99"),
    "R08 only an invalid record": ("bad.json", {"schema_version": 1, "run_id": "w", "config": 3}, "invalid record"),
    "R03 only a corrupt JSON": ("corrupt.json", "{not json", "not readable JSON"),
}


@pytest.mark.parametrize("command", ["report", "ls", "export"])
@pytest.mark.parametrize("case", list(ONLY_BAD))
def test_nothing_reportable_names_the_skipped_files(tmp_path, case, command):
    """Before: 'no e3bench results under DIR' without a word about the file that was skipped."""
    name, content, why = ONLY_BAD[case]
    root = tmp_path / "res"
    (root / "runs").mkdir(parents=True)
    (root / "runs" / name).write_text(content if isinstance(content, str) else json.dumps(content))
    extra = ["-o", tmp_path / "x.csv"] if command == "export" else []
    one_error_line(cli(command, root, *extra), str(root / "runs" / name), why)
    assert not (root / "report").exists() and not (tmp_path / "x.csv").exists()


def test_results_dir_that_is_a_file(tmp_path, measured):
    """R11: a record file given where the folder is expected."""
    rec = the_record(measured)
    for command in ("report", "ls"):
        one_error_line(cli(command, rec), str(rec), "is a file")


# --- 6. figures at the smallest measured batch say which batch ------------------------------


def test_min_batch_figures_name_the_batch_measured(measured, tmp_path):
    """Issue 12 item 8: a run of batch sizes [4, 8] was summarised as 'batch 1'
    (decode_tokens_per_s_bs1 held batch 4's figure)."""
    rec = json.loads(the_record(measured).read_text())
    bs4 = next(g for g in rec["efficiency"]["generation"] if g["batch_size"] == 4)
    res = cli("report", measured, "-o", tmp_path / "rep")
    assert res.returncode == 0, res.stderr[-2000:]
    rep = tmp_path / "rep"
    pivot = list(csv.DictReader(io.StringIO((rep / "pivot.csv").read_text())))
    assert [p["batch_size"] for p in pivot] == ["4", "8"]  # one row per batch size measured
    assert float(pivot[0]["decode_tokens_per_s_mean"]) == pytest.approx(bs4["decode_tokens_per_s"]["mean"])
    assert float(pivot[0]["ttft_ms_mean"]) == pytest.approx(bs4["ttft_ms"]["mean"])
    ept = bs4["energy"]["ept_total_j_per_token"]
    assert float(pivot[0]["ept_j_per_token_in_out_mean"]) == pytest.approx(ept)
    for f in ("summary.md", "report.html", "pivot.csv", "table.tex"):
        text = (rep / f).read_text()
        assert "batch 1" not in text and "_bs1" not in text, f
    assert "Fastest decode:** batch 4: " in (rep / "summary.md").read_text()


def test_plot_titles_and_labels_name_the_batch(measured, tmp_path):
    """Figures compare configurations at one batch size they all measured, and say which: two
    configurations measured at [4, 8] and [1, 8] are drawn at batch 8 (before: each at its own
    smallest batch, bs4 against bs1, labelled "smallest batch measured (1–4)")."""
    from e3bench.report import figures, plots
    from e3bench.report.compare import summarize_configs
    from e3bench.results import store

    src = the_record(measured)
    root = tmp_path / "res"
    variant(src, root / "runs" / "a.json", model="at-4-and-8")
    data = json.loads(src.read_text())
    data["efficiency"]["generation"][0]["batch_size"] = 1  # the same run, as if measured at [1, 8]
    variant(src, root / "runs" / "b.json", model="at-1-and-8", efficiency=data["efficiency"])
    configs = summarize_configs([r for _, r in store.scan(root).records])
    assert sorted(c.min_batch_size for c in configs) == [1, 4]
    texts: list[str] = []
    by_name = {f.name: f for f in figures.specs(configs)}
    for name in ("ttft", "energy_per_token", "pareto_latency"):
        spec = by_name[name]
        (p,) = spec.panels
        assert p.title == "batch 8"
        fig = plots.draw(spec)
        for ax in fig.axes:
            texts.extend([ax.get_title(), ax.get_xlabel(), ax.get_ylabel()])
            texts.extend(t.get_text() for t in ax.get_xticklabels() + ax.get_yticklabels() + ax.texts)
            if ax.get_legend():
                texts.extend(t.get_text() for t in ax.get_legend().get_texts())
        import matplotlib.pyplot as plt

        plt.close(fig)
    joined = "\n".join(texts)
    assert "batch 1" not in joined and "batch 4" not in joined
    assert joined.count("batch 8") == 3  # each figure's title names the batch
    assert "at-4-and-8 pytorch fp32 cpu" in texts and "at-1-and-8 pytorch fp32 cpu" in texts  # bars
    assert {"1  at-1-and-8 pytorch fp32 cpu", "2  at-4-and-8 pytorch fp32 cpu"} <= set(texts)  # numbered legend
    # the values are batch 8's: the energy bar of each configuration is its bs8 record value
    bs8 = next(g for g in data["efficiency"]["generation"] if g["batch_size"] == 8)
    bars = by_name["energy_per_token"].panels[0].marks
    assert [m.y.estimate for m in bars] == pytest.approx([bs8["energy"]["ept_total_j_per_token"]] * 2)


def test_variant_and_reference_are_compared_at_a_batch_both_measured(measured, tmp_path):
    """A variant measured at [4, 8] against a reference at [1, 8]: speed-up at batch 8, not
    variant bs4 ÷ reference bs1."""
    from e3bench.report.compare import summarize_configs
    from e3bench.report.variants import compare_to_reference
    from e3bench.results import store

    src = the_record(measured)
    data = json.loads(src.read_text())
    gens = data["efficiency"]["generation"]
    root = tmp_path / "res"
    variant(src, root / "runs" / "var.json", model="m", dtype="bf16")
    gens[0]["batch_size"] = 1
    gens[0]["decode_tokens_per_s"]["mean"] = 1.0
    gens[1]["decode_tokens_per_s"]["mean"] = gens[1]["decode_tokens_per_s"]["mean"] / 2
    variant(src, root / "runs" / "ref.json", model="m", dtype="fp32", efficiency=data["efficiency"])
    (cmp,) = compare_to_reference(summarize_configs([r for _, r in store.scan(root).records]))
    assert [s.batch_size for s in cmp.speed] == [8]
    assert cmp.speed[0].speedup.estimate == pytest.approx(2.0)


def test_nothing_reportable_fix_depends_on_why_files_were_skipped(tmp_path):
    """An invalid record was told to upgrade e3bench; only a newer schema_version is."""
    from e3bench.results.store import no_results_error

    invalid = no_results_error(tmp_path, ["bad.json: invalid record (config: Input should be a valid dictionary)"])
    assert "pip install" not in invalid.fix and "fix or remove the invalid files" in invalid.fix
    wrong_type = no_results_error(tmp_path, ["x.json: schema_version xx (this e3bench reads 1)"])
    assert "pip install" not in wrong_type.fix
    newer = no_results_error(tmp_path, ["new.json: schema_version 99 (this e3bench reads 1)"])
    assert "pip install -U e3bench" in newer.fix and "invalid" not in newer.fix
