"""A reporter that records what the layers below tell it (for tests of progress counts)."""

from __future__ import annotations

from e3bench.core.progress import Reporter, Stage


class RecordedStage(Stage):
    """A stage that keeps every advance and update it was given."""

    def __init__(self, label: str, total, unit: str, clock):
        super().__init__(label, total=total, unit=unit, clock=clock)
        self.advances: list[float] = []
        self.updates: list[dict] = []
        self.etas: list[float | None] = []

    def advance(self, n: float = 1) -> None:
        self.advances.append(n)
        super().advance(n)

    def update(self, **kw) -> None:
        self.updates.append(kw)
        super().update(**kw)
        self.etas.append(self.eta_s())

    def finished(self) -> None:
        self.took_s = self.elapsed_s()  # how long the stage was open


class RecordingReporter(Reporter):
    """Keeps the notes and the stages (in the order they opened); ``clock`` drives their times."""

    def __init__(self, clock=None):
        import time

        self.notes: list[str] = []
        self.stages: list[RecordedStage] = []
        self.clock = clock or time.monotonic

    def note(self, message: str) -> None:
        self.notes.append(message)

    def stage(self, label: str, *, total=None, unit: str = "items") -> RecordedStage:
        st = RecordedStage(label, total, unit, self.clock)
        self.stages.append(st)
        return st

    def named(self, prefix: str) -> list[RecordedStage]:
        """The stages whose label starts with ``prefix``."""
        return [s for s in self.stages if s.label.startswith(prefix)]
