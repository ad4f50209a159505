"""Grid carbon intensity (gCO2e/kWh) by region, with its source named, and CO2e from energy.

Countries and aggregates: Ember yearly electricity data (2023 values, published 2024, as
redistributed by Our World in Data and CodeCarbon's ``global_energy_mix.json``); Ember uses
lifecycle emission factors. ``EU`` and ``WORLD`` are generation-weighted means of those country
values (the world figure matches Ember's published 480 g/kWh for 2023). US states: EPA eGRID2023
state total-output CO2e emission rate (lb/MWh × 0.4536), which counts combustion only, so it is
lower than a lifecycle figure would be. Region codes: ISO 3166-1 alpha-2 (``DE``), or
ISO 3166-2 for US states (``US-CA``). Intensities change every year: pass a value you trust with
a custom region when it matters.
"""

from __future__ import annotations

import difflib

from pydantic import BaseModel, ConfigDict

from e3bench.core.errors import E3Error

EMBER = "Ember (2024), yearly electricity data, via Our World in Data"
EMBER_AGG = "Ember (2024) country data, generation-weighted mean"
EGRID = "EPA eGRID2023, state total output CO2e rate (combustion only)"

DEFAULT_REGION = "WORLD"


class GridIntensity(BaseModel):
    """Carbon intensity of electricity in one region, and where the number comes from."""

    model_config = ConfigDict(frozen=True)

    region: str
    g_per_kwh: float
    source: str
    year: int
    is_default: bool = False
    name: str = ""


# code: (name, gCO2e/kWh, source, year)
_TABLE: dict[str, tuple[str, float, str, int]] = {
    "WORLD": ("world average (default)", 481, EMBER_AGG + " of 213 countries", 2023),
    "EU": ("European Union (27)", 244, EMBER_AGG + " of the EU-27", 2023),
    "US": ("United States", 369, EMBER, 2023),
    "CN": ("China", 582, EMBER, 2023),
    "IN": ("India", 713, EMBER, 2023),
    "DE": ("Germany", 381, EMBER, 2023),
    "FR": ("France", 56, EMBER, 2023),
    "GB": ("United Kingdom", 238, EMBER, 2023),
    "SE": ("Sweden", 41, EMBER, 2023),
    "NO": ("Norway", 30, EMBER, 2023),
    "FI": ("Finland", 79, EMBER, 2023),
    "DK": ("Denmark", 152, EMBER, 2023),
    "PL": ("Poland", 662, EMBER, 2023),
    "NL": ("Netherlands", 268, EMBER, 2023),
    "BE": ("Belgium", 138, EMBER, 2023),
    "IE": ("Ireland", 291, EMBER, 2023),
    "IT": ("Italy", 331, EMBER, 2023),
    "ES": ("Spain", 174, EMBER, 2023),
    "PT": ("Portugal", 166, EMBER, 2023),
    "AT": ("Austria", 111, EMBER, 2023),
    "CH": ("Switzerland", 35, EMBER, 2023),
    "CZ": ("Czechia", 450, EMBER, 2023),
    "JP": ("Japan", 485, EMBER, 2023),
    "KR": ("South Korea", 431, EMBER, 2023),
    "TW": ("Taiwan", 642, EMBER, 2023),
    "SG": ("Singapore", 471, EMBER, 2023),
    "AU": ("Australia", 549, EMBER, 2023),
    "NZ": ("New Zealand", 113, EMBER, 2023),
    "CA": ("Canada", 170, EMBER, 2023),
    "MX": ("Mexico", 507, EMBER, 2023),
    "BR": ("Brazil", 98, EMBER, 2023),
    "CL": ("Chile", 291, EMBER, 2023),
    "ZA": ("South Africa", 708, EMBER, 2023),
    "TR": ("Turkey", 465, EMBER, 2023),
    "US-CA": ("California", 179, EGRID, 2023),
    "US-TX": ("Texas", 350, EGRID, 2023),
    "US-WA": ("Washington", 121, EGRID, 2023),
    "US-OR": ("Oregon", 166, EGRID, 2023),
    "US-VA": ("Virginia", 245, EGRID, 2023),
    "US-NY": ("New York", 212, EGRID, 2023),
    "US-IA": ("Iowa", 288, EGRID, 2023),
    "US-IL": ("Illinois", 215, EGRID, 2023),
    "US-OH": ("Ohio", 485, EGRID, 2023),
    "US-GA": ("Georgia", 325, EGRID, 2023),
    "US-AZ": ("Arizona", 313, EGRID, 2023),
    "US-UT": ("Utah", 645, EGRID, 2023),
}

REGIONS: tuple[str, ...] = tuple(_TABLE)
_ALIASES = {"UK": "GB", "GLOBAL": "WORLD", "EU27": "EU", "EU-27": "EU", "USA": "US"}


def _normalise(region: str) -> str:
    code = region.strip().upper().replace("_", "-")
    return _ALIASES.get(code, code)


def lookup(region: str | None) -> GridIntensity:
    """Intensity for ``region`` (None: the world average, marked ``is_default``)."""
    if region is None or not region.strip():
        name, g, source, year = _TABLE[DEFAULT_REGION]
        return GridIntensity(
            region=DEFAULT_REGION, g_per_kwh=g, source=source, year=year, is_default=True,
            name=name,
        )
    code = _normalise(region)
    if code not in _TABLE:
        by_name = {v[0].upper(): k for k, v in _TABLE.items()}
        if code in by_name:
            code = by_name[code]
        else:
            near = difflib.get_close_matches(code, list(_TABLE) + list(by_name), n=3, cutoff=0.5)
            near_codes = [by_name.get(n, n) for n in near]
            hint = f" (did you mean {', '.join(dict.fromkeys(near_codes))}?)" if near else ""
            raise E3Error(
                f"unknown grid region '{region}'{hint}",
                f"use one of: {', '.join(REGIONS)} (or leave it unset for the world average)",
            )
    name, g, source, year = _TABLE[code]
    return GridIntensity(
        region=code, g_per_kwh=g, source=source, year=year, is_default=False, name=name,
    )


def co2e_g(energy_j: float, intensity: GridIntensity, pue: float = 1.0) -> float:
    """Grams CO2e for ``energy_j`` joules of IT energy (what the meters measure) in a data centre
    of Power Usage Effectiveness ``pue``: facility energy = IT energy × PUE (CodeCarbon's
    ``pue``), then kWh × g/kWh (1 kWh = 3.6e6 J). ``pue`` 1.0 = the IT energy alone."""
    return facility_j(energy_j, pue) / 3.6e6 * intensity.g_per_kwh


def facility_j(energy_j: float, pue: float = 1.0) -> float:
    """Facility energy (J) of ``energy_j`` joules of IT energy: IT energy × PUE (cooling, power
    conversion and lighting on top of the measured hardware)."""
    if not (pue >= 1.0):
        raise E3Error(f"a PUE is facility energy / IT energy, ≥ 1.0 (got {pue})", "e.g. --pue 1.2, or 1.0 for IT energy only")
    return energy_j * pue
