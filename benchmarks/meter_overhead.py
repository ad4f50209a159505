"""CPU cost of e3bench's meter polling threads, as % of one core (target <= 1%).

Runs each available sampled meter with one window open for ``--seconds`` at 10 Hz while the
main thread sleeps, and reports two figures:

* thread: CPU time of the polling thread itself (``time.thread_time`` inside it) / wall;
* process: this process's CPU time during the window minus an idle control of equal length.

RAPL is measured on the real powercap tree when readable, else on a temporary copy of its
layout (same file reads); NVML only when a GPU is present.

    PYTHONPATH=src python benchmarks/meter_overhead.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from e3bench.energy.meters.base import SampledMeter
from e3bench.energy.meters.estimate import EstimateMeter
from e3bench.energy.meters.nvml import NvmlMeter
from e3bench.energy.meters.rapl import RaplMeter


def _fake_powercap(root: Path) -> Path:
    for zone, name in (("intel-rapl:0", "package-0"), ("intel-rapl:0/intel-rapl:0:0", "dram")):
        d = root / zone
        d.mkdir(parents=True)
        (d / "name").write_text(name + "\n")
        (d / "energy_uj").write_text("123456789\n")
        (d / "max_energy_range_uj").write_text("262143328850\n")
    return root


def _idle_cpu_s(seconds: float) -> float:
    c0 = time.process_time()
    time.sleep(seconds)
    return time.process_time() - c0


def measure(meter: SampledMeter, seconds: float) -> tuple[float, float, int]:
    """(thread % of a core, process % of a core above idle, ticks)."""
    control_s = _idle_cpu_s(seconds)
    thread0_s = meter.sampler_thread_cpu_s
    c0 = time.process_time()
    meter.begin("overhead")
    time.sleep(seconds)
    reading = meter.end("overhead")
    process_s = time.process_time() - c0
    thread_s = meter.sampler_thread_cpu_s - thread0_s
    wall_s = reading.duration_s
    return (
        100 * thread_s / wall_s,
        100 * (process_s - control_s) / wall_s,
        int(reading.details.get("n_ticks", 0)),  # type: ignore[call-overload]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()

    meters: list[tuple[str, SampledMeter]] = [("estimate", EstimateMeter())]
    tmp = tempfile.TemporaryDirectory()
    rapl = RaplMeter()
    label = "rapl (real)"
    if not rapl.available():
        rapl = RaplMeter(root=_fake_powercap(Path(tmp.name) / "powercap"))
        label = "rapl (file layout copy)"
    meters.append((label, rapl))
    nvml = NvmlMeter()
    if nvml.available():
        meters.append(("nvml", nvml))
    else:
        print(f"nvml: skipped ({nvml.unavailable_reason()})")

    worst = 0.0
    for name, meter in meters:
        thread_pct, process_pct, ticks = measure(meter, args.seconds)
        meter.close()
        worst = max(worst, thread_pct)
        print(
            f"{name:24s} {ticks:4d} ticks in {args.seconds:g} s: polling thread "
            f"{thread_pct:.3f}% of one core; process above idle control {process_pct:.3f}%"
        )
    tmp.cleanup()
    verdict = "OK" if worst <= 1.0 else "OVER BUDGET"
    print(f"worst polling-thread cost: {worst:.3f}% of one core (target <= 1%: {verdict})")


if __name__ == "__main__":
    main()
