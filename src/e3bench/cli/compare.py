"""``e3bench compare A B``: two runs, sweeps or results folders side by side, with the
difference of every figure, its 95 % CI and a verdict (:mod:`e3bench.report.diff`,
:mod:`e3bench.report.diff_rows`), as a terminal table or as Markdown, CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import typer

from e3bench.cli.common import fail
from e3bench.core.errors import E3Error
from e3bench.core.fmt import DASH, num

FORMATS = ("table", "md", "csv", "json")
_LEGEND = "Δ = B − A (% of A); ± = standard error; 95 % CI of Δ; verdict: B against A"
_COLOUR = {"better": "green", "worse": "red", "INCONCLUSIVE": "yellow"}


def compare(
    a: str = typer.Argument(..., metavar="A", help="run id, record .json, sweep (folder or name) or results folder"),
    b: str = typer.Argument(..., metavar="B", help="the same kinds as A: compared against A"),
    results_dir: Path = typer.Option(Path("results"), "--results-dir", "-r", help="where run ids and sweep names are looked up"),
    format_: str = typer.Option("table", "--format", "-f", help="table | md | csv | json"),
    force: bool = typer.Option(False, "--force", help="compare different workloads anyway (with a warning)"),
    with_repeats: bool = typer.Option(
        False, "--with-repeats", help="a run stands for all runs of its configuration in its folder (CI across repeats)"
    ),
) -> None:
    """Compare B against A: quality, speed, energy and memory, each with a 95 % CI and a verdict.

    Every task's score, TTFT/TPOT/decode/throughput and energy per input + output token at each batch size both measured, and memory; each with B − A, its 95 % CI and a verdict (better / worse / no significant difference / INCONCLUSIVE)."""
    try:
        if format_ not in FORMATS:
            from e3bench.core.errors import unknown_name

            raise unknown_name("format", format_, FORMATS)
        from e3bench.report.diff import pair, resolve
        from e3bench.report.diff_rows import compare_pair

        sa, sb = (resolve(x, results_dir, with_repeats=with_repeats) for x in (a, b))
        pairing = pair(sa, sb, force=force)
        done = [(p, compare_pair(p)) for p in pairing.pairs]
    except E3Error as exc:
        fail(exc)
    if format_ == "table":
        _table(sa, sb, pairing, done)
        return
    sys.stdout.write({"md": _markdown, "csv": _csv, "json": _json}[format_](sa, sb, pairing, done))
    for p in pairing.pairs:  # in the document too; stderr so that they are seen
        for w in p.warnings:
            typer.echo(f"warning: {p.label}: {w}", err=True)


