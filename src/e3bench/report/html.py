"""The HTML page of `e3bench report`: ``report.html`` (style inline) assembled from the Markdown
summary's executive lines, the report's tables and its figures. Figures are interactive
(:mod:`e3bench.report.interactive`: hover, legend toggles), drawn by the one ``plotly.min.js``
beside the page (works offline), each with its note and links to its static PNG and PDF. The
executive summary folds after :data:`MAX_SUMMARY_LINES` lines. Every text from a record is
HTML-escaped. Knows nothing of how the tables or figures were computed (that is
:mod:`e3bench.report.render`)."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence

from e3bench.report import interactive
from e3bench.report.figures import Figure
from e3bench.report.tables import cell

#: The page's style sheet (inline: the page is one file).
CSS = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1400px;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:1rem 0;font-size:.85rem}th,td{border:1px solid #ccc;padding:.3rem .6rem;text-align:right}
th{background:#f2f2f2}td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #eee;margin:.5rem 0}
.pass{color:#1a7f37;font-weight:bold}.fail{color:#c62828;font-weight:bold}.grid{display:grid;grid-template-columns:1fr 1fr;gap:1rem}
code{background:#f6f8fa;padding:0 .2rem}figure{margin:0;border:1px solid #eee;padding:.3rem;min-width:0}
figcaption{font-size:.8rem;color:#555;padding:.2rem .4rem}.note{font-size:.85rem;color:#555}.wide{grid-column:1/-1}
.tw{overflow-x:auto}"""

#: Figures shown together under "Pareto front", before the tables (in this order).
PARETO_FIGURES = ("pareto_energy", "pareto_latency")
#: Executive-summary lines shown before the rest folds away (one click shows them).
MAX_SUMMARY_LINES = 12

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
    return f"<div class='tw'><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"


def figure(spec: Figure, plots_dir: str = "plots") -> str:
    """One interactive figure with its note and links to its static PNG and PDF."""
    links = " · ".join(f"<a href='{plots_dir}/{html.escape(spec.name)}.{ext}'>{ext.upper()}</a>" for ext in ("png", "pdf"))
    wide = " class='wide'" if spec.panels[0].kind == "bar" or len(spec.panels) > 1 else ""
    return f"<figure{wide}>{interactive.div(spec)}<figcaption>{html.escape(spec.note)} {links}</figcaption></figure>"


def page(summary_md: str, tables: Sequence[tuple[str, list[dict], Sequence[str]]], figures: Sequence[Figure],
         failed: Sequence[dict] = ()) -> str:
    """The report page: the executive summary (the ``- **...`` lines of ``summary_md``), the
    Pareto figures, each non-empty ``(heading, rows, columns)`` table, the other figures and the
    failed runs (``run_id``, ``error``). With figures, the page loads
    :data:`e3bench.report.interactive.PLOTLY_JS` from its own folder."""
    script = f"<script src='{interactive.PLOTLY_JS}' charset='utf-8'></script>" if figures else ""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>e3bench report</title><style>{CSS}</style>"
             f"{script}</head><body><h1>e3bench report</h1>"]  # fmt: skip
    exec_lines = [ln[2:] for ln in summary_md.splitlines() if ln.startswith("- **")]
    if exec_lines:
        items = ["<li>" + _BOLD.sub(r"<b>\1</b>", html.escape(x.replace("\\|", "|"))) + "</li>" for x in exec_lines]
        more = items[MAX_SUMMARY_LINES:]
        fold = f"<details><summary>{len(more)} more lines</summary><ul>{''.join(more)}</ul></details>" if more else ""
        parts.append(f"<h2>Executive summary</h2><ul>{''.join(items[:MAX_SUMMARY_LINES])}</ul>{fold}")
    by_name = {f.name: f for f in figures}
    if PARETO_FIGURES[0] in by_name:
        parts.append("<h2>Pareto front</h2><div class='grid'>")
        parts += [figure(by_name[key]) for key in PARETO_FIGURES if key in by_name]
        parts.append("</div>")
    parts += [f"<h2>{html.escape(heading)}</h2>" + table(rows, columns) for heading, rows, columns in tables if rows]
    rest = [f for f in figures if f.name not in PARETO_FIGURES]
    if rest:
        parts.append("<h2>Figures</h2><div class='grid'>")
        parts += [figure(f) for f in rest]
        parts.append("</div>")
    if failed:
        parts.append("<h2>Failed runs</h2><ul>" + "".join(
            f"<li>{html.escape(str(r['run_id']))}: {html.escape(str(r['error']))}</li>" for r in failed) + "</ul>")  # fmt: skip
    parts.append("<p><small>Energy figures say how they were obtained (measured: sensor; estimated: model). "
                 "Everything here is rebuilt from the JSON records by <code>e3bench report</code>.</small></p>")  # fmt: skip
    parts.append("</body></html>")
    return "\n".join(parts)
