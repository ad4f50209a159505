"""The stored runs as CodeCarbon's ``emissions.csv`` (``e3bench export --format emissions``): one
row per metered window of each run, under CodeCarbon's published column names and units, so
tools that read CodeCarbon's file read this one; e3bench's own facts follow in ``e3bench_*``
columns.

Units (CodeCarbon's): ``duration`` s; ``emissions`` kg CO2e; ``emissions_rate`` kg CO2e/s;
``*_power`` W (mean over the window); ``*_energy`` and ``energy_consumed`` kWh;
``ram_total_size`` GB. Energy is the window's gross energy (as CodeCarbon's: no idle baseline
subtracted). ``energy_consumed`` is facility energy = measured IT energy × ``pue`` — the energy the
emissions are computed from, so ``emissions = energy_consumed × carbon intensity`` holds in
every row; ``cpu/gpu/ram_energy`` are the meter's IT energy per component (a meter that does not
split by component leaves them empty; ``e3bench_it_energy_kwh`` is their total).
Columns CodeCarbon fills from its own probes that e3bench does not know (cloud provider,
longitude, latitude, on_cloud) stay empty rather than guessed. Records made before PUE existed
have ``pue`` 1.0.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from e3bench.energy.accounting import EnergySummary
from e3bench.results.schema import ResultRecord

#: CodeCarbon's emissions.csv columns, in its order (codecarbon 2.x ``EmissionsData``)
CODECARBON_COLUMNS: tuple[str, ...] = (
    "timestamp", "project_name", "run_id", "experiment_id", "duration", "emissions", "emissions_rate",
    "cpu_power", "gpu_power", "ram_power", "cpu_energy", "gpu_energy", "ram_energy", "energy_consumed",
    "country_name", "country_iso_code", "region", "cloud_provider", "cloud_region", "os", "python_version",
    "codecarbon_version", "cpu_count", "cpu_model", "gpu_count", "gpu_model", "longitude", "latitude",
    "ram_total_size", "tracking_mode", "on_cloud", "pue",
)  # fmt: skip
#: e3bench's own columns after CodeCarbon's (names carry their units)
E3BENCH_COLUMNS: tuple[str, ...] = (
    "e3bench_window", "e3bench_it_energy_kwh", "e3bench_energy_method", "e3bench_energy_sensor",
    "e3bench_carbon_intensity_g_per_kwh", "e3bench_carbon_intensity_source", "e3bench_grid_region",
    "e3bench_model", "e3bench_backend", "e3bench_dtype", "e3bench_device", "e3bench_version",
)  # fmt: skip
COLUMNS: tuple[str, ...] = CODECARBON_COLUMNS + E3BENCH_COLUMNS

KWH_J = 3.6e6
#: ISO 3166-1 alpha-2 → alpha-3 (CodeCarbon's country_iso_code) for the regions e3bench knows
_ALPHA3 = {
    "US": "USA", "CN": "CHN", "IN": "IND", "DE": "DEU", "FR": "FRA", "GB": "GBR", "SE": "SWE", "NO": "NOR",
    "FI": "FIN", "DK": "DNK", "PL": "POL", "NL": "NLD", "BE": "BEL", "IE": "IRL", "IT": "ITA", "ES": "ESP",
    "PT": "PRT", "AT": "AUT", "CH": "CHE", "CZ": "CZE", "JP": "JPN", "KR": "KOR", "TW": "TWN", "SG": "SGP",
    "AU": "AUS", "NZ": "NZL", "CA": "CAN", "MX": "MEX", "BR": "BRA", "CL": "CHL", "ZA": "ZAF", "TR": "TUR",
}  # fmt: skip


def _component(domain: str) -> str | None:
    """CodeCarbon's component of a meter domain (``cpu-package-0``, ``dram-0``, ``gpu0``, ``ram``)."""
    d = domain.lower()
    for prefix, part in (("cpu", "cpu"), ("package", "cpu"), ("core", "cpu"), ("dram", "ram"), ("ram", "ram"),
                         ("gpu", "gpu")):  # fmt: skip
        if d.startswith(prefix):
            return part
    return None


