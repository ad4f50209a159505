from __future__ import annotations

import pytest

from e3bench.energy.carbon import REGIONS, co2e_g, lookup
from e3bench.core.errors import E3Error


def test_default_is_world_average() -> None:
    g = lookup(None)
    assert g.is_default and g.region == "WORLD"
    assert g.g_per_kwh == 481
    assert g.name == "world average (default)"
    assert "Ember" in g.source and g.year == 2023
    assert lookup("  ").is_default
    assert not lookup("WORLD").is_default  # asked for explicitly


@pytest.mark.parametrize(
    ("region", "code", "g_per_kwh"),
    [("FR", "FR", 56), ("de", "DE", 381), ("UK", "GB", 238), ("us-ca", "US-CA", 179),
     ("eu", "EU", 244), ("Sweden", "SE", 41), ("US_TX", "US-TX", 350)],
)
def test_lookup_codes_aliases_and_names(region: str, code: str, g_per_kwh: float) -> None:
    g = lookup(region)
    assert (g.region, g.g_per_kwh) == (code, g_per_kwh)
    assert g.source and g.year >= 2023


def test_every_entry_has_source_and_year() -> None:
    for code in REGIONS:
        g = lookup(code)
        assert 0 < g.g_per_kwh < 1000
        assert g.source and 2020 <= g.year <= 2030


def test_us_states_cite_egrid() -> None:
    assert "eGRID2023" in lookup("US-WA").source


def test_unknown_region_suggests_near_names() -> None:
    with pytest.raises(E3Error) as err:
        lookup("Germny")
    assert "did you mean DE" in err.value.problem
    assert "FR" in err.value.fix and "US-CA" in err.value.fix
    with pytest.raises(E3Error, match="unknown grid region 'XX'"):
        lookup("XX")


def test_co2e_g() -> None:
    assert co2e_g(3.6e6, lookup("FR")) == pytest.approx(56.0)  # 1 kWh
    assert co2e_g(1800.0, lookup(None)) == pytest.approx(1800 / 3.6e6 * 481)
    assert co2e_g(0.0, lookup("PL")) == 0.0
