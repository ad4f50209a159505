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

    ``spec=".3g"`` renders ints whole and floats of 1e4 or more as whole numbers, so counts and
    large values never turn into scientific notation (``12345`` → ``12345``, ``12345.6`` →
    ``12346``).
    """
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return none
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    if spec == ".3g" and isinstance(x, int):
        return str(x)
    if spec == ".3g" and abs(x) >= 1e4:
        return f"{x:.0f}"
    return format(x, spec)