def _signed(x: float | None, spec: str = ".3g") -> str:
    """``+1.5`` / ``−0.25`` with :func:`num`'s digits (never exponent notation)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return DASH
    return ("+" if x > 0 else "−" if x < 0 else "±") + num(abs(x), spec)


def _value(v: float | None, se: float | None) -> str:
    if se is None:
        return num(v)
    # two significant digits, as standard errors are read; never exponent notation
    return f"{num(v)} ±{f'{se:.0f}' if se >= 10 else num(se, '.2g') if se >= 1e-3 else num(se)}"


def _pct(x: float | None) -> str:
    """``+12%`` / ``−0.5%`` / ``+1400%`` / ``+0.03%``: never exponent notation."""
    if x is None or not math.isfinite(x):
        return DASH
    return _signed(x, ".0f" if abs(x) >= 10 else ".2g" if abs(x) >= 0.1 else ".2f") + "%"


def _delta(r) -> str:
    d = r.diff.estimate if r.diff is not None else (None if r.a is None or r.b is None else r.b - r.a)
    return _signed(d) + (f" ({_pct(r.pct)})" if r.pct is not None else "")


def _ci(r) -> str:
    if r.diff is None or not r.diff.known:
        return DASH
    return f"[{_signed(r.diff.low)}, {_signed(r.diff.high)}]"


def _pct_ci(r) -> str:
    if r.pct_low is None or r.pct_high is None:
        return _ci(r)
    return f"[{_pct(r.pct_low)}, {_pct(r.pct_high)}]"


def _metric(r) -> str:
    unit = f" {r.unit}" if r.unit else ""
    return f"{r.metric}{unit}" + (f" b{r.batch_size}" if r.batch_size is not None else "")


def _header(sa, sb) -> list[str]:
    return [f"A: {sa.describe()}", f"B: {sb.describe()}"]


def _pair_lines(p, pr) -> list[str]:
    """What differs, machines, forced workloads, and what was not compared, for one pair."""
    out = []
    if p.differs:
        out.append("B differs in: " + "; ".join(p.differs))
    if p.machines:
        out.append("machine: " + "; ".join(p.machines))
    out += [f"warning: {w}" for w in p.warnings] + [f"note: {n}" for n in pr.notes]
    return out


def _tally(rows) -> str:
    """``"B against A: 2 better, 1 worse, 5 no significant difference, 4 INCONCLUSIVE"``."""
    words = ("better", "worse", "no significant difference", "INCONCLUSIVE")
    counts = [(w, sum(r.verdict == w for r in rows)) for w in words]
    return "B against A: " + ", ".join(f"{n} {w}" for w, n in counts if n)


def _how_lines(rows) -> list[str]:
    """How each figure was obtained, rows with the same method listed together."""
    groups: dict[str, list[str]] = {}
    for r in rows:
        if r.how:
            groups.setdefault(r.how, []).append(_metric(r))
    return [f"{', '.join(names)}: {how}" for how, names in groups.items()]


def _console():
    from rich.console import Console

    width = None if sys.stdout.isatty() or os.environ.get("COLUMNS", "").isdigit() else 80
    return Console(soft_wrap=False, width=width, highlight=False)


#: The terminal table's columns: the figure, both sides, Δ and its CI (numbers: never cut), the verdict.
_COLUMNS = (("metric", "text"), ("A", "num"), ("B", "num"), ("Δ", "num"), ("95% CI of Δ", "num"), ("verdict", "text"))


#: What a narrow terminal keeps longest: the verdict and the difference; A and B go first.
_KEEP = ("metric", "verdict", "95% CI of Δ", "Δ", "B", "A")


def _rows(pr) -> list[dict]:
    """The table rows of one pair: a bold row naming each section, then one row per figure
    (the verdict coloured)."""
    from rich.text import Text

    rows: list[dict] = []
    section = None
    for r in pr.rows:
        if r.section != section:
            rows.append({"metric": Text(r.section, style="bold"), **{k: "" for k, _ in _COLUMNS[1:]}})
            section = r.section
        cells = (_metric(r), _value(r.a, r.a_se), _value(r.b, r.b_se), _pct(r.pct), _pct_ci(r))
        rows.append({**dict(zip((k for k, _ in _COLUMNS), cells)), "verdict": Text(r.verdict, style=_COLOUR.get(r.verdict, ""))})
    return rows


def _table(sa, sb, pairing, done) -> None:
    """The terminal view: one table per pair, laid out by the one table fitter
    (:func:`e3bench.report.textable.table`: 80 columns suffice, numbers never cut), then how
    each figure was obtained and what was not paired."""
    from rich.markup import escape

    from e3bench.report import textable

    con = _console()
    for line in _header(sa, sb):
        con.print(escape(line))
    con.print(f"[dim]{_LEGEND}[/dim]")
    cols = [textable.Col(k, kind=kind) for k, kind in _COLUMNS]  # type: ignore[arg-type]
    for k, (p, pr) in enumerate(done, 1):
        title = f"{k}/{len(done)} {p.label}" if len(done) > 1 else p.label
        t, lay = textable.table(cols, _rows(pr), width=con.width, title=escape(title), drop_order=_KEEP)
        con.print(t)
        if lay.dropped:
            typer.echo(textable.dropped_line(lay.dropped, con.width, "a wider COLUMNS, or --format md"), err=True)
        for line in [_tally(pr.rows), *_pair_lines(p, pr)]:
            con.print(escape(line))
        con.print("[dim]how:[/dim]")
        for line in _how_lines(pr.rows):
            con.print(f"  {escape(line)}")
    for line in pairing.unpaired:
        con.print(f"not paired: {escape(line)}")
    for s, side in (("A", sa), ("B", sb)):
        for n in side.notes:
            con.print(f"[dim]{s}: {escape(n)}[/dim]")


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def _markdown(sa, sb, pairing, done) -> str:
    """A Markdown document: the two sides, then one table per pair with how each figure was obtained."""
    out = ["# e3bench compare", "", *(f"- {_md_cell(x)}" for x in _header(sa, sb)), f"- {_LEGEND}", ""]
    for p, pr in done:
        out += [f"## {_md_cell(p.label)}", "", *(f"- {_md_cell(x)}" for x in [_tally(pr.rows), *_pair_lines(p, pr)])]
        out += ["", "| section | metric | A | B | Δ (%) | 95 % CI | verdict | how |", "|---|---|--:|--:|--:|--:|---|---|"]
        for r in pr.rows:
            cells = (r.section, _metric(r), _value(r.a, r.a_se), _value(r.b, r.b_se), _delta(r), _ci(r), r.verdict, r.how)
            out.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
        out.append("")
    if pairing.unpaired:
        out += ["## Not paired", "", *(f"- {_md_cell(x)}" for x in pairing.unpaired), ""]
    return "\n".join(out)


def _pair_fields(p) -> dict[str, Any]:
    return {"pair": p.label, "a_runs": " ".join(p.a.run_ids), "b_runs": " ".join(p.b.run_ids)}


def _csv(sa, sb, pairing, done) -> str:
    """One CSV row per compared figure (pair, runs, values, difference, CI, verdict, how)."""
    buf = io.StringIO()
    w = None
    for p, pr in done:
        for r in pr.rows:
            row = {**_pair_fields(p), **r.as_dict()}
            if w is None:
                w = csv.DictWriter(buf, fieldnames=list(row), lineterminator="\n")
                w.writeheader()
            w.writerow(row)
    return buf.getvalue()


def _clean(x: Any) -> Any:
    """JSON-safe: NaN and infinities become null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_clean(v) for v in x]
    return x


def _json(sa, sb, pairing, done) -> str:
    """The whole comparison as one JSON document."""
    doc = {
        "a": {"spec": sa.spec, "kind": sa.kind, "where": str(sa.where), "notes": sa.notes},
        "b": {"spec": sb.spec, "kind": sb.kind, "where": str(sb.where), "notes": sb.notes},
        "legend": _LEGEND,
        "pairs": [{**_pair_fields(p), "a_runs": p.a.run_ids, "b_runs": p.b.run_ids, "differs": p.differs,
                   "machines": p.machines, "warnings": p.warnings, "notes": pr.notes,
                   "rows": [r.as_dict() for r in pr.rows]} for p, pr in done],  # fmt: skip
        "not_paired": pairing.unpaired,
    }
    return json.dumps(_clean(doc), indent=1, ensure_ascii=False) + "\n"
