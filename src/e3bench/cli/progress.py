"""How the CLI shows progress: the one :class:`~e3bench.core.progress.Reporter` every command
passes down (:func:`reporter`).

* On a terminal: rich bars on stderr, one per open stage — its label on a line of its own
  (wrapped at spaces, never cut with "…", so the stage and its configuration stay readable at
  80 columns), then a bar with items done / total, rate
  over the whole stage (``s/item`` for slow items) and an ETA that counts down (mean time per
  item so far, or the caller's own estimate; never rich's few-second speed window, which reads
  ``-:--:--`` for items longer than it). A stage that ends leaves one line saying what it did.
* Not a terminal (a log, a pipe), or ``CI`` set: no bars. Each note and each stage's start is
  one ``· ...`` line; an open stage adds a plain line with its counts, rate and ETA at most every
  ``E3BENCH_PROGRESS_EVERY_S`` seconds (default 30), and one when it ends if it took longer.
* ``--quiet``: nothing (the Ctrl-C line still names the step).

Progress goes to stderr, so the results a command prints on stdout (a summary, ``--format
json``) never contain it. Every note and stage also tells :func:`e3bench.cli.common.step` what
runs now, for the line printed on Ctrl-C.
"""

from __future__ import annotations

import os
import sys
from typing import IO, Any

from e3bench.cli import common
from e3bench.core.fmt import wrap
from e3bench.core.progress import Reporter, Stage, counts, fmt_duration, fmt_eta, fmt_rate

#: seconds between the plain progress lines of an open stage (not a terminal); env overrides
EVERY_S = 30.0
#: a stage that took at least this long leaves a line when it ends (plain mode)
LONG_S = 5.0


def reporter(*, quiet: bool = False, stream: IO[str] | None = None, bars: bool | None = None) -> Reporter:
    """The reporter of a command: silent with ``quiet``; rich bars when ``stream`` (default
    stderr) is a terminal and ``CI`` is not set (``bars`` forces either); else plain lines."""
    if quiet:
        return Steps()
    stream = stream or sys.stderr
    if bars is None:
        bars = _isatty(stream) and not os.environ.get("CI") and os.environ.get("TERM") != "dumb"
    if bars:
        return Bars(stream)
    return Plain(stream, every_s=_every_s())


def _every_s() -> float:
    """``E3BENCH_PROGRESS_EVERY_S`` (seconds ≥ 0), else :data:`EVERY_S` (also for a value that
    is not a number: progress is no reason to stop a command)."""
    try:
        every = float(os.environ.get("E3BENCH_PROGRESS_EVERY_S", EVERY_S))
    except ValueError:
        return EVERY_S
    return every if every >= 0 else EVERY_S


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Steps(Reporter):
    """Shows nothing; tells the Ctrl-C line which step runs (``--quiet``)."""

    def note(self, message: str) -> None:
        """Record ``message`` as the current step."""
        common.step(message)

    def stage(self, label: str, *, total: float | None = None, unit: str = "items") -> Stage:
        """Record ``label`` as the current step; a silent stage."""
        common.step(label)
        return Stage(label, total=total, unit=unit)


# ------------------------------------------------------------------------------------ plain
class _PlainStage(Stage):
    def __init__(self, out: Plain, label: str, total: float | None, unit: str):
        super().__init__(label, total=total, unit=unit)
        self.out = out
        self.printed = self.started

    def line(self) -> str:
        eta = self.eta_s()
        parts = [counts(self), fmt_rate(self.rate(), self.unit)] if self.completed or self.total else []
        if self.total is not None or eta is not None:
            parts.append(fmt_eta(self))
        parts.append(f"{fmt_duration(self.elapsed_s())} elapsed")
        detail = f" ({self.detail})" if self.detail else ""
        return f"  {self.label}{detail}: " + ", ".join(parts)

    def changed(self) -> None:
        now = self.clock()
        if now - self.printed >= self.out.every_s:
            self.printed = now
            self.out.print(self.line())

    def finished(self) -> None:
        took = self.elapsed_s()
        if took >= self.out.long_s or self.printed > self.started:
            what = f"{counts(self)} in " if self.completed else ""
            rate = f" ({fmt_rate(self.rate(), self.unit)})" if self.completed else ""
            self.out.print(f"  {self.label}: done, {what}{fmt_duration(took)}{rate}")


class Plain(Reporter):
    """Plain lines for logs: ``· note``, ``· stage`` when it opens, its counts every ``every_s``."""

    def __init__(self, stream: IO[str], *, every_s: float = EVERY_S, long_s: float = LONG_S):
        self.stream = stream
        self.every_s = every_s
        self.long_s = long_s

    def print(self, text: str) -> None:
        """One line, flushed."""
        print(text, file=self.stream, flush=True)

    def note(self, message: str) -> None:
        """``· message``."""
        common.step(message)
        self.print(f"· {message}")

    def stage(self, label: str, *, total: float | None = None, unit: str = "items") -> Stage:
        """``· label``, then occasional count lines."""
        common.step(label)
        self.print(f"· {label}")
        return _PlainStage(self, label, total, unit)


