"""User-facing errors: one line naming the problem and the fix.

The CLI catches :class:`E3Error` and prints ``error: <problem> — fix: <fix>`` with a
nonzero exit code and no traceback. Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class E3Error(Exception):
    """An error caused by user input or the environment, with a suggested fix."""

    exit_code = 2

    def __init__(self, problem: str, fix: str = "") -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix

    def one_line(self) -> str:
        """``<problem> — fix: <fix>`` on one line (whitespace folded), as the CLI prints it."""
        text = " ".join(self.problem.split())
        if self.fix:
            text += " — fix: " + " ".join(self.fix.split())
        return text


def install_hint(extra: str) -> str:
    """The one install line for an optional extra: ``pip install 'e3bench[quant]'``.

    Every message that tells a user to install something of e3bench's goes through here (the
    extra is never dropped; it is quoted so shells leave the brackets alone).
    """
    return f"pip install 'e3bench[{extra}]'"


class MissingExtra(E3Error):
    """An optional dependency is not installed; the fix is :func:`install_hint` of its extra."""

    def __init__(self, module: str, extra: str, what: str) -> None:
        super().__init__(f"{what} needs the Python package '{module}', which is not installed", install_hint(extra))
        self.module = module
        self.extra = extra


def require(module: str, extra: str, what: str):
    """Import ``module`` lazily; raise :class:`MissingExtra` naming the extra if absent."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised via tests with fake names
        raise MissingExtra(module, extra, what) from exc


def unknown_name(kind: str, name: str, choices, *, fix: str | None = None) -> E3Error:
    """The one "unknown <kind> 'name'" error: a close match as "did you mean", else the list.

    ``choices`` is any iterable of valid names; ``fix`` overrides the hint when no close match
    exists.
    """
    import difflib

    names = sorted(str(c) for c in choices)
    near = difflib.get_close_matches(str(name), names, n=1)
    if near:
        hint = f"did you mean '{near[0]}'?"
    else:
        hint = fix or (f"available: {', '.join(names)}" if names else f"no {kind} is available")
    return E3Error(f"unknown {kind} '{name}'", hint)