def _where(e: EnergySummary) -> dict[str, Any]:
    """CodeCarbon's country_name / country_iso_code / region for e3bench's grid region."""
    from e3bench.energy import carbon

    code = e.grid_region or carbon.DEFAULT_REGION
    country, _, state = code.partition("-")
    if country not in _ALPHA3:  # WORLD, EU: no country
        return {"country_name": None, "country_iso_code": None, "region": code.lower()}
    name = carbon.lookup(country).name
    region = carbon.lookup(code).name.lower() if state else None
    return {"country_name": name, "country_iso_code": _ALPHA3[country], "region": region}


def windows(rec: ResultRecord) -> list[tuple[str, EnergySummary]]:
    """The metered windows of ``rec`` with energy: generation per batch size, forward, tasks."""
    eff = rec.efficiency
    out: list[tuple[str, EnergySummary | None]] = []
    if eff is not None:
        out += [(f"generate bs{g.batch_size}", g.energy) for g in eff.generation]
        out += [(f"forward bs{f.batch_size}", f.energy) for f in eff.forward]
    out += [(f"task {t.task}", t.energy) for t in rec.effectiveness]
    return [(w, e) for w, e in out if e is not None and e.method != "missing" and e.gross_energy_j is not None]


def rows(found: Iterable[tuple[Path, ResultRecord]]) -> list[dict[str, Any]]:
    """One :data:`COLUMNS` row per metered window of each record (``found``: ``(path, record)``,
    the record's folder name being the sweep, CodeCarbon's ``project_name``)."""
    out = []
    for path, rec in found:
        m, c = rec.manifest, rec.config
        gpus = m.gpus
        machine = {
            "timestamp": rec.created_utc, "project_name": path.parent.name, "run_id": rec.run_id,
            "experiment_id": rec.config_hash, "os": m.platform, "python_version": m.python,
            "codecarbon_version": None, "cpu_count": m.cpu_cores_logical, "cpu_model": m.cpu_model,
            "gpu_count": len(gpus) or None,
            "gpu_model": f"{len(gpus)} x {gpus[0].name}" if gpus else None,
            "ram_total_size": None if m.memory_total_bytes is None else m.memory_total_bytes / 2**30,
            "tracking_mode": "machine", "cloud_provider": None, "cloud_region": None, "longitude": None,
            "latitude": None, "on_cloud": None, "e3bench_model": c.get("model"), "e3bench_backend": c.get("backend"),
            "e3bench_dtype": c.get("dtype"), "e3bench_device": rec.model.device if rec.model else c.get("device"),
            "e3bench_version": m.e3bench_version,
        }  # fmt: skip
        for window, e in windows(rec):
            out.append({**machine, **_window_row(window, e)})
    return out


def _window_row(window: str, e: EnergySummary) -> dict[str, Any]:
    """The energy, power and emissions columns of one window's summary."""
    gross = float(e.gross_energy_j or 0.0)
    pue = e.pue if e.pue is not None else 1.0
    facility = e.facility_energy_j if e.facility_energy_j is not None else gross * pue
    dur = e.duration_s or None
    parts: dict[str, float] = {}
    for domain, j in e.energy_by_domain_j.items():
        part = _component(domain)
        if part is not None:
            parts[part] = parts.get(part, 0.0) + j
    kg = None if e.co2e_g is None else e.co2e_g / 1000.0
    row: dict[str, Any] = {
        "duration": dur, "emissions": kg, "emissions_rate": None if kg is None or not dur else kg / dur,
        "energy_consumed": facility / KWH_J, "pue": pue, "e3bench_window": window,
        "e3bench_it_energy_kwh": gross / KWH_J, "e3bench_energy_method": e.method, "e3bench_energy_sensor": e.sensor,
        "e3bench_carbon_intensity_g_per_kwh": e.grid_g_per_kwh,
        "e3bench_carbon_intensity_source": None if e.grid_source is None else f"{e.grid_source}, {e.grid_year}",
        "e3bench_grid_region": e.grid_region,
        **_where(e),
    }  # fmt: skip
    for part in ("cpu", "gpu", "ram"):
        j = parts.get(part)
        row[f"{part}_energy"] = None if j is None else j / KWH_J
        row[f"{part}_power"] = None if j is None or not dur else j / dur
    return row