# ------------------------------------------------------------------------------------- bars
class _BarStage(Stage):
    def __init__(self, out: Bars, label: str, total: float | None, unit: str):
        super().__init__(label, total=total, unit=unit)
        self.out = out
        self.task_id = out.progress.add_task(label, total=total, stage=self)

    def changed(self) -> None:
        self.out.progress.update(self.task_id, completed=self.completed, total=self.total, description=self.label)

    def finished(self) -> None:
        self.out.close_stage(self)


class Bars(Reporter):
    """rich bars on a terminal, one per open stage; a closed stage leaves a one-line summary."""

    def __init__(self, stream: IO[str]):
        from rich.console import Console

        self.console = Console(file=stream, highlight=False)
        self.progress = _progress(self.console)
        self.open: list[_BarStage] = []

    def note(self, message: str) -> None:
        """``· message`` above the bars, wrapped at spaces only: a path or id longer than a line
        stays whole (the terminal wraps it softly, so it is copied whole)."""

        common.step(message)
        self._lines(wrap(message, self.console.width - 2, indent=2))

    def _lines(self, lines: list[str]) -> None:
        """``· first line`` and the others as they are, in one print (one redraw of the bars)."""
        from rich.markup import escape

        first, *rest = lines
        self.console.print("\n".join([f"[dim]·[/dim] {escape(first)}", *map(escape, rest)]), soft_wrap=True)

    def stage(self, label: str, *, total: float | None = None, unit: str = "items") -> Stage:
        """A new bar (the display starts with the first one)."""
        common.step(label)
        if not self.open:
            self.progress.start()
        st = _BarStage(self, label, total, unit)
        self.open.append(st)
        return st

    def above(self, show) -> None:
        """Run ``show`` with the bars taken down, then put them back: a rich console writes to
        the real stdout (rich unwraps its own redirection), so on a shared terminal the next
        redraw would erase what ``show`` printed."""
        if not self.open or not _isatty(sys.stdout):
            show()
            return
        self.progress.stop()  # transient: the bars are erased, the cursor is where they began
        try:
            show()
        finally:
            # rich would start by erasing as many lines as the bars had (what ``show`` printed):
            # the bars start afresh below it instead
            live_render = getattr(self.progress.live, "_live_render", None)
            if live_render is not None:
                live_render._shape = None
            self.progress.start()

    def close_stage(self, st: _BarStage) -> None:
        """Replace the bar of ``st`` by its summary line; stop the display after the last."""

        self.progress.remove_task(st.task_id)
        self.open.remove(st)
        if st.completed or st.elapsed_s() >= 1:  # an instant step (a cached probe) leaves no line
            took = fmt_duration(st.elapsed_s())
            what = f"done, {counts(st)} in {took} ({fmt_rate(st.rate(), st.unit)})" if st.completed else f"done, {took}"
            line = f"{st.label}: {what}"
            # whole, never cut: the label wrapped at spaces, what it did kept on one line
            self._lines([line] if len(line) <= self.console.width - 2 else
                        [*wrap(f"{st.label}:", self.console.width - 2, indent=2), f"  {what}"])  # fmt: skip
        if not self.open:
            self.progress.stop()


def stats(st: Stage) -> list[tuple[str, str]]:
    """What a bar shows beside it, as (text, rich style) parts: ``3/5 iterations``, ``40.0
    s/iteration``, ``ETA 1:20``; before the first item (or for a step without counts) the
    elapsed time instead of an ETA it cannot know."""
    eta = st.eta_s()
    parts = [(counts(st), "progress.download"), (fmt_rate(st.rate(), st.unit) if st.completed else "", "dim")]
    if eta is not None:
        parts.append((fmt_eta(st), "progress.remaining"))
    else:
        parts.append((f"{fmt_duration(st.elapsed_s())} elapsed", "progress.elapsed"))
    return [(text, style) for text, style in parts if text]


def _progress(console: Any):
    """The rich Progress: per stage a spinner, the label on its own line (wrapped at spaces, never
    cut: the stage's name and its configuration stay readable at 80 columns), the detail (what a
    sweep's run does now) under it, then a bar with the counts, rate and ETA (:func:`stats`).
    Two refreshes a second: the display thread runs during metered windows and idle baselines
    alike, and redrawing a few lines twice a second costs next to nothing."""
    from rich.console import Group
    from rich.progress import Progress, ProgressColumn, SpinnerColumn
    from rich.progress_bar import ProgressBar
    from rich.table import Column, Table
    from rich.text import Text

    class StageColumn(ProgressColumn):
        def render(self, task):
            st = task.fields.get("stage")
            if st is None:
                return Text(task.description)
            row = Table.grid(padding=(0, 1))
            row.add_column(width=2)
            row.add_column(width=10)
            row.add_column(no_wrap=False)
            bar = ProgressBar(total=st.total, completed=st.completed, width=10, pulse=st.total is None,
                              animation_time=task.get_time())  # fmt: skip
            shown = Text()
            for i, (text, style) in enumerate(stats(st)):
                shown.append(("  " if i else "") + text, style=style)
            row.add_row("", bar, shown)
            lines = [Text(st.label)]
            if st.detail:
                lines.append(Text("  " + st.detail, style="dim"))
            return Group(*lines, row)

    return Progress(
        SpinnerColumn(),
        StageColumn(table_column=Column(ratio=1, no_wrap=False)),
        console=console,
        redirect_stdout=_isatty(sys.stdout),  # stdout in a file stays in the file (not above the bars)
        refresh_per_second=2,
        transient=True,
        expand=True,
    )
