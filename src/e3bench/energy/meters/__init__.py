"""Energy meters, their registry entries, and the one function that picks one: :func:`make_meter`.

``auto`` prefers a real sensor: NVML when the device is a CUDA GPU, else RAPL when its counters
are readable, else the TDP estimate. Each meter module imports its heavy dependency lazily.

A registered meter (built-in or from the ``e3bench.meters`` entry-point group) is a
:class:`MeterSpec`, or any callable ``factory(settings: MeterSettings) -> EnergyMeter`` (then
described by its ``name``)::

    [project.entry-points."e3bench.meters"]
    mymeter = "my_pkg.meter:SPEC"        # SPEC = MeterSpec(build=..., describe=...)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

from e3bench.core.api import EnergyMeter
from e3bench.core.errors import E3Error, unknown_name
from e3bench.core.fmt import count
from e3bench.core.registry import meters as _registry

__all__ = ["AUTO", "MeterSettings", "MeterSpec", "make_meter", "meter_choices"]

#: the pseudo-meter that picks the best available real one
AUTO = "auto"


@dataclass(frozen=True)
class MeterSettings:
    """What a meter factory may use. ``device``: ``"cpu"`` or ``"cuda[:i]"``; ``cpu_tdp_w``: TDP
    override in watts for the estimate meter; ``sample_interval_s``: sampler period in seconds;
    ``nvml_module`` and ``rapl_root`` exist for tests and unusual systems."""

    device: str = "cpu"
    cpu_tdp_w: float | None = None
    sample_interval_s: float = 0.1
    nvml_module: ModuleType | None = None
    rapl_root: str | os.PathLike[str] | None = None


def _by_name(meter: EnergyMeter) -> str:
    return meter.name


@dataclass(frozen=True)
class MeterSpec:
    """A registered meter: ``build(settings) -> EnergyMeter`` (must not raise for an unusable
    sensor: the meter's ``available()`` says so) and ``describe(meter) -> str``, one clause naming
    the sensor or model behind a built meter (used in ``meter_choice_reason``)."""

    build: Callable[[MeterSettings], EnergyMeter]
    describe: Callable[[EnergyMeter], str] = _by_name


def _spec(name: str) -> MeterSpec:
    obj = _registry.get(name)
    return obj if isinstance(obj, MeterSpec) else MeterSpec(build=obj)


def meter_choices() -> tuple[str, ...]:
    """Valid values of ``--meter``: ``auto`` and every registered meter (plugins included)."""
    return (AUTO, *_registry.names())


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

    An unknown name raises the one did-you-mean :class:`E3Error`; an explicitly requested meter
    that cannot work raises :class:`E3Error` (reason + fix); ``auto`` never raises for an
    unusable sensor, it says what it tried instead.
    """
    settings = MeterSettings(device, cpu_tdp_w, sample_interval_s, nvml_module, rapl_root)
    if choice == AUTO:
        return _auto(settings)
    if choice not in _registry:
        raise unknown_name("meter", choice, meter_choices())
    spec = _spec(choice)
    name = _registry.canonical(choice)
    meter = spec.build(settings)
    if not meter.available():
        err = getattr(meter, "unavailable_error", None)
        meter.close()
        if isinstance(err, E3Error):
            raise E3Error(f"--meter {choice}: {err.problem}", err.fix) from err
        raise E3Error(
            f"--meter {choice}: {meter.unavailable_reason() or 'unavailable'}",
            "use --meter auto to fall back to the best available meter",
        )
    if name == "none":
        return meter, "none: energy not measured (--meter none)"
    return meter, f"{choice} (requested): {spec.describe(meter)}"


def _auto(s: MeterSettings) -> tuple[EnergyMeter, str]:
    tried: list[str] = []
    if s.device.startswith("cuda"):
        spec = _spec("nvml")
        meter = spec.build(s)
        if meter.available():
            return meter, f"auto → nvml: {spec.describe(meter)}; GPU energy only (CPU not included)"
        tried.append(f"nvml unavailable ({meter.unavailable_reason()})")
        meter.close()
    else:
        tried.append(f"nvml skipped (device is {s.device})")
    spec = _spec("rapl")
    meter = spec.build(s)
    if meter.available():
        gpu_note = "; GPU energy NOT measured" if s.device.startswith("cuda") else ""
        return meter, f"auto → rapl: {spec.describe(meter)} [{'; '.join(tried)}]{gpu_note}"
    tried.append(f"rapl unavailable ({meter.unavailable_reason()})")
    meter.close()
    spec = _spec("estimate")
    meter = spec.build(s)
    if not meter.available():  # only a bad setting (cpu_tdp_w) makes the estimate unusable
        reason = meter.unavailable_reason() or "unavailable"
        meter.close()
        raise E3Error(f"--meter auto → estimate: {reason}", "fix the setting, or pass --meter none")
    gpu_note = "; GPU energy NOT included" if s.device.startswith("cuda") else ""
    return meter, f"auto → estimate: {spec.describe(meter)} [{'; '.join(tried)}]{gpu_note}"


# ------------------------------------------------------------------------- built-in meters
def _nvml(s: MeterSettings) -> EnergyMeter:
    from e3bench.energy.meters.nvml import NvmlMeter

    device = s.device if s.device.startswith("cuda") else "cuda"
    return NvmlMeter(device=device, nvml=s.nvml_module, sample_interval_s=s.sample_interval_s)


def _nvml_describe(meter) -> str:
    gpus = ", ".join(f"{g.domain} {g.name}" for g in meter.gpus)
    return f"measured, {meter.sensor()} on {gpus}"


def _rapl(s: MeterSettings) -> EnergyMeter:
    from e3bench.energy.meters.rapl import RaplMeter

    return RaplMeter(root=s.rapl_root, sample_interval_s=s.sample_interval_s)


def _estimate(s: MeterSettings) -> EnergyMeter:
    from e3bench.energy.meters.estimate import EstimateMeter

    return EstimateMeter(cpu_tdp_w=s.cpu_tdp_w, sample_interval_s=s.sample_interval_s)


def _estimate_describe(meter) -> str:
    m = meter.power_model
    return (
        f"estimated, tdp-model on '{m.cpu_model}' with TDP_eff {m.tdp_w:g} W "
        f"for {count(m.logical_cpus, 'logical CPU')} — {m.tdp_source}"
    )


def _codecarbon(s: MeterSettings) -> EnergyMeter:
    from e3bench.energy.meters.codecarbon_meter import CodeCarbonMeter

    return CodeCarbonMeter()


def _null(s: MeterSettings) -> EnergyMeter:
    from e3bench.energy.meters.null import NullMeter

    return NullMeter()


_registry.builtin(
    "nvml", MeterSpec(_nvml, _nvml_describe), description="NVIDIA GPU energy counter (Volta+) or power polling"
)
_registry.builtin(
    "rapl", MeterSpec(_rapl, lambda m: f"measured, {m.sensor()}"),
    description="Intel/AMD RAPL counters from /sys/class/powercap (CPU package, DRAM)",
)  # fmt: skip
_registry.builtin(
    "estimate", MeterSpec(_estimate, _estimate_describe),
    description="CPU estimate: TDP × (0.1 + 0.9·load³) + DRAM term, labelled estimated",
)  # fmt: skip
_registry.builtin(
    "codecarbon", MeterSpec(_codecarbon, lambda m: f"estimated, {m.sensor()} (cross-check, tracking_mode=process)"),
    requires=("codecarbon",), extra="codecarbon", description="CodeCarbon process tracker (cross-check)",
)  # fmt: skip
_registry.builtin("none", MeterSpec(_null), description="energy not measured")
