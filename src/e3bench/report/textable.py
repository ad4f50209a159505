"""The one way e3bench prints a table: it fits the terminal without cutting a number or an id.

The tables of ``ls``, ``models``, ``tasks``, ``plugins`` and ``env`` go through
:func:`print_table`, the run summary's (:mod:`e3bench.report.summary`) and ``compare``'s
(:mod:`e3bench.cli.compare`) through :func:`table`. At the terminal's width (``COLUMNS`` when set, else the
terminal, else 120 columns when output is not a terminal):

* numbers and ids (``kind="num"`` / ``"id"``: run ids, config hashes, names to copy) are never
  cut or wrapped: a column is as wide as its longest cell;
* labels (``kind="text"``: descriptions, errors, paths) wrap at spaces and fold long words,
  so all their characters stay visible;
* headers wrap after ``_`` (``decode_tokens_`` / ``per_s_mean``: the lines joined give the
  column's name again);
* when even that does not fit, whole columns are left out, the least important first (the end
  of ``drop_order``, else the rightmost), and one line on stderr names them and how to see them
  (``--wide``, ``--columns``, ``--format``).

``wide=True`` shows every column whatever the width. ``fmt`` picks the output instead of a
table: ``json`` (a list of objects, values as stored), ``csv`` (values as stored, text made
formula-safe) or ``md`` (a Markdown table of the formatted cells, as llama-bench prints).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

#: The output formats :func:`print_table` offers (``--format``).
FORMATS = ("table", "json", "csv", "md")
#: Columns that hold identifiers: never cut, never wrapped (a user copies them).
ID_KEYS = frozenset({"run_id", "config_hash", "sweep", "alias", "hub id", "backend", "task", "name", "session", "level"})

Kind = Literal["auto", "num", "id", "text"]


@dataclass(frozen=True)
class Col:
    """One column: ``key`` in the row dicts, the printed ``header`` (default: the key) and what
    its cells are: ``num`` and ``id`` are never cut, ``text`` wraps; ``auto`` picks ``num`` when
    every value is a number, ``id`` for :data:`ID_KEYS`, else ``text``."""

    key: str
    header: str | None = None
    kind: Kind = "auto"

    @property
    def title(self) -> str:
        """The printed header."""
        return self.key if self.header is None else self.header


@dataclass(frozen=True)
class Layout:
    """What fits: the columns shown with their widths, and the keys left out (in column order)."""

    shown: tuple[Col, ...]
    widths: tuple[int, ...]
    kinds: tuple[str, ...]
    dropped: tuple[str, ...]


def _overhead(n: int) -> int:
    """Characters a table line adds to its cells: two spaces between neighbours (the light style
    of :func:`table`: a rule under the header, no frame)."""
    return 2 * (n - 1) if n else 0


#: A text column is at least this wide (or its longest cell, when shorter) before it wraps.
TEXT_MIN = 12
#: Spare room goes to text columns up to this width before headers are unwrapped.
TEXT_ROOM = 32


def _cell(v: Any) -> str:
    """The text of a cell: a rich ``Text`` (a styled cell) as its characters, anything else
    through the one number formatter (:func:`e3bench.report.tables.cell`)."""
    from e3bench.report.tables import cell

    plain = getattr(v, "plain", None)
    return plain if isinstance(plain, str) else cell(v)


def _text(v: Any):
    """A rich ``Text`` for a cell: a styled ``Text`` as given, anything else as plain text
    (never read as rich markup: ``e3bench[onnx]`` stays as written)."""
    from rich.text import Text

    return v.copy() if isinstance(v, Text) else Text(_cell(v))


def _kind(col: Col, values: Sequence[Any]) -> str:
    if col.kind != "auto":
        return col.kind
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return "num"
    return "id" if col.key in ID_KEYS else "text"


def _header_min(title: str) -> int:
    """The narrowest a header gets: its longest piece between ``_``, spaces or line breaks."""
    parts = title.replace("\n", " ").replace("_", "_ ").split()
    return max((len(p) for p in parts), default=0)


def wrap_header(title: str, width: int) -> str:
    """``title`` on lines of at most ``width`` characters, broken after ``_`` or at spaces
    (a piece longer than ``width`` stays whole)."""
    lines: list[str] = []
    line = ""
    for word in title.split():
        for i, piece in enumerate(p for p in re.split(r"(?<=_)", word) if p):
            glue = " " if i == 0 and line else ""
            if line and len(line) + len(glue) + len(piece) > width:
                lines.append(line)
                line, glue = "", ""
            line += glue + piece
    return "\n".join([*lines, line])


def layout(columns: Sequence[Col], rows: Sequence[Mapping[str, Any]], width: int | None,
           drop_order: Sequence[str] = ()) -> Layout:  # fmt: skip
    """Which columns fit in ``width`` characters (None: all) and how wide each is.

    Numbers and ids get their longest cell, text at least :data:`TEXT_MIN` (or its longest
    cell), headers their longest ``_``-piece; columns are left out, the last of ``drop_order``
    first and then from the right, until those minimums fit. Spare room goes to text columns
    (evenly, up to :data:`TEXT_ROOM`), then to whole headers of number and id columns (smallest
    need first), then to text again (up to its natural width: longest cell, whole header)."""
    cols = list(columns)
    kinds = {c.key: _kind(c, [r.get(c.key) for r in rows]) for c in cols}
    longest = {c.key: max((len(line) for r in rows for line in _cell(r.get(c.key)).splitlines() or [""]),
                          default=0) for c in cols}  # fmt: skip
    natural = {c.key: max(longest[c.key], len(c.title)) for c in cols}
    minimum = {c.key: max(_header_min(c.title), longest[c.key] if kinds[c.key] != "text"
                          else min(longest[c.key], TEXT_MIN), 1) for c in cols}  # fmt: skip
    order = [k for k in reversed(drop_order) if k in kinds]
    order += [c.key for c in reversed(cols) if c.key not in order]
    dropped: list[str] = []
    if width is not None:
        while len(cols) > 1 and sum(minimum[c.key] for c in cols) + _overhead(len(cols)) > width:
            gone = next(k for k in order if k not in dropped and any(c.key == k for c in cols))
            dropped.append(gone)
            cols = [c for c in cols if c.key != gone]
    widths = {c.key: minimum[c.key] if width is not None else natural[c.key] for c in cols}
    spare = 0 if width is None else width - sum(widths.values()) - _overhead(len(cols))
    spare = _fill_text(cols, kinds, widths, {k: min(n, TEXT_ROOM) for k, n in natural.items()}, spare)
    while spare > 0:  # whole headers of numbers and ids, the shortest need first
        short = [c.key for c in cols if kinds[c.key] != "text" and widths[c.key] < natural[c.key]]
        if not short:
            break
        k = min(short, key=lambda k: natural[k] - widths[k])
        step = min(spare, natural[k] - widths[k])
        widths[k] += step
        spare -= step
    _fill_text(cols, kinds, widths, natural, spare)
    keep = [c.key for c in columns if c.key in dropped]
    return Layout(tuple(cols), tuple(widths[c.key] for c in cols), tuple(kinds[c.key] for c in cols), tuple(keep))


def _fill_text(cols: Sequence[Col], kinds: dict[str, str], widths: dict[str, int], goal: dict[str, int],
               spare: int) -> int:  # fmt: skip
    """Give ``spare`` characters to text columns below their ``goal``, one at a time to the one
    furthest from it (so they grow evenly); returns what is left."""
    while spare > 0:
        short = [c.key for c in cols if kinds[c.key] == "text" and widths[c.key] < goal[c.key]]
        if not short:
            break
        widths[max(short, key=lambda k: goal[k] - widths[k])] += 1
        spare -= 1
    return spare


def table(columns: Sequence[Col], rows: Sequence[Mapping[str, Any]], *, width: int | None,
          title: str | None = None, show_header: bool = True, drop_order: Sequence[str] = ()):  # fmt: skip
    """``(rich Table, Layout)``: the rows laid out by :func:`layout` for ``width`` (None: all
    columns at their natural width). Cells are plain text (never rich markup), or a rich
    ``Text`` when a caller styles one (a coloured verdict)."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    lay = layout(columns, rows, width, drop_order)
    t = Table(title=title, show_header=show_header, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False,
              pad_edge=False, padding=(0, 1), collapse_padding=True)  # fmt: skip
    for c, w, kind in zip(lay.shown, lay.widths, lay.kinds):
        t.add_column(Text(wrap_header(c.title, w)), width=w, no_wrap=kind != "text", overflow="fold",
                     justify="right" if kind == "num" else "left")  # fmt: skip
    for r in rows:
        t.add_row(*(_text(r.get(c.key)) for c in lay.shown))
    return t, lay


