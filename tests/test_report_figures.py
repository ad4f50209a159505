"""Report figures at scale and in detail: a bounded set of figures whatever the number of
configurations (top-N bars, Pareto scatter, an overview by facet), interactive figures that share
one plotly.js, error bars from the intervals, Pareto numbers that never overlap, plain-text labels."""

from __future__ import annotations

import importlib.util
import json
import math
import re
from pathlib import Path

import pytest

from e3bench.report.stats import Interval

ROOT = Path(__file__).resolve().parents[1]


def _report_scale():
    spec = importlib.util.spec_from_file_location("report_scale", ROOT / "benchmarks" / "report_scale.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    """A report over 240 synthetic records: 120 configurations (8 models, 4 backends, 5
    precisions, 2 workloads, batch sizes 1,4 / 1,8 / 4,16,32), each run twice."""
    from e3bench.report.render import build_report

    tmp = tmp_path_factory.mktemp("many")
    _report_scale().write_records(tmp / "res", 240, repeats=2, workloads=2)
    return build_report(tmp / "res", tmp / "out")


def test_figures_stay_few_and_small_at_scale(many):
    from e3bench.report import figures

    out = many.out_dir
    assert len(many.configs) == 120 and all(c.runs == 2 for c in many.configs)
    names = {"pareto_energy", "pareto_latency", "overview", "ttft", "tpot", "throughput", "energy_per_token",
             "accuracy", "memory"}  # fmt: skip
    assert {p.name for p in (out / "plots").iterdir()} == {f"{n}.{e}" for n in names for e in ("png", "pdf")}
    assert max(p.stat().st_size for p in (out / "plots").glob("*.png")) < 400_000
    specs = {f.name: f for f in figures.specs(many.configs)}
    gs, left = figures.groups(many.configs)
    # one panel per workload, each at the batch most of its configurations measured
    assert len(gs) == 2 and len({g.configs[0].workload for g in gs}) == 2
    for g in gs:
        members = [c for c in many.configs if c.workload == g.configs[0].workload]
        counts = {bs: sum(bs in c.batches for c in members) for bs in (1, 4, 8, 16, 32)}
        assert len(g.configs) == counts[g.batch] == max(counts.values()) and g.title.endswith(f"batch {g.batch}")
    n_left = 120 - sum(len(g.configs) for g in gs)
    assert left.startswith(f"{n_left} configurations did not measure their panel's batch size")
    for f in specs.values():
        for p in f.panels:
            if p.kind == "bar":
                assert len(p.marks) == figures.TOP_N, f.name  # the best 20 of ~40, not 120 bars
            if p.kind == "line":
                assert len({m.series for m in p.marks}) == figures.TOP_LINES
    assert f"Best 20 of {len(gs[0].configs)}, {len(gs[1].configs)} configurations" in specs["energy_per_token"].note
    # bars are the best by their own metric, the lowest energies in order, at the panel's batch
    shown = [m.y.estimate for m in specs["energy_per_token"].panels[0].marks]
    every = sorted(figures.at(c, gs[0].batch, "ept_total_j_per_token").estimate for c in gs[0].configs)
    assert shown == every[: figures.TOP_N]
    # energy per token of 2 runs: the mean with a Student-t interval across the runs
    iv = figures.at(gs[0].configs[0], gs[0].batch, "ept_total_j_per_token")
    assert iv.n == 2 and iv.known and iv.low < iv.estimate < iv.high
    # every configuration of a workload stays a point of its Pareto scatter
    assert [len(p.marks) for p in specs["pareto_energy"].panels] == [len(g.configs) for g in gs]
    assert [p.x_label for p in specs["overview"].panels] == ["precision"] * 3
    html = (out / "report.html").read_text()
    assert len(html) < 1_000_000
    assert html.count("<script src='plotly.min.js'") == 1 and "plotly.js v" not in html  # plotly.js once, beside
    assert html.count("Plotly.newPlot(") == len(names)


def _mark(label, x, y, *, front=False, number=None, series="fp32", half=0.01):
    from e3bench.report.figures import Mark

    iv = lambda v: Interval(v, v - half, v + half, 2, "Student t, df=1")  # noqa: E731
    return Mark(label, series, iv(y), iv(x), hover=f"{label}\nmore", front=front, number=number)


def test_pareto_numbers_never_overlap_each_other_or_points():
    """Twelve front points packed into a corner: each number is placed beside its point, clear
    of every other number and every point (the labels used to sit at a fixed offset and overlap)."""
    import matplotlib.pyplot as plt

    from e3bench.report import plots
    from e3bench.report.figures import Figure, Panel

    marks = [_mark(f"cfg {i}", 1 + 0.02 * i, 0.5 + 0.002 * i, front=True, number=i + 1) for i in range(12)]
    marks += [_mark(f"other {i}", 1.1 + 0.01 * i, 0.45, series="int8") for i in range(20)]
    fig = plots.draw(Figure("p", "t", "", [Panel("scatter", "t", "x", "y", marks)]))
    try:
        ax = fig.axes[0]
        renderer = fig.canvas.get_renderer()
        numbers = [t for t in ax.texts if t.get_text().isdigit()]
        assert sorted(int(t.get_text()) for t in numbers) == list(range(1, 13))
        boxes = [t.get_window_extent(renderer) for t in numbers]
        for i, a in enumerate(boxes):
            assert not any(a.overlaps(b) for b in boxes[i + 1 :])
        pts = ax.transData.transform([(m.x.estimate, m.y.estimate) for m in marks])
        assert not any(b.contains(x, y) for b in boxes for x, y in pts)
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert "1  cfg 0" in legend and "12  cfg 11" in legend  # the numbered legend names each one
    finally:
        plt.close(fig)


def test_static_figure_draws_error_bars_and_plain_text():
    """Error bars are the intervals (not a fixed width); ``$...$`` in a label is text."""
    import matplotlib.pyplot as plt

    from e3bench.report import plots
    from e3bench.report.figures import Figure, Mark, Panel

    marks = [Mark("$x^2$ model", "fp32", Interval(10.0, 8.0, 13.0, 3, "t"), cat="$x^2$ model"),
             Mark("_hidden", "_int8", Interval(5.0, math.nan, math.nan, 1, "one"), cat="_hidden")]  # fmt: skip
    fig = plots.draw(Figure("b", "t", "note", [Panel("bar", "t", "ms", "", marks)]))
    try:
        ax = fig.axes[0]
        assert [t.get_text() for t in ax.get_yticklabels()] == ["$x^2$ model", "_hidden"]
        assert [t.get_text().lstrip("\u200b") for t in ax.get_legend().get_texts()] == ["fp32", "_int8"]
        (bars,) = [c for c in ax.containers if hasattr(c, "errorbar") and c.errorbar is not None]
        segs = bars.errorbar.lines[2][0].get_segments()
        assert [tuple(p[0] for p in s) for s in segs][0] == (8.0, 13.0)  # from the interval's ends
    finally:
        plt.close(fig)


def test_interactive_figure_hover_legend_and_escaping():
    """One trace per series (the legend toggles it), hover text = the configuration, error
    arrays from the intervals, text from records escaped and no raw '<' inside the script."""
    from e3bench.report import interactive
    from e3bench.report.figures import Figure, Panel

    marks = [_mark("m<script>alert(1)</script> fp32", 1.0, 0.5, front=True, number=1),
             _mark("m int8", 0.5, 0.45, series="int8", front=True, number=2, half=0.02),
             _mark("m bf16", 1.2, 0.4, series="bf16")]  # fmt: skip
    spec = Figure("pareto_energy", "Accuracy vs energy", "", [Panel("scatter", "t", "J/token", "accuracy", marks)])
    fj = interactive.figure_json(spec)
    names = [t["name"] for t in fj["data"]]
    assert names == ["fp32", "int8", "bf16", "Pareto front"]
    fp32 = fj["data"][0]
    assert fp32["text"][0].startswith("m&lt;script&gt;alert(1)&lt;/script&gt; fp32<br>")
    assert fj["data"][1]["error_y"]["array"] == [0.02] and fj["data"][1]["error_y"]["arrayminus"] == [0.02]
    assert fj["data"][3]["x"] == [0.5, 1.0]  # the front, cheapest first
    div = interactive.div(spec)
    script = div[div.index("<script>") + len("<script>") : div.rindex("</script>")]
    assert "<" not in script
    payload = re.search(r"var f=(\{.*\});Plotly", script).group(1)
    assert json.loads(payload)["data"][0]["name"] == "fp32"


def test_log_axes_label_ticks_with_plain_numbers():
    """With math text off, matplotlib's log-axis labels showed raw '$\\mathdefault{2^{0}}$'; the
    batch-size axis now names the batch sizes measured."""
    import matplotlib.pyplot as plt

    from e3bench.report import plots
    from e3bench.report.figures import Figure, Mark, Panel

    marks = [Mark("a", "a", Interval(v, v - 1, v + 1, 2, "t"), cat=float(bs)) for bs, v in ((1, 5.0), (4, 9.0))]
    fig = plots.draw(Figure("t", "t", "", [Panel("line", "", "batch size", "tokens/s", marks, log_x=True)]))
    try:
        fig.canvas.draw()
        assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["1", "4"]
    finally:
        plt.close(fig)


def test_models_are_named_in_legends_as_in_labels_not_by_their_path():
    """The colour facet named models by their whole path (a converted GGUF's cache folder, a
    fixture under results/) where every label names the folder; paths stay only where two
    folders share a name."""
    from types import SimpleNamespace

    from e3bench.report.figures import facet

    def cfg(model):
        return SimpleNamespace(dtype="fp32", backend="pytorch", model=model, device="cpu")

    cs = [cfg("/root/.cache/e3bench/gguf-converted/SmolLM2-135M-x"), cfg("/work/results/fixtures/tiny-t5")]
    name, key = facet(cs)
    assert name == "model" and [key(c) for c in cs] == ["SmolLM2-135M-x", "tiny-t5"]
    same = [cfg("/a/model"), cfg("/b/model")]
    assert [facet(same)[1](c) for c in same] == ["/a/model", "/b/model"]
