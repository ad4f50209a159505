"""RAPL energy counters from Linux powercap (Intel, and AMD Zen via the same names).

Hand-written on purpose: e3bench needs readings on its own clock for every window plus a power
series (prefill/decode split); zeus's monitor keeps its own windows and timestamps and
CodeCarbon gives totals only. Reading ``energy_uj`` with wraparound is a few lines. Domains read: ``package-N`` zones and their ``dram`` subzones. ``core``/``uncore``
are parts of the package and ``psys`` covers the whole platform, so adding them would double
count; they are listed in the details, not summed.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from e3bench.core.api import Method
from e3bench.core.errors import E3Error
from e3bench.energy.meters.base import SampledMeter
from e3bench.energy.meters.sampling import Counter, Tick

DEFAULT_POWERCAP_ROOT = Path("/sys/class/powercap")
_ZONE_RE = re.compile(r"^intel-rapl:(\d+)(?::(\d+))?$")
_SUMMED = ("package", "dram")

PERMISSION_FIX = (
    "root is often needed (energy_uj is root-only since Linux 5.10, CVE-2020-8694): "
    "sudo chmod o+r /sys/class/powercap/intel-rapl:*/energy_uj "
    "/sys/class/powercap/intel-rapl:*:*/energy_uj, or run as root; "
    "or use --meter estimate"
)


@dataclass(frozen=True)
class RaplZone:
    """One powercap zone that e3bench sums."""

    domain: str  # "cpu-package-0", "dram-0"
    name: str  # the zone's own ``name`` file: "package-0", "dram"
    path: Path
    max_energy_range_uj: float | None


def _natural_key(path: Path) -> tuple[int, ...]:
    m = _ZONE_RE.match(path.name)
    return tuple(int(g) for g in m.groups() if g is not None) if m else (10**9,)


def _zone_dirs(root: Path) -> list[Path]:
    """Zones listed flat in the class dir and nested inside their parents, de-duplicated."""
    seen: dict[str, Path] = {}
    candidates: list[Path] = []
    try:
        top = [p for p in root.iterdir() if _ZONE_RE.match(p.name)]
    except OSError:
        return []
    for zone in top:
        candidates.append(zone)
        try:
            candidates.extend(p for p in zone.iterdir() if _ZONE_RE.match(p.name))
        except OSError:
            pass
    for path in candidates:
        key = path.name  # zone names are unique ("intel-rapl:0:0")
        seen.setdefault(key, path)
    return sorted(seen.values(), key=_natural_key)


def _read_text(path: Path) -> str:
    return path.read_text().strip()


def discover_zones(root: Path) -> tuple[list[RaplZone], list[str], list[str]]:
    """Return (readable summed zones, unreadable energy files, zones listed but not summed)."""
    zones: list[RaplZone] = []
    unreadable: list[str] = []
    skipped: list[str] = []
    for path in _zone_dirs(root):
        try:
            name = _read_text(path / "name")
        except OSError:
            continue
        m = _ZONE_RE.match(path.name)
        assert m is not None
        socket = m.group(1)
        kind = name.split("-")[0]
        if kind not in _SUMMED:
            skipped.append(f"{path.name} ({name})")
            continue
        domain = f"cpu-{name}" if kind == "package" else f"dram-{socket}"
        energy_file = path / "energy_uj"
        try:
            int(_read_text(energy_file))
        except PermissionError:
            unreadable.append(f"{energy_file} (permission denied)")
            continue
        except (OSError, ValueError) as exc:
            unreadable.append(f"{energy_file} ({type(exc).__name__}: {exc})")
            continue
        try:
            max_range: float | None = float(_read_text(path / "max_energy_range_uj"))
        except (OSError, ValueError):
            max_range = None
        zones.append(RaplZone(domain, name, path, max_range))
    return zones, unreadable, skipped


class RaplReader:
    """Reads every zone's ``energy_uj`` and accumulates it wrap-aware."""

    def __init__(self, zones: list[RaplZone]) -> None:
        self.zones = zones
        self.counters = {
            z.domain: Counter(scale_j=1e-6, wrap_range=z.max_energy_range_uj, wraps_expected=True)
            for z in zones
        }
        self._files = {z.domain: z.path / "energy_uj" for z in zones}

    def read(self) -> Tick:
        raw: dict[str, int] = {}
        for domain, path in self._files.items():
            with open(path, "rb") as f:  # ~10 µs each; keeps the poll well under 1% of a core
                raw[domain] = int(f.read())
        t_s = time.perf_counter()
        energy = {d: self.counters[d].update(v, t_s) for d, v in raw.items()}
        counts = {
            "wraps_total": float(sum(c.wraps for c in self.counters.values())),
            "negative_deltas_dropped_total": float(
                sum(c.negative_deltas_dropped for c in self.counters.values())
            ),
            "wraps_estimated_total": float(sum(c.wraps_estimated for c in self.counters.values())),
            "wrap_estimated_j_total": sum(c.estimated_j for c in self.counters.values()),
        }
        return Tick(t_s=t_s, energy_j=energy, counts=counts)


