"""CodeCarbon as a cross-check meter (extra ``codecarbon``), never the primary figure.

One ``OfflineEmissionsTracker`` per open window, ``tracking_mode="process"`` (follows this
process, not system load), no network, nothing written to the working directory. CodeCarbon
gives totals only (no power series on our clock) and its own CPU model table, so its figure is
labelled ``estimated`` and is there to be compared with e3bench's own meters.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from e3bench.core.api import EnergyReading
from e3bench.core.errors import E3Error, require
from e3bench.energy.meters.base import missing_reading

KWH_J = 3.6e6


@dataclass
class _Open:
    tracker: Any
    t0_s: float


class CodeCarbonMeter:
    """Energy by CodeCarbon's own models/sensors; labelled ``estimated``, a cross-check."""

    name: ClassVar[str] = "codecarbon"

    def __init__(self, *, measure_power_s: int = 1) -> None:
        self.measure_power_s = measure_power_s
        self.unavailable_error: E3Error | None = None
        self._cc: Any = None
        self._tmpdir: str | None = None
        self._open: dict[str, _Open] = {}
        try:
            self._cc = require("codecarbon", "codecarbon", "The codecarbon cross-check meter")
        except E3Error as exc:
            self.unavailable_error = exc

    @property
    def version(self) -> str:
        return str(getattr(self._cc, "__version__", "unknown"))

    def available(self) -> bool:
        return self._cc is not None

    def unavailable_reason(self) -> str | None:
        return None if self.unavailable_error is None else self.unavailable_error.one_line()

    def sensor(self) -> str:
        return f"codecarbon:{self.version}"

    def begin(self, window: str) -> None:
        if self._cc is None:
            return
        self._open.pop(window, None)
        try:
            tracker = self._make_tracker(window)
            tracker.start()
        except Exception:  # end() reports the window as missing
            return
        self._open[window] = _Open(tracker, time.perf_counter())

    def end(self, window: str) -> EnergyReading:
        if self._cc is None:
            return missing_reading(
                window, self.unavailable_reason() or "codecarbon missing", sensor="codecarbon"
            )
        opened = self._open.pop(window, None)
        if opened is None:
            return missing_reading(
                window, f"window '{window}' was never begun or codecarbon failed to start",
                sensor=self.sensor(),
            )
        try:
            opened.tracker.stop()
            t1_s = time.perf_counter()
            data = getattr(opened.tracker, "final_emissions_data", None)
            if data is None:
                raise RuntimeError("codecarbon returned no emissions data")
            return self._reading(window, data, t1_s - opened.t0_s)
        except Exception as exc:
            return missing_reading(
                window, f"codecarbon failed: {type(exc).__name__}: {exc}", sensor=self.sensor()
            )

    def close(self) -> None:
        for opened in self._open.values():
            try:
                opened.tracker.stop()
            except Exception:
                pass
        self._open.clear()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    # ----------------------------------------------------------------- internals
    def _make_tracker(self, window: str) -> Any:
        logging.getLogger("codecarbon").setLevel(logging.ERROR)
        if self._tmpdir is None:
            self._tmpdir = tempfile.mkdtemp(prefix="e3bench-codecarbon-")
        return self._cc.OfflineEmissionsTracker(
            project_name=f"e3bench:{window}",
            country_iso_code="USA",  # required offline; e3bench computes CO2e itself
            tracking_mode="process",
            measure_power_secs=self.measure_power_s,
            save_to_file=False,
            output_dir=self._tmpdir,
            log_level="error",
            allow_multiple_runs=True,  # no lock file; windows may overlap
        )

    def _reading(self, window: str, data: Any, duration_s: float) -> EnergyReading:
        energy_j = {
            "cpu": float(data.cpu_energy) * KWH_J,
            "ram": float(data.ram_energy) * KWH_J,
            "gpu": float(data.gpu_energy) * KWH_J,
        }
        energy_j["total"] = float(data.energy_consumed) * KWH_J
        bad = sorted(d for d, v in energy_j.items() if not math.isfinite(v))
        if bad:
            return missing_reading(
                window, f"codecarbon returned a non-finite energy for {', '.join(bad)}",
                sensor=self.sensor(), duration_s=duration_s,
            )  # fmt: skip
        details: dict[str, object] = {
            "cross_check": (
                "CodeCarbon's own estimate, for comparison with e3bench's meters; "
                "its CO2 figure is ignored (e3bench computes CO2e itself)"
            ),
            "formula": "E = CodeCarbon energy_consumed [kWh] × 3.6e6",
            "tracking_mode": getattr(data, "tracking_mode", "process"),
            "cpu_model": getattr(data, "cpu_model", None),
            "cpu_power_w": getattr(data, "cpu_power", None),
            "ram_power_w": getattr(data, "ram_power", None),
            "gpu_power_w": getattr(data, "gpu_power", None),
            "codecarbon_duration_s": getattr(data, "duration", None),
            "measure_power_s": self.measure_power_s,
        }
        return EnergyReading(
            window=window,
            duration_s=duration_s,
            energy_j=energy_j,
            method="estimated",
            sensor=self.sensor(),
            details=details,
            samples=[],
        )
