"""A bounded wait on any meter: :class:`BoundedMeter` calls ``begin``/``end``/``close`` in a
worker thread and gives up after ``timeout_s`` seconds.

A sensor read that hangs (a wedged driver, a stuck NFS-mounted powercap file, a plugin meter
waiting on a dead service) must not hang the run. The first call that does not return in time
marks the meter as *stopped answering*: that window's reading, and every later one, is
``method="missing"`` with the reason (which call, after how many seconds), and the meter is
not called again (its stuck worker thread is a daemon and is abandoned). Calls that return in
time behave exactly as the meter's own, exceptions included.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from e3bench.core.api import EnergyMeter, EnergyReading
from e3bench.energy.meters.base import missing_reading

#: seconds a meter's begin/end/close may take before its energy counts as missing
DEFAULT_TIMEOUT_S = 60.0


class BoundedMeter:
    """``meter`` with a bounded wait on each call (see the module docstring).

    ``hung`` is None while the meter answers, else the one-line reason it was given up on.
    ``timeout_s`` <= 0 or None waits forever (the meter is called directly).
    """

    def __init__(self, meter: EnergyMeter, timeout_s: float | None = DEFAULT_TIMEOUT_S) -> None:
        self.meter = meter
        self.timeout_s = timeout_s if timeout_s and timeout_s > 0 else None
        self.hung: str | None = None
        self._t0_s: dict[str, float] = {}

    @property
    def name(self) -> str:
        """The wrapped meter's name."""
        return getattr(self.meter, "name", "meter")

    def available(self) -> bool:
        """The wrapped meter's answer (not bounded: called once, before any window)."""
        return self.meter.available()

    def unavailable_reason(self) -> str | None:
        """The wrapped meter's answer."""
        return self.meter.unavailable_reason()

    def begin(self, window: str) -> None:
        """Begin ``window`` on the meter, unless it stopped answering."""
        self._t0_s[window] = time.perf_counter()
        if self.hung is None:
            self._call(f"begin('{window}')", self.meter.begin, window)

    def end(self, window: str) -> EnergyReading:
        """The meter's reading of ``window``; ``missing`` with the reason when it stopped answering."""
        t0_s = self._t0_s.pop(window, None)
        if self.hung is None:
            done, reading = self._call(f"end('{window}')", self.meter.end, window)
            if done:
                return reading
        duration_s = 0.0 if t0_s is None else time.perf_counter() - t0_s
        return missing_reading(window, str(self.hung), sensor=self.name, duration_s=duration_s,
                               details={"meter_timeout_s": self.timeout_s})  # fmt: skip

    def close(self) -> None:
        """Close the meter (bounded); a meter that stopped answering is left to its thread."""
        self._t0_s.clear()
        if self.hung is None:
            self._call("close()", self.meter.close)

    def _call(self, what: str, fn: Callable[..., Any], *args: Any) -> tuple[bool, Any]:
        """``(True, fn(*args))``, or ``(False, None)`` when it did not return within the timeout
        (then :attr:`hung` says so). An exception raised by ``fn`` propagates."""
        if self.timeout_s is None:
            return True, fn(*args)
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                box["value"] = fn(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                box["error"] = exc

        worker = threading.Thread(target=work, name=f"e3bench-meter-{self.name}", daemon=True)
        worker.start()
        worker.join(self.timeout_s)
        if worker.is_alive():
            self.hung = (
                f"meter read timed out: energy meter '{self.name}' did not answer {what} within "
                f"{self.timeout_s:g} s; energy is missing for this window and every later one "
                "(raise --meter-timeout-s if the sensor is only slow)"
            )
            return False, None
        if "error" in box:
            raise box["error"]
        return True, box.get("value")
