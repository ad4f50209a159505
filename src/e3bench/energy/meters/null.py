"""A meter that measures nothing, on purpose (``--meter none``)."""

from __future__ import annotations

import time
from typing import ClassVar

from e3bench.core.api import EnergyReading
from e3bench.energy.meters.base import missing_reading

DISABLED_REASON = "meter disabled (--meter none)"


class NullMeter:
    """Every window comes back with method ``missing`` and the reason it was disabled."""

    name: ClassVar[str] = "none"

    def __init__(self) -> None:
        self._t0_s: dict[str, float] = {}

    def available(self) -> bool:
        return True

    def unavailable_reason(self) -> str | None:
        return None

    def begin(self, window: str) -> None:
        self._t0_s[window] = time.perf_counter()

    def end(self, window: str) -> EnergyReading:
        t0_s = self._t0_s.pop(window, None)
        duration_s = 0.0 if t0_s is None else time.perf_counter() - t0_s
        return missing_reading(window, DISABLED_REASON, sensor="none", duration_s=duration_s)

    def close(self) -> None:
        self._t0_s.clear()
