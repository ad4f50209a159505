"""Table files from flat rows (:mod:`e3bench.results.flatten`): CSV, Parquet, LaTeX and Markdown.

Cells are rendered with the one number formatter, :func:`e3bench.core.fmt.num` (``-`` for a
missing value). Text that came from users (model names, paths, errors) is made inert for each
format: CSV cells that a spreadsheet would run as a formula are neutralised
(:func:`csv_safe`), LaTeX specials escaped (:func:`latex_escape`), Markdown pipes escaped
(:func:`md_cell`).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from e3bench.core.fmt import num
from e3bench.core.fsutil import atomic_write_bytes

#: What a table shows for a missing value (None or NaN).
MISSING = "-"


def cell(v: Any) -> str:
    """A table cell: ``num(v)`` with :data:`MISSING` for None/NaN (3 significant digits for
    floats below 1e4, whole numbers above; ints and strings as they are)."""
    return num(v, none=MISSING)


def ci_cell(iv: Any, scale: float = 1.0) -> str:
    """An :class:`e3bench.report.stats.Interval` as a cell: ``"52.1 [50.3, 53.9]"`` (estimate and
    95 % CI, times ``scale``, e.g. 100 for percent); the estimate alone when the interval is
    unknown; :data:`MISSING` for None."""
    if iv is None or iv.estimate is None or (isinstance(iv.estimate, float) and math.isnan(iv.estimate)):
        return MISSING
    if not iv.known:
        return num(iv.estimate * scale)
    return f"{num(iv.estimate * scale)} [{num(iv.low * scale)}, {num(iv.high * scale)}]"


#: First characters that make a spreadsheet (Excel, LibreOffice, Google Sheets) read a cell as a
#: formula or command (OWASP "CSV injection"): ``= + - @``, tab and carriage return.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(v: Any) -> Any:
    """``v`` for a CSV cell: a string starting with one of :data:`FORMULA_STARTS` gets a leading
    ``'`` (OWASP's advice: the spreadsheet shows it as text, e.g. ``'=HYPERLINK(...)``); numbers
    (negative ones too) and other strings are unchanged."""
    if isinstance(v, str) and v.startswith(FORMULA_STARTS):
        return "'" + v
    return v


def to_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """CSV text with a header of ``columns``; values as Python writes them, None as empty, text
    cells through :func:`csv_safe` (header included)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow([csv_safe(c) for c in columns])
    for r in rows:
        w.writerow([csv_safe("" if r.get(k) is None else r.get(k)) for k in columns])
    return buf.getvalue()


def to_parquet_bytes(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> bytes:
    """``rows`` as a Parquet file's bytes, columns ``columns`` (values as they are: Parquet is
    typed data, not a spreadsheet). Needs pyarrow (extra ``report``)."""
    from e3bench.core.errors import require

    pa = require("pyarrow", "report", "Parquet export")
    import pyarrow.parquet as pq

    table = pa.table({c: [r.get(c) for r in rows] for c in columns})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def to_parquet(rows: Sequence[dict[str, Any]], columns: Sequence[str], path: Path) -> None:
    """Write ``rows`` as a Parquet table with ``columns`` at ``path``, atomically (umask mode).
    Raises ``OSError`` when ``path`` cannot be written. Needs pyarrow (extra ``report``)."""
    atomic_write_bytes(path, to_parquet_bytes(rows, columns))


def md_cell(v: Any) -> str:
    """A Markdown table cell: :func:`cell`, with ``|`` escaped and line breaks as spaces."""
    return " ".join(cell(v).split()).replace("|", "\\|")


#: Every character LaTeX treats specially in text, and how to write it literally.
_LATEX = str.maketrans({
    "\\": r"\textbackslash{}", "_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#", "$": r"\$",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
})  # fmt: skip


def latex_escape(s: str) -> str:
    """``s`` with ``\\ _ % & # $ { } ~ ^`` written so LaTeX prints them literally, on one line:
    line breaks, tabs and other control characters become single spaces (a blank line inside a
    table row ends the paragraph: a LaTeX error)."""
    one_line = " ".join("".join(" " if ord(c) < 32 or ord(c) == 127 else c for c in s).split())
    return one_line.translate(_LATEX)


def latex_table(rows: Iterable[dict[str, Any]], columns: Sequence[str], caption: str) -> str:
    """A booktabs ``table`` environment: header ``columns``, one line per row (cells via
    :func:`cell`), every text escaped with :func:`latex_escape`."""
    esc = latex_escape
    out = [r"\begin{table}[t]", r"\centering", r"\small", r"\begin{tabular}{" + "l" * len(columns) + "}",
           r"\toprule", " & ".join(esc(c) for c in columns) + r" \\", r"\midrule"]  # fmt: skip
    for r in rows:
        out.append(" & ".join(esc(cell(r.get(c))) for c in columns) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{esc(caption)}}}", r"\end{table}"]
    return "\n".join(out) + "\n"
