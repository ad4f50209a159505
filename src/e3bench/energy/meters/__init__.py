"""Energy meters and the one function that picks one: :func:`make_meter`.

``auto`` prefers a real sensor: NVML when the device is a CUDA GPU, else RAPL when its counters
are readable, else the TDP estimate. Each meter module imports its heavy dependency lazily.
"""

from __future__ import annotations

import os
from types import ModuleType

from e3bench.core.api import EnergyMeter
from e3bench.core.errors import E3Error

METER_CHOICES: tuple[str, ...] = ("auto", "nvml", "rapl", "estimate", "codecarbon", "none")

__all__ = ["METER_CHOICES", "make_meter"]


def make_meter(
    choice: str,
    *,
    device: str = "cpu",
    cpu_tdp_w: float | None = None,
    sample_interval_s: float = 0.1,
    nvml_module: ModuleType | None = None,
    rapl_root: str | os.PathLike[str] | None = None,
) -> tuple[EnergyMeter, str]:
    """Build the meter for ``choice``; return it with a one-line reason it was picked.

    An explicitly requested meter that cannot work raises :class:`E3Error` (reason + fix);
    ``auto`` never raises for an unusable sensor, it says what it tried instead.
    ``nvml_module`` and ``rapl_root`` exist for tests and unusual systems.
    """
    if choice not in METER_CHOICES:
        import difflib

        near = difflib.get_close_matches(choice, METER_CHOICES, n=1)
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        raise E3Error(
            f"unknown meter '{choice}'{hint}",
            f"use one of: {', '.join(METER_CHOICES)}",
        )
    if choice == "none":
        from e3bench.energy.meters.null import NullMeter

        return NullMeter(), "none: energy not measured (--meter none)"
    if choice == "auto":
        return _auto(device, cpu_tdp_w, sample_interval_s, nvml_module, rapl_root)

    meter = _build(choice, device, cpu_tdp_w, sample_interval_s, nvml_module, rapl_root)
    if not meter.available():
        err = getattr(meter, "unavailable_error", None)
        meter.close()
        if isinstance(err, E3Error):
            raise E3Error(f"--meter {choice}: {err.problem}", err.fix) from err
        raise E3Error(
            f"--meter {choice}: {meter.unavailable_reason() or 'unavailable'}",
            "use --meter auto to fall back to the best available meter",
        )
    return meter, f"{choice} (requested): {_describe(meter)}"


def _build(
    choice: str,
    device: str,
    cpu_tdp_w: float | None,
    sample_interval_s: float,
    nvml_module: ModuleType | None,
    rapl_root: str | os.PathLike[str] | None,
) -> EnergyMeter:
    if choice == "nvml":
        from e3bench.energy.meters.nvml import NvmlMeter

        if not device.startswith("cuda"):
            device = "cuda"
        return NvmlMeter(device=device, nvml=nvml_module, sample_interval_s=sample_interval_s)
    if choice == "rapl":
        from e3bench.energy.meters.rapl import RaplMeter

        return RaplMeter(root=rapl_root, sample_interval_s=sample_interval_s)
    if choice == "estimate":
        from e3bench.energy.meters.estimate import EstimateMeter

        return EstimateMeter(cpu_tdp_w=cpu_tdp_w, sample_interval_s=sample_interval_s)
    if choice == "codecarbon":
        from e3bench.energy.meters.codecarbon_meter import CodeCarbonMeter

        return CodeCarbonMeter()
    raise AssertionError(choice)


def _auto(
    device: str,
    cpu_tdp_w: float | None,
    sample_interval_s: float,
    nvml_module: ModuleType | None,
    rapl_root: str | os.PathLike[str] | None,
) -> tuple[EnergyMeter, str]:
    tried: list[str] = []
    if device.startswith("cuda"):
        meter = _build("nvml", device, cpu_tdp_w, sample_interval_s, nvml_module, rapl_root)
        if meter.available():
            return meter, (
                f"auto → nvml: {_describe(meter)}; GPU energy only (CPU not included)"
            )
        tried.append(f"nvml unavailable ({meter.unavailable_reason()})")
        meter.close()
    else:
        tried.append(f"nvml skipped (device is {device})")
    meter = _build("rapl", device, cpu_tdp_w, sample_interval_s, nvml_module, rapl_root)
    if meter.available():
        gpu_note = "; GPU energy NOT measured" if device.startswith("cuda") else ""
        return meter, f"auto → rapl: {_describe(meter)} [{'; '.join(tried)}]{gpu_note}"
    tried.append(f"rapl unavailable ({meter.unavailable_reason()})")
    meter.close()
    meter = _build("estimate", device, cpu_tdp_w, sample_interval_s, nvml_module, rapl_root)
    gpu_note = "; GPU energy NOT included" if device.startswith("cuda") else ""
    return meter, f"auto → estimate: {_describe(meter)} [{'; '.join(tried)}]{gpu_note}"


def _describe(meter: EnergyMeter) -> str:
    """One clause naming the sensor or model behind a meter."""
    name = meter.name
    if name == "nvml":
        gpus = ", ".join(f"{g.domain} {g.name}" for g in meter.gpus)  # type: ignore[attr-defined]
        return f"measured, {meter.sensor()} on {gpus}"  # type: ignore[attr-defined]
    if name == "rapl":
        return f"measured, {meter.sensor()}"  # type: ignore[attr-defined]
    if name == "estimate":
        m = meter.power_model  # type: ignore[attr-defined]
        return (
            f"estimated, tdp-model on '{m.cpu_model}' with TDP_eff {m.tdp_w:g} W "
            f"for {m.logical_cpus} logical CPU(s) — {m.tdp_source}"
        )
    if name == "codecarbon":
        sensor = meter.sensor()  # type: ignore[attr-defined]
        return f"estimated, {sensor} (cross-check, tracking_mode=process)"
    return name