class RaplMeter(SampledMeter):
    """CPU package (+ DRAM) energy from RAPL counters: method ``measured``."""

    name: ClassVar[str] = "rapl"
    method: ClassVar[Method] = "measured"

    def __init__(
        self, *, root: str | os.PathLike[str] | None = None, sample_interval_s: float = 0.1
    ) -> None:
        self.root = Path(root) if root is not None else DEFAULT_POWERCAP_ROOT
        self.zones: list[RaplZone] = []
        self.unreadable: list[str] = []
        self.not_summed: list[str] = []
        super().__init__(sample_interval_s=sample_interval_s)

    def _probe(self) -> RaplReader:
        if not self.root.is_dir():
            raise E3Error(
                f"RAPL is not available: {self.root} does not exist "
                "(not Linux, or a VM/container without powercap)",
                "run on bare metal Linux with the intel_rapl driver (AMD Zen uses it too), "
                "or use --meter estimate",
            )
        self.zones, self.unreadable, self.not_summed = discover_zones(self.root)
        if not any(z.name.startswith("package") for z in self.zones):
            if self.unreadable:
                raise E3Error(
                    "RAPL counters exist but cannot be read: " + ", ".join(self.unreadable),
                    PERMISSION_FIX,
                )
            raise E3Error(
                f"no RAPL package zones (intel-rapl:N with name package-N) under {self.root}",
                "load the intel_rapl_common/intel_rapl_msr modules (modprobe intel_rapl_msr), "
                "or use --meter estimate",
            )
        return RaplReader(self.zones)

    def sensor(self) -> str:
        return "rapl:" + "+".join(z.domain for z in self.zones) if self.zones else "rapl"

    def _details(self, t0: Tick, t1: Tick, ticks: list[Tick]) -> dict[str, object]:
        details: dict[str, object] = {
            "formula": "E = Σ_domains Δenergy_uj × 1e-6 (wrap: + max_energy_range_uj)",
            "root": str(self.root),
            "zones": {z.domain: str(z.path) for z in self.zones},
            "max_energy_range_uj": {z.domain: z.max_energy_range_uj for z in self.zones},
        }
        if self.unreadable:
            details["unreadable"] = list(self.unreadable)
            details["unreadable_fix"] = PERMISSION_FIX
        if self.not_summed:
            details["not_summed"] = list(self.not_summed)
        if not any(z.name == "dram" for z in self.zones):
            details["dram"] = "no readable dram zone: energy is CPU package only"
        no_range = [z.domain for z in self.zones if not z.max_energy_range_uj]
        if no_range:
            details["wrap_handling"] = (
                "max_energy_range_uj unreadable for " + ", ".join(no_range) + ": a wrap's poll interval "
                "is estimated from the previous interval's power (assumed, counted in wraps_estimated)"
            )
            if not details.get("wraps_estimated"):
                details["notes"] = [
                    f"max_energy_range_uj is unreadable for {', '.join(no_range)}: a counter wrap would be "
                    "estimated from the previous interval's power, not measured (none in this window)"
                ]
        return details
