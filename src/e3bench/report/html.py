"""The HTML page of `e3bench report`: one self-contained ``report.html`` (style inline, figures
embedded) assembled from the Markdown summary's executive lines, the report's tables and its
figures. Every text from a record is HTML-escaped. Knows nothing of how the tables or figures
were computed (that is :mod:`e3bench.report.render`)."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from pathlib import Path

from e3bench.report.tables import cell

#: The page's style sheet (inline: the page is one file).
CSS = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1rem 0;font-size:.85rem}th,td{border:1px solid #ccc;padding:.3rem .6rem;text-align:right}
th{background:#f2f2f2}td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #eee;margin:.5rem 0}
.pass{color:#1a7f37;font-weight:bold}.fail{color:#c62828;font-weight:bold}.grid{display:grid;grid-template-columns:1fr 1fr;gap:1rem}
code{background:#f6f8fa;padding:0 .2rem}"""

#: Figures shown together under "Pareto front", before the tables (in this order).
PARETO_FIGURES = ("pareto_accuracy_vs_energy", "pareto_accuracy_vs_latency")

_BOLD = re.compile(r"[*][*](.+?)[*][*]")


def table(rows: list[dict], columns: Sequence[str]) -> str:
    """An HTML table of ``rows`` (dicts) over ``columns``; cells formatted by
    :func:`e3bench.report.tables.cell`, PASS/FAIL cells coloured."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for r in rows:
        cells = []
        for c in columns:
            v = cell(r.get(c))
            cls = ' class="pass"' if v == "PASS" else ' class="fail"' if v == "FAIL" else ""
            cells.append(f"<td{cls}>{html.escape(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _img(name: str, path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f"<img alt='{html.escape(name)}' src='data:image/png;base64,{data}'>"


def page(summary_md: str, tables: Sequence[tuple[str, list[dict], Sequence[str]]], figures: dict[str, Path],
         failed: Sequence[dict] = ()) -> str:
    """The report page: the executive summary (the ``- **...`` lines of ``summary_md``), the
    Pareto figures, each non-empty ``(heading, rows, columns)`` table, the other figures (PNG,
    embedded) and the failed runs (``run_id``, ``error``)."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>e3bench report</title><style>{CSS}</style>"
             "</head><body><h1>e3bench report</h1>"]  # fmt: skip
    exec_lines = [ln[2:] for ln in summary_md.splitlines() if ln.startswith("- **")]
    if exec_lines:
        items = "".join("<li>" + _BOLD.sub(r"<b>\1</b>", html.escape(x.replace("\\|", "|"))) + "</li>"
                        for x in exec_lines)  # fmt: skip
        parts.append(f"<h2>Executive summary</h2><ul>{items}</ul>")
    if PARETO_FIGURES[0] in figures:
        parts.append("<h2>Pareto front</h2><div class='grid'>")
        parts += [_img(key, figures[key]) for key in PARETO_FIGURES if key in figures]
        parts.append("</div>")
    parts += [f"<h2>{html.escape(heading)}</h2>" + table(rows, columns) for heading, rows, columns in tables if rows]
    parts.append("<h2>Figures</h2><div class='grid'>")
    parts += [_img(name, p) for name, p in figures.items() if not name.startswith("pareto")]
    parts.append("</div>")
    if failed:
        parts.append("<h2>Failed runs</h2><ul>" + "".join(
            f"<li>{html.escape(str(r['run_id']))}: {html.escape(str(r['error']))}</li>" for r in failed) + "</ul>")  # fmt: skip
    parts.append("<p><small>Energy figures say how they were obtained (measured: sensor; estimated: model). "
                 "Everything here is rebuilt from the JSON records by <code>e3bench report</code>.</small></p>")  # fmt: skip
    parts.append("</body></html>")
    return "\n".join(parts)
