"""``e3bench compare A B``: resolution of runs / sweeps / folders, pairing, refusals, the
statistics of each row (verdict values and signs) and the four output formats.

One real run of the tiny decoder (speed at batch 1 and 2, a multiple-choice task with logged
samples) is made once; the other records are copies of it with one thing changed, so each test
knows exactly which difference it should find."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import run_cli
from e3bench.core.errors import E3Error
from e3bench.core.timing import summarize
from e3bench.results import store

N_ITEMS = 20


@pytest.fixture(scope="module")
def base(tmp_path_factory, tiny_models):
    """The path of one real record (``<out>/runs/<run_id>.json``) and its samples file."""
    from e3bench.bench.runner import run_one
    from e3bench.config.run import build_config
    from e3bench.sweep.finish import finish_run

    tmp = tmp_path_factory.mktemp("cmp")
    mc = tmp / "mc.jsonl"
    mc.write_text("".join(json.dumps({"query": f"Item {i}: the unit of energy is", "choices": ["joules", "watts", "volts"],
                                      "gold": i % 3}) + "\n" for i in range(N_ITEMS)))  # fmt: skip
    cfg = build_config(overrides=dict(
        model=str(tiny_models["decoder"]), batch_sizes="1,2", max_new_tokens=3, prompt_tokens=8, warmup_iters=1,
        min_iters=6, min_seconds=0.0, meter="estimate", cpu_tdp_w=65.0, idle_seconds=0.2,
        tasks=[f"jsonl_mc:path={mc}"], log_samples=True, output_dir=str(tmp / "out"),
    ))  # fmt: skip
    return finish_run(run_one(cfg), cfg, resumable=False).path


def _tpot_values(g) -> list[float]:
    return [(e - t) / (o - 1) for e, t, o in zip(g.raw.e2e_ms, g.raw.ttft_ms, g.raw.output_tokens, strict=True)]


def _copy(src, root, sweep="runs", *, run_id, slower=False, config=None, ept=None, method=None,
          samples=True, edit_samples=None, stem=None, warnings=None):  # fmt: skip
    """A copy of record ``src`` as run ``run_id`` in ``root/sweep``, with TPOT longer by 5 ×
    its slowest iteration in every iteration (``slower``: far beyond any noise), config
    fields changed (and a new config hash when so), net J/token set, the energy method
    changed, samples dropped or edited (``edit_samples(rows) -> rows``)."""
    rec = store.load(src)
    rec.run_id = run_id
    rec.warnings += warnings or []
    if config:
        rec.config = {**rec.config, **config}
        rec.config_hash = "h" + str(abs(hash(json.dumps(rec.config, sort_keys=True))))[:15]
    for g in rec.efficiency.generation:
        if slower:
            g.tpot_ms = summarize([x + 5 * g.tpot_ms.max for x in _tpot_values(g)])
        if ept is not None:
            net = g.energy.net.model_copy(update={"ept_total_j_per_token": ept * g.batch_size})
            g.energy = g.energy.model_copy(update={"net": net})
        if method is not None:
            g.energy = g.energy.model_copy(update={"method": method[0], "sensor": method[1]})
    for t in rec.effectiveness:
        rows = [json.loads(x) for x in open(t.samples_file).read().splitlines()]
        if edit_samples is not None:
            rows = edit_samples(rows)
            p = t.metrics["acc_norm"] = sum(r["acc_norm"] for r in rows) / len(rows)
            t.stderr["acc_norm"] = (p * (1 - p) / (len(rows) - 1)) ** 0.5
        t.samples_file = str(store.save_samples(root, sweep, run_id, t.task, rows)) if samples else None
    return store.save(rec, root, sweep, stem=stem)


def _rows(a, b, **kw):
    from e3bench.report.diff import pair, resolve
    from e3bench.report.diff_rows import compare_pair

    p = pair(resolve(str(a)), resolve(str(b)), **kw)
    return {(r.metric, r.batch_size): r for r in compare_pair(p.pairs[0]).rows}, p


def test_tpot_far_apart_is_worse_for_the_slower_and_better_for_the_faster(base, tmp_path):
    slow = _copy(base, tmp_path, run_id="slow", slower=True)
    rows, _ = _rows(base, slow)
    for g in store.load(base).efficiency.generation:
        r = rows[("TPOT", g.batch_size)]
        assert r.verdict == "worse" and r.diff.low > 0 and r.diff.estimate == pytest.approx(5 * g.tpot_ms.max)
        assert r.pct == pytest.approx(500 * g.tpot_ms.max / g.tpot_ms.mean)
        assert "Welch t" in r.how and "A 6 iterations, B 6 iterations" in r.how
    back, _ = _rows(slow, base)
    assert {back[("TPOT", b)].verdict for b in (1, 2)} == {"better"} and back[("TPOT", 1)].diff.high < 0
    assert back[("TPOT", 1)].diff.estimate == pytest.approx(-rows[("TPOT", 1)].diff.estimate)


def test_identical_figures_are_no_significant_difference(base, tmp_path):
    twin = _copy(base, tmp_path, run_id="twin")
    rows, p = _rows(base, twin)
    speed = [r for r in rows.values() if r.section == "efficiency"]
    assert len(speed) == 8 and {r.verdict for r in speed} == {"no significant difference"}
    assert all(r.diff.estimate == 0 for r in speed)
    task = next(r for r in rows.values() if r.section == "effectiveness")
    assert task.verdict == "no significant difference"
    assert task.how.startswith(f"paired over the same {N_ITEMS} items") and "0 right only in A, 0 only in B" in task.how
    # one energy window per run: no spread known, so no verdict can be given
    assert {rows[("net energy", b)].verdict for b in (1, 2)} == {"INCONCLUSIVE"}
    assert rows[("weights", None)].verdict == "no significant difference" and p.pairs[0].differs == []
    from e3bench.report.diff_rows import ONE_RUN_NOTE, compare_pair

    assert ONE_RUN_NOTE in compare_pair(p.pairs[0]).notes


def test_paired_test_over_logged_samples_and_unpaired_otherwise(base, tmp_path):
    def all_right(rows):
        return [{**r, "acc_norm": 1.0} for r in rows]

    def six_wrong(rows):
        return [{**r, "acc_norm": 0.0 if r["doc_id"] < 6 else 1.0} for r in rows]

    a = _copy(base, tmp_path, "a", run_id="a1", edit_samples=all_right)
    b = _copy(base, tmp_path, "b", run_id="b1", edit_samples=six_wrong)
    rows, _ = _rows(a, b)
    r = next(x for x in rows.values() if x.section == "effectiveness")
    assert (r.a, r.b) == (1.0, pytest.approx(14 / 20))
    assert r.diff.estimate == pytest.approx(-6 / 20) and r.diff.high < 0 and r.verdict == "worse"
    assert "McNemar exact: 6 right only in A, 0 only in B, p = 0.0312" in r.how
    nolog = _copy(base, tmp_path, "c", run_id="c1", samples=False)
    r = next(x for x in _rows(a, nolog)[0].values() if x.section == "effectiveness")
    assert r.how.startswith("unpaired (no readable samples logged in B") and "Welch t" in r.how
    # what pairing buys: B loses 6 of A's 12 right answers and gains none (60 % → 30 %)
    a12 = _copy(base, tmp_path, "e", run_id="e1", edit_samples=lambda rows: [{**r, "acc_norm": float(r["doc_id"] < 12)} for r in rows])
    lose6 = lambda rows: [{**r, "acc_norm": float(6 <= r["doc_id"] < 12)} for r in rows]  # noqa: E731
    paired = _copy(base, tmp_path, "f", run_id="f1", edit_samples=lose6)
    unpaired = _copy(base, tmp_path, "g", run_id="g1", edit_samples=lose6, samples=False)
    r = next(x for x in _rows(a12, paired)[0].values() if x.section == "effectiveness")
    assert (r.a, r.b, r.verdict) == (0.6, 0.3, "worse") and "6 right only in A, 0 only in B, p = 0.0312" in r.how
    r = next(x for x in _rows(a12, unpaired)[0].values() if x.section == "effectiveness")
    assert (r.a, r.b, r.verdict) == (0.6, 0.3, "no significant difference") and r.how.startswith("unpaired")
    # 4 of 12 lost: McNemar's p is 0.125, and the verdict agrees (the bootstrap read 'worse' beside it)
    lose4 = _copy(base, tmp_path, "h", run_id="h1", edit_samples=lambda rows: [{**r, "acc_norm": float(4 <= r["doc_id"] < 12)} for r in rows])
    r = next(x for x in _rows(a12, lose4)[0].values() if x.section == "effectiveness")
    assert (r.b, r.verdict) == (0.4, "no significant difference") and "p = 0.125" in r.how and "Agresti-Min" in r.how

    def other_items(rows):
        return [{**r, "context": r["context"] + " (changed)"} for r in rows]

    moved = _copy(base, tmp_path, "d", run_id="d1", edit_samples=other_items)
    r = next(x for x in _rows(a, moved)[0].values() if x.section == "effectiveness")
    assert r.how.startswith("unpaired (the samples are of different items (doc_id 0: context differs)")


def test_repeats_give_energy_a_ci_unless_it_was_obtained_differently(base, tmp_path):
    for k, v in enumerate((1.00, 1.02, 0.98)):
        _copy(base, tmp_path, "a", run_id=f"a{k}", ept=v)
        _copy(base, tmp_path, "b", run_id=f"b{k}", ept=2 * v)
    rows, _ = _rows(tmp_path / "a", tmp_path / "b")
    r = rows[("net energy", 1)]
    assert (r.a, r.b) == (pytest.approx(1.0), pytest.approx(2.0)) and r.verdict == "worse"
    assert "A 3 repeats, B 3 repeats" in r.how and r.diff.known
    assert rows[("net energy", 2)].diff.estimate == pytest.approx(2.0)
    for k, v in enumerate((1.00, 1.02, 0.98)):
        _copy(base, tmp_path, "m", run_id=f"m{k}", ept=2 * v, method=("measured", "rapl: package"))
    r = _rows(tmp_path / "a", tmp_path / "m")[0][("net energy", 1)]
    assert r.verdict == "INCONCLUSIVE" and r.how.startswith("energy obtained differently")


def test_with_repeats_a_run_stands_for_its_configuration(base, tmp_path):
    from e3bench.report.diff import pair, resolve

    for k, v in enumerate((1.00, 1.02, 0.98)):
        _copy(base, tmp_path, run_id=f"a{k}", ept=v)
        _copy(base, tmp_path, run_id=f"b{k}", ept=2 * v, config={"dtype": "bf16"})
    a, b = (resolve(x, tmp_path, with_repeats=True) for x in ("a1", "b0"))
    assert (a.kind, sorted(r.run_id for _, r in a.records)) == ("repeats", ["a0", "a1", "a2"])
    assert a.describe() == f"3 runs of the configuration of a1 in {tmp_path / 'runs'}"
    rows, _ = _rows(tmp_path / "runs" / "a0.json", tmp_path / "runs" / "b2.json")
    assert rows[("net energy", 1)].verdict == "INCONCLUSIVE"  # one run each: no spread known
    from e3bench.report.diff_rows import compare_pair

    got = {(r.metric, r.batch_size): r for r in compare_pair(pair(a, b).pairs[0]).rows}
    assert got[("net energy", 1)].verdict == "worse" and "A 3 repeats, B 3 repeats" in got[("net energy", 1)].how
    assert "A 3 repeats, B 3 repeats" in got[("TPOT", 2)].how and got[("TPOT", 2)].diff.n == 6
    assert compare_pair(pair(a, b).pairs[0]).notes == []  # repeats on both sides: no one-run caveat
    with pytest.raises(E3Error, match="same 3 record"):
        pair(a, resolve("a2", tmp_path, with_repeats=True))
    overlap = pair(a, resolve(str(tmp_path / "runs" / "a0.json"))).pairs[0]  # 3 repeats against one of them
    assert "1 run on both sides (a0): the difference is understated" in overlap.warnings


def test_sweeps_pair_by_identity_and_name_what_did_not_pair(base, tmp_path):
    _copy(base, tmp_path / "A", "s", run_id="fp32-a")
    _copy(base, tmp_path / "A", "s", run_id="bf16-a", config={"dtype": "bf16"})
    _copy(base, tmp_path / "B", "s", run_id="fp32-b", slower=True)
    _copy(base, tmp_path / "B", "s", run_id="long-b", config={"max_new_tokens": 8, "threads": 1})
    from e3bench.report.diff import pair, resolve

    got = pair(resolve(str(tmp_path / "A")), resolve(str(tmp_path / "B")))
    assert [(p.a.run_ids, p.b.run_ids) for p in got.pairs] == [(["fp32-a"], ["fp32-b"])]
    assert got.unpaired == ["tiny-llama pytorch bf16 cpu: only in A", "tiny-llama pytorch fp32 cpu: only in B"]
    B2 = tmp_path / "B2"
    _copy(base, B2, "s", run_id="fp32-b2")
    _copy(base, B2, "s", run_id="bf16-b2", config={"dtype": "bf16", "max_new_tokens": 8, "threads": 1})
    got = pair(resolve(str(tmp_path / "A")), resolve(str(B2)))
    assert len(got.pairs) == 1 and got.unpaired == [
        "tiny-llama pytorch bf16 cpu: B runs it with another workload (max_new_tokens 3 → 8; --force pairs them)"]
    got = pair(resolve(str(tmp_path / "A")), resolve(str(B2)), force=True)
    assert [p.b.run_ids for p in got.pairs] == [["fp32-b2"], ["bf16-b2"]] and got.unpaired == []
    assert got.pairs[1].warnings[0] == "different workloads, compared because of --force: max_new_tokens 3 → 8"
    assert got.pairs[1].differs == ["max_new_tokens 3 → 8", "threads (none) → 1"]


def test_configurations_that_differ_in_other_fields_pair_with_their_own(base, tmp_path):
    """Two configurations of one side with the same model, dtype and workload (threads 1 and 2)
    pair with their counterparts, not both with one of them."""
    from e3bench.report.diff import pair, resolve

    for side in ("A", "B"):
        for t in (1, 2):
            _copy(base, tmp_path / side, "s", run_id=f"{side}{t}", config={"threads": t})
    got = pair(resolve(str(tmp_path / "A")), resolve(str(tmp_path / "B")))
    assert sorted((p.a.run_ids, p.b.run_ids) for p in got.pairs) == [(["A1"], ["B1"]), (["A2"], ["B2"])]
    assert sorted(p.label for p in got.pairs) == [
        "tiny-llama pytorch fp32 cpu (threads=1)", "tiny-llama pytorch fp32 cpu (threads=2)"]
    assert got.unpaired == []


def test_refusals_self_and_other_workload(base, tmp_path):
    from e3bench.report.diff import pair, resolve

    run_id = store.load(base).run_id
    root = base.parent.parent
    with pytest.raises(E3Error, match="same 1 record.*comparing something with itself"):
        pair(resolve(run_id, root), resolve(str(base), root))
    long = _copy(base, tmp_path, run_id="long", config={"max_new_tokens": 8}, warnings=["batch 2 cut by --max-seconds"])
    with pytest.raises(E3Error) as err:
        pair(resolve(str(base)), resolve(str(long)))
    assert "different workloads (tiny-llama pytorch fp32 cpu: max_new_tokens 3 → 8)" in err.value.one_line()
    assert "--force" in err.value.fix
    forced = pair(resolve(str(base)), resolve(str(long)), force=True)
    assert forced.pairs[0].warnings[0] == "different workloads, compared because of --force: max_new_tokens 3 → 8"
    assert "B: batch 2 cut by --max-seconds" in forced.pairs[0].warnings  # the runs' own warnings


def test_resolve_run_ids_paths_sweeps_and_folders(base, tmp_path):
    from e3bench.report.diff import resolve

    root = tmp_path / "res"
    shutil.copytree(base.parent.parent, root)
    rec = store.load(base)
    in_sweep = _copy(base, root, "sw", run_id="sweep-run", stem=rec.config_hash)
    assert in_sweep.name == f"{rec.config_hash}.json"
    assert resolve(rec.run_id, root).where == root / "runs" / base.name
    assert resolve("sweep-run", root).where == in_sweep  # found through the index
    side = resolve("sw", root)
    assert (side.kind, [r.run_id for _, r in side.records]) == ("sweep", ["sweep-run"])
    side = resolve(str(root))
    assert side.kind == "folder" and sorted(r.run_id for _, r in side.records) == sorted([rec.run_id, "sweep-run"])
    (tmp_path / "broken" / "s").mkdir(parents=True)
    (tmp_path / "broken" / "s" / "x.json").write_text('{"run_id": ')
    with pytest.raises(E3Error, match=r"no readable e3bench results under .*broken: skipped 1 file\(s\): .*x.json"):
        resolve(str(tmp_path / "broken"))
    with pytest.raises(E3Error) as err:
        resolve("20990101T000000-nope", root)
    line = err.value.one_line()
    assert "no run, sweep or results folder named '20990101T000000-nope'" in line and f"e3bench ls {root}" in line


def test_narrow_terminal_keeps_the_verdict_and_names_what_it_left_out(base, tmp_path):
    """compare laid out its own table (rich folding every column); it now goes through the one
    table fitter: at 60 columns A and B are left out, named on stderr, and the verdict stays."""
    from typer.testing import CliRunner

    from e3bench.cli.app import app

    slow = _copy(base, tmp_path, run_id="slow", slower=True)
    res = CliRunner().invoke(app, ["compare", str(base), str(slow)], env={"COLUMNS": "60"})
    assert res.exit_code == 0, res.output
    assert "not shown at 60 columns: A, B (a wider COLUMNS, or --format md)" in res.stderr
    tpot = next(x for x in res.stdout.splitlines() if x.startswith("TPOT ms b1"))
    assert tpot.rstrip().endswith("worse") and len(tpot) <= 60
    assert max(len(x) for x in res.stdout.splitlines()) <= 60


def test_cli_formats_fit_80_columns_and_errors_are_one_line(base, tmp_path):
    from typer.testing import CliRunner

    from e3bench.cli.app import app

    slow = _copy(base, tmp_path, run_id="slow", slower=True)
    g = store.load(base).efficiency.generation[0]
    pct = f"+{500 * g.tpot_ms.max / g.tpot_ms.mean:.0f}%"
    cli = CliRunner()
    res = cli.invoke(app, ["compare", str(base), str(slow)], env={"COLUMNS": "80"})
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert max(len(x) for x in lines) <= 80
    tpot = next(x for x in lines if x.lstrip().startswith("TPOT ms b1"))
    assert pct in tpot and tpot.rstrip().endswith("worse")
    doc = json.loads(cli.invoke(app, ["compare", str(base), str(slow), "--format", "json"]).stdout)
    row = next(r for r in doc["pairs"][0]["rows"] if (r["metric"], r["batch_size"]) == ("TPOT", 1))
    assert row["verdict"] == "worse" and row["diff_ci95_low"] > 0 and doc["pairs"][0]["b_runs"] == ["slow"]
    md = cli.invoke(app, ["compare", str(base), str(slow), "--format", "md"]).stdout
    assert "| efficiency | TPOT ms b1 |" in md and "| worse |" in md and "- B against A: " in md
    csv_text = cli.invoke(app, ["compare", str(base), str(slow), "--format", "csv"]).stdout
    assert csv_text.splitlines()[0].startswith("pair,a_runs,b_runs,section,metric,unit,batch_size")
    res = run_cli("compare", str(base), str(base))
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.strip().splitlines() == [
        next(x for x in res.stderr.splitlines() if x.startswith("error: A and B are the same 1 record ("))]
    res = cli.invoke(app, ["compare", "nope-run", str(base), "-r", str(tmp_path)])
    assert res.exit_code == 2 and "error: no run, sweep or results folder named 'nope-run'" in res.output


def test_compare_says_how_far_b_moved_a_s_loglikelihoods(base, tmp_path):
    """Issue 20.5: the paired task row names |Δ loglik| per item (report.llshift), in nats."""
    a = _copy(base, tmp_path, "la", run_id="la1")
    b = _copy(base, tmp_path, "lb", run_id="lb1", edit_samples=lambda rows: [
        {**r, "loglikelihoods": [x - 0.5 - 0.1 * (r["doc_id"] % 2) for x in r["loglikelihoods"]]} for r in rows])  # fmt: skip
    r = next(x for x in _rows(a, b)[0].values() if x.section == "effectiveness")
    assert "|Δ loglik| B vs A per item: median 0.55, p90 0.6 nats" in r.how
