"""Table files from flat rows (:mod:`e3bench.results.flatten`): CSV, Parquet and LaTeX.

Cells are rendered with the one number formatter, :func:`e3bench.core.fmt.num` (``-`` for a
missing value).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from e3bench.core.fmt import num

#: What a table shows for a missing value (None or NaN).
MISSING = "-"


def cell(v: Any) -> str:
    """A table cell: ``num(v)`` with :data:`MISSING` for None/NaN (3 significant digits for
    floats below 1e4, whole numbers above; ints and strings as they are)."""
    return num(v, none=MISSING)


def to_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """CSV text with a header of ``columns``; values as Python writes them, None as empty."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    return buf.getvalue()


def to_parquet(rows: Sequence[dict[str, Any]], columns: Sequence[str], path: Path) -> None:
    """Write ``rows`` as a Parquet table with ``columns``. Needs pyarrow (extra ``report``)."""
    from e3bench.core.errors import require

    pa = require("pyarrow", "report", "Parquet export")
    import pyarrow.parquet as pq

    table = pa.table({c: [r.get(c) for r in rows] for c in columns})
    pq.write_table(table, path)


#: Every character LaTeX treats specially in text, and how to write it literally.
_LATEX = str.maketrans({
    "\\": r"\textbackslash{}", "_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#", "$": r"\$",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
})  # fmt: skip


def latex_escape(s: str) -> str:
    """``s`` with ``\\ _ % & # $ { } ~ ^`` written so LaTeX prints them literally."""
    return s.translate(_LATEX)


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