def dropped_line(dropped: Sequence[str], width: int, hint: str) -> str:
    """The note naming the columns left out at ``width`` and how to see them."""
    return f"not shown at {width} columns: {', '.join(dropped)} ({hint})"


def rows_as(fmt: str, columns: Sequence[Col], rows: Sequence[Mapping[str, Any]]) -> str:
    """``rows`` as ``json`` (values as stored), ``csv`` (values as stored, formula-safe) or
    ``md`` (a Markdown table of the formatted cells), by :mod:`e3bench.report.export`."""
    from e3bench.report.export import to_json, to_markdown
    from e3bench.report.tables import to_csv

    keys = [c.key for c in columns]
    rows = [{k: _cell(v) if hasattr(v, "plain") else v for k, v in r.items()} for r in rows]
    if fmt == "json":
        return to_json(rows, keys)
    if fmt == "csv":
        return to_csv(rows, keys)
    if fmt == "md":
        return to_markdown(rows, keys, [c.title for c in columns])
    raise ValueError(f"unknown table format {fmt!r}")


def check_format(fmt: str) -> str:
    """``fmt`` when it is one of :data:`FORMATS`; else :class:`E3Error` naming them."""
    from e3bench.core.errors import unknown_name

    if fmt not in FORMATS:
        raise unknown_name("format", fmt, FORMATS, fix=f"use --format {'|'.join(FORMATS)}")
    return fmt


