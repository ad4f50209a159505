"""One number formatter for every table and console line (reports, summaries, training).

Why by hand: a table cell needs ``None``/NaN → a dash and a format spec, which neither
``format`` nor ``rich`` gives in one call.
"""

from __future__ import annotations

import math
from typing import Any

DASH = "–"


def num(x: Any, spec: str = ".3g", none: str = DASH) -> str:
    """``format(x, spec)``; ``none`` for None or NaN; non-numbers as ``str(x)``.

    ``spec=".3g"`` (3 significant digits) never writes scientific notation, which people misread
    in tables: ints whole, floats of 1000 or more as whole numbers (``1170.4`` → ``1170``, not
    ``1.17e+03``; ``12345.6`` → ``12346``), floats below 0.001 in fixed point (``0.0000123``).
    """
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return none
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    if spec == ".3g" and isinstance(x, int):
        return str(x)
    if spec == ".3g" and math.isfinite(x):
        if abs(float(format(x, spec))) >= 1e3:  # 999.5 rounds to 1e+03 at 3 digits
            return f"{x:.0f}"
        if 0 < abs(x) < 1e-3:
            return f"{x:.{2 - math.floor(math.log10(abs(x)))}f}".rstrip("0")
    return format(x, spec)


def count(n: int, word: str, plural: str | None = None, *, sep: bool = False) -> str:
    """``n`` and ``word``, singular for one, else ``plural`` (default: ``word`` + "s", "y" →
    "ies"): ``count(1, "configuration")`` → ``1 configuration``, ``count(2, "entry")`` →
    ``2 entries``; ``sep``: thousands separators (``1,024 rows``)."""
    if plural is None:
        plural = word[:-1] + "ies" if word.endswith("y") and word[-2:-1] not in "aeiou" else word + "s"
    return (f"{n:,}" if sep else str(n)) + " " + (word if n == 1 else plural)


def wrap(text: str, width: int, indent: int = 0) -> list[str]:
    """``text`` as lines of at most ``width`` (at least 40) characters, broken at spaces only,
    continuation lines indented by ``indent``: a word longer than a line (a path, a run id)
    stays whole on its own line, so the terminal wraps it without a hard break and it is copied
    whole."""
    import textwrap

    lines = textwrap.wrap(text, max(40, width), subsequent_indent=" " * indent, break_long_words=False,
                          break_on_hyphens=False)  # fmt: skip
    return lines or [""]
