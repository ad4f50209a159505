"""Progress of long steps: the object the CLI passes down, and what the layers below call.

A :class:`Reporter` is handed from the command line to the runner, the tasks, the sweep and the
trainers. They call :meth:`Reporter.note` for a one-line message ("loading ...") and open a
:class:`Stage` for a step that takes long (``with reporter.stage("task hellaswag", unit="items")
as s: ...; s.update(total=20); s.advance()``). The stage keeps the counts and the times; how
they are shown (rich bars on a terminal, occasional plain lines in a log, nothing) is the
CLI's business (:mod:`e3bench.cli.progress`): nothing here prints or imports rich.

The ETA of a stage works for items that take minutes each: it is the mean time per item of the
items done so far (not a short moving window) times the items left, counted down since the last
item finished; a caller that knows better (the stopping rule of a speed run, a sweep's run
durations, the warm-up's pace before the first timed iteration, the previous evaluation of the
same items) sets ``eta_s`` itself. Before the first item and without such an estimate there is
no ETA (a step without counts, such as loading a model, shows its elapsed time). The clock is ``time.monotonic``: progress is not a
measurement, and no measured figure is read from it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

Clock = Callable[[], float]


class Stage:
    """One long step: ``completed`` of ``total`` (None: unknown) ``unit``, its start, and an
    ETA. Base class: keeps the counts, shows nothing; a reporter's subclass shows them in
    :meth:`changed`. Usable as a context manager (:meth:`close` at the end)."""

    def __init__(self, label: str, *, total: float | None = None, unit: str = "items", clock: Clock = time.monotonic):
        self.label = label
        self.total = total
        self.unit = unit
        self.completed = 0.0
        self.detail = ""
        self.clock = clock
        self.started = clock()
        self.last_advance = self.started  # when the last item finished (the countdown of the ETA)
        self._eta: tuple[float, float] | None = None  # (seconds, when set) given by the caller
        self.closed = False

    # ---------------------------------------------------------------- the callers' side
    def advance(self, n: float = 1) -> None:
        """``n`` more items done."""
        self.completed += n
        self.last_advance = self.clock()
        self.changed()

    def update(self, *, completed: float | None = None, total: float | None = None, label: str | None = None,
               detail: str | None = None, eta_s: float | None = None) -> None:  # fmt: skip
        """Set any of: the items done, the total, the label, a detail shown after it (e.g. the
        configuration running), and the ETA in seconds from now (the caller's own estimate)."""
        if completed is not None:
            if completed != self.completed:
                self.last_advance = self.clock()
            self.completed = completed
        if total is not None:
            self.total = total
        if label is not None:
            self.label = label
        if detail is not None:
            self.detail = detail
        if eta_s is not None:
            self._eta = (max(0.0, eta_s), self.clock())
        self.changed()

    def exclude(self, seconds: float) -> None:
        """``seconds`` of this stage went to something else (an evaluation between training
        steps): left out of its rate and elapsed time, so the time per item stays the items' own
        (a pause after the last item, too: the item before it did not take longer)."""
        self.started += max(0.0, seconds)
        self.last_advance += max(0.0, seconds)
        self.changed()

    def close(self) -> None:
        """The step ended (done, failed or interrupted)."""
        if not self.closed:
            self.closed = True
            self.finished()

    def __enter__(self) -> Stage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- figures for display
    def elapsed_s(self) -> float:
        """Seconds since the stage started."""
        return self.clock() - self.started

    def rate(self) -> float | None:
        """Items per second over the whole stage so far (None before the first item)."""
        spent = self.last_advance - self.started
        return self.completed / spent if self.completed > 0 and spent > 0 else None

    def eta_s(self) -> float | None:
        """Seconds left: the caller's estimate counted down, else the mean time per item so far
        times the items left, counted down since the last item; None when unknown."""
        left = self._left()
        return None if left is None else max(0.0, left)

    def overdue_s(self) -> float:
        """Seconds the stage has run past its ETA (0 while within it, or once done)."""
        left = self._left()
        done = self.total is not None and self.completed >= self.total
        return 0.0 if left is None or done else max(0.0, -left)

    def _left(self) -> float | None:
        now = self.clock()
        if self._eta is not None:
            return self._eta[0] - (now - self._eta[1])
        rate = self.rate()
        if self.total is None or rate is None:
            return None
        return max(0.0, self.total - self.completed) / rate - (now - self.last_advance)

    # ---------------------------------------------------------------- the reporter's side
    def changed(self) -> None:
        """Called after every change; a reporter's stage shows it (base: nothing)."""

    def finished(self) -> None:
        """Called once when the stage closes; a reporter's stage removes or summarises it."""


class Reporter:
    """What the CLI passes down. This base class is silent: notes and stages show nothing
    (library use, ``--quiet``). Calling it (``reporter("message")``) is :meth:`note`, so it goes
    where a ``Callable[[str], None]`` progress callback went."""

    def note(self, message: str) -> None:
        """A one-line message about what happens now."""

    def stage(self, label: str, *, total: float | None = None, unit: str = "items") -> Stage:
        """Open a long step (use it as a context manager)."""
        return Stage(label, total=total, unit=unit)

    def __call__(self, message: str) -> None:
        """:meth:`note` (a reporter is also a line callback)."""
        self.note(message)

    def above(self, show: Callable[[], None]) -> None:
        """Run ``show`` (which prints results, e.g. to stdout) so that they stay above the
        progress display instead of being drawn over by it."""
        show()


class Lines(Reporter):
    """A reporter that hands each note, and each stage's label when it opens, to ``say``
    (e.g. a sweep worker's stderr line); stages show no counts."""

    def __init__(self, say: Callable[[str], None]):
        self.say = say

    def note(self, message: str) -> None:
        """``say(message)``."""
        self.say(message)

    def stage(self, label: str, *, total: float | None = None, unit: str = "items") -> Stage:
        """``say(label)``, then a silent stage."""
        self.say(label)
        return Stage(label, total=total, unit=unit)


def as_reporter(progress: Reporter | Callable[[str], None] | None) -> Reporter:
    """``progress`` as a :class:`Reporter`: itself, a plain callback wrapped in :class:`Lines`,
    or the silent reporter for None."""
    if progress is None:
        return Reporter()
    if isinstance(progress, Reporter):
        return progress
    return Lines(progress)


def eta_from_durations(durations: Sequence[float], remaining: int, running_for_s: float = 0.0) -> float | None:
    """Seconds left for ``remaining`` items that take as long as the mean of ``durations``
    (the finished ones), the one running for ``running_for_s`` already; None before any."""
    if not durations:
        return None
    mean = sum(durations) / len(durations)
    return max(0.0, remaining * mean - min(running_for_s, mean))


def fmt_eta(stage: Stage) -> str:
    """``ETA 1:05``; ``ETA passed by 0:12`` when the stage runs longer than estimated;
    ``ETA -`` when unknown."""
    over = stage.overdue_s()
    if over >= 1:
        return f"ETA passed by {fmt_duration(over)}"
    return f"ETA {fmt_duration(stage.eta_s())}"


def fmt_duration(seconds: float | None) -> str:
    """``1:02:03`` / ``4:05`` / ``7 s``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def fmt_rate(rate: float | None, unit: str) -> str:
    """``3.2 items/s``, or ``12 s/item`` when an item takes longer than a second; ``-`` unknown."""
    if not rate:
        return "-"
    one = unit[:-1] if unit.endswith("s") and unit != "s" else unit
    if rate >= 1:
        return f"{rate:,.1f} {unit}/s"
    return f"{1 / rate:,.1f} s/{one}"


def counts(stage: Stage) -> str:
    """``12/20 items`` (``12 items`` when the total is unknown; empty before the first of an
    unknown number)."""
    done = f"{stage.completed:g}"
    if stage.total is None:
        return f"{done} {stage.unit}" if stage.completed else ""
    return f"{done}/{stage.total:g} {stage.unit}"


def chunks(sizes: Sequence[int], min_size: int) -> list[tuple[int, int]]:
    """Consecutive ``(start, stop)`` ranges of items whose ``sizes`` (requests per item) add up
    to at least ``min_size`` each (the last may be smaller): how a task hands its items to the
    backend in pieces big enough to fill the backend's batches, advancing after each."""
    out: list[tuple[int, int]] = []
    start, acc = 0, 0
    for i, n in enumerate(sizes):
        acc += n
        if acc >= min_size:
            out.append((start, i + 1))
            start, acc = i + 1, 0
    if start < len(sizes):
        out.append((start, len(sizes)))
    return out


def accepts(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn`` takes a keyword argument ``name`` (plugin tasks may predate ``progress``)."""
    import inspect

    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