def print_table(con, columns: Sequence[Col | str], rows: Sequence[Mapping[str, Any]], *, fmt: str = "table",
                wide: bool = False, title: str | None = None, show_header: bool = True,
                drop_order: Sequence[str] = (), hint: str = "see all with --wide") -> Layout | None:  # fmt: skip
    """Print ``rows`` on the rich console ``con`` as a table that fits its width (see the module
    doc), or as ``fmt`` (json/csv/md, on stdout as plain text). ``columns``: :class:`Col` or keys.
    Columns left out are named on stderr with ``hint``. Returns the table's :class:`Layout`."""
    cols = [c if isinstance(c, Col) else Col(c) for c in columns]
    if check_format(fmt) != "table":
        sys.stdout.write(rows_as(fmt, cols, rows))
        sys.stdout.flush()
        return None
    width = None if wide else con.width
    t, lay = table(cols, rows, width=width, title=title, show_header=show_header, drop_order=drop_order)
    need = sum(lay.widths) + _overhead(len(lay.widths))
    if need > con.width:  # --wide, or one id wider than the terminal: longer lines, nothing cut
        from rich.console import Console

        con = Console(file=con.file, width=need, soft_wrap=False, color_system=con.color_system)
    con.print(t)
    if lay.dropped:
        print(dropped_line(lay.dropped, width or need, hint), file=sys.stderr)
    return lay
