"""CodeCarbon's conventions: the PUE factor (``--pue``: CO2e of facility energy = IT energy × PUE,
recorded and labelled) and the emissions CSV (``e3bench export --format emissions``) under
CodeCarbon's column names and units."""

from __future__ import annotations

import csv

import pytest
from typer.testing import CliRunner

from e3bench.config.run import build_config
from e3bench.config.validate import ConfigError
from e3bench.core.api import EnergyReading
from e3bench.energy.accounting import IdleBaseline, summarize
from e3bench.energy.carbon import lookup


def _reading(total_j: float = 3.6e6, duration_s: float = 100.0) -> EnergyReading:
    return EnergyReading(window="w", duration_s=duration_s, method="measured", sensor="rapl:cpu-package-0+dram-0",
                         energy_j={"cpu-package-0": total_j * 0.75, "dram-0": total_j * 0.25, "total": total_j})  # fmt: skip


def test_pue_multiplies_the_energy_co2e_is_computed_from():
    idle = IdleBaseline(method="measured", sensor="rapl:cpu-package-0+dram-0", duration_s=3.0, power_w=6000.0)
    s = summarize(_reading(), idle, input_tokens=1, output_tokens=1, requests=1, region="DE", pue=1.5)
    # 1 kWh of IT energy in Germany (381 g/kWh) at PUE 1.5: 1.5 kWh of facility energy, 571.5 g
    assert s.pue == 1.5 and s.facility_energy_j == pytest.approx(1.5 * 3.6e6)
    assert s.co2e_g == pytest.approx(571.5)
    assert s.co2e_net_g == pytest.approx((3.6e6 - 6000.0 * 100.0) / 3.6e6 * 1.5 * 381)
    assert s.gross_energy_j == 3.6e6  # the measured energy itself is not scaled
    one = summarize(_reading(), None, input_tokens=1, output_tokens=1, requests=1, region="DE")
    assert (one.pue, one.co2e_g) == (1.0, pytest.approx(381.0))


def test_pue_config_default_validation_and_identity():
    assert build_config().pue == 1.0
    assert build_config(overrides={"pue": 1.2}).config_hash() != build_config().config_hash()
    with pytest.raises(ConfigError) as ei:
        build_config(overrides={"pue": 0.8})
    (line,) = ei.value.one_lines()
    assert line.startswith("--pue: bad value for 'pue': a PUE is facility energy / IT energy, a finite number ≥ 1.0 (got 0.8)")


def test_summary_labels_co2e_as_facility_energy_when_pue_is_set():
    import io

    from rich.console import Console

    from e3bench.report.summary import print_summary
    from fakes_report import batch, record

    b = batch(1, [50.0, 51.0], 0.03)
    b.energy = summarize(_reading(), None, input_tokens=10, output_tokens=10, requests=1, region="DE", pue=1.2)
    buf = io.StringIO()
    print_summary(record(batches=[b], pue=1.2), Console(file=buf, width=200))
    assert "CO2e g: of facility energy = measured IT energy × PUE 1.2" in buf.getvalue()


def _saved_run(root, pue: float = 1.2):
    from fakes_report import batch, record, save

    b = batch(1, [50.0, 51.0], 0.03)
    b.energy = summarize(_reading(7.2e6, 200.0), None, input_tokens=10, output_tokens=10, requests=1, region="US-CA", pue=pue)
    rec = record(batches=[b], pue=pue, region="US-CA")
    save(root, rec, sweep="my-sweep")
    return rec


def test_emissions_csv_uses_codecarbon_columns_and_units(tmp_path):
    from e3bench.results.emissions_csv import CODECARBON_COLUMNS

    rec = _saved_run(tmp_path / "res")
    out = tmp_path / "emissions.csv"
    r = CliRunner().invoke(__import__("e3bench.cli.app", fromlist=["app"]).app,
                           ["export", str(tmp_path / "res"), "--format", "emissions", "-o", str(out)])  # fmt: skip
    assert r.exit_code == 0, r.output
    with out.open(newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames
        (row,) = list(reader)
    assert tuple(header[: len(CODECARBON_COLUMNS)]) == CODECARBON_COLUMNS  # CodeCarbon's names, in its order
    assert header[:7] == ["timestamp", "project_name", "run_id", "experiment_id", "duration", "emissions", "emissions_rate"]
    # 2 kWh IT energy over 200 s in California (179 g/kWh, eGRID) at PUE 1.2
    assert float(row["duration"]) == 200.0
    assert float(row["energy_consumed"]) == pytest.approx(2.4)  # kWh, facility = IT × PUE
    assert float(row["e3bench_it_energy_kwh"]) == pytest.approx(2.0)
    assert float(row["emissions"]) == pytest.approx(2.4 * 179 / 1000)  # kg CO2e
    assert float(row["emissions_rate"]) == pytest.approx(2.4 * 179 / 1000 / 200)
    assert float(row["cpu_energy"]) == pytest.approx(1.5) and float(row["ram_energy"]) == pytest.approx(0.5)
    assert float(row["cpu_power"]) == pytest.approx(0.75 * 7.2e6 / 200) and row["gpu_energy"] == ""
    assert (row["pue"], row["project_name"], row["run_id"], row["experiment_id"]) == ("1.2", "my-sweep", rec.run_id,
                                                                                        rec.config_hash)  # fmt: skip
    assert (row["country_name"], row["country_iso_code"], row["region"]) == ("United States", "USA", "california")
    assert row["e3bench_carbon_intensity_g_per_kwh"] == "179.0" and "eGRID" in row["e3bench_carbon_intensity_source"]
    assert row["e3bench_window"] == "generate bs1" and row["e3bench_energy_method"] == "measured"
    assert row["cpu_count"] == "2" and row["cpu_model"] == "test cpu" and row["tracking_mode"] == "machine"
    assert row["on_cloud"] == "" and row["longitude"] == ""  # not known: empty, not guessed


def test_emissions_csv_refuses_other_endings_in_one_line(tmp_path):
    from e3bench.cli.app import app

    _saved_run(tmp_path / "res")
    r = CliRunner().invoke(app, ["export", str(tmp_path / "res"), "--format", "emissions", "-o", str(tmp_path / "e.json")])
    assert r.exit_code != 0 and "--format emissions writes CodeCarbon's CSV, not '.json'" in r.output
    r = CliRunner().invoke(app, ["export", str(tmp_path / "res"), "--format", "carbon", "-o", str(tmp_path / "e.csv")])
    assert r.exit_code != 0 and "unknown export format 'carbon'" in r.output


def test_world_region_has_no_country(tmp_path):
    from e3bench.results.emissions_csv import _where

    s = summarize(_reading(), None, input_tokens=1, output_tokens=1, requests=1)
    assert _where(s) == {"country_name": None, "country_iso_code": None, "region": "world"}
    assert lookup("DE").name == "Germany"


def test_measure_takes_a_pue_and_says_so():
    import e3bench

    with e3bench.measure("block", meter="estimate", cpu_tdp_w=65.0, region="FR", pue=1.5) as m:
        sum(range(200_000))
    assert m.result.summary.pue == 1.5
    assert m.co2e_g == pytest.approx(m.energy_j * 1.5 / 3.6e6 * 56)
    assert m.co2e_source.endswith("; of facility energy = IT energy × PUE 1.5")
    with pytest.raises(Exception, match=r"measure\(pue=...\): a PUE is facility energy / IT energy"):
        with e3bench.measure("bad", meter="none", pue=0.5):
            pass
