from __future__ import annotations

import time
from pathlib import Path

import pytest

try:
    from fakes_energy import MAX_RANGE_UJ, make_powercap_tree, make_zone, write_atomic
except ImportError:  # tests/ is a package
    from tests.fakes_energy import MAX_RANGE_UJ, make_powercap_tree, make_zone, write_atomic

import e3bench.energy.meters.rapl as rapl
from e3bench.core.errors import E3Error
from e3bench.energy.meters import make_meter
from e3bench.energy.meters.sampling import Counter
from e3bench.energy.meters.rapl import RaplMeter, RaplReader, discover_zones


def _set(zone: Path, energy_uj: int) -> None:
    write_atomic(zone / "energy_uj", f"{energy_uj}\n")


def test_discovers_packages_and_nested_dram_once(tmp_path: Path) -> None:
    make_powercap_tree(tmp_path)
    zones, unreadable, skipped = discover_zones(tmp_path)
    assert [z.domain for z in zones] == ["cpu-package-0", "dram-0", "cpu-package-1", "dram-1"]
    assert unreadable == []
    assert any("core" in s for s in skipped) and any("psys" in s for s in skipped)
    assert all(z.max_energy_range_uj == MAX_RANGE_UJ for z in zones)


def test_window_energy_with_wraparound(tmp_path: Path) -> None:
    zones = make_powercap_tree(tmp_path)
    _set(zones["cpu-package-0"], MAX_RANGE_UJ - 3_000_000)  # 3 J before the wrap
    meter = RaplMeter(root=tmp_path)
    assert meter.available(), meter.unavailable_reason()
    assert meter.sensor() == "rapl:cpu-package-0+dram-0+cpu-package-1+dram-1"
    meter.begin("w")
    time.sleep(0.05)
    _set(zones["cpu-package-0"], 7_000_000)  # wrapped: 3 J + 7 J = 10 J
    _set(zones["dram-0"], 2_000_000 + 1_500_000)  # +1.5 J
    _set(zones["cpu-package-1"], 3_000_000 + 20_000_000)  # +20 J
    time.sleep(0.25)  # let the poll thread see the new values
    r = meter.end("w")
    meter.close()
    assert r.method == "measured" and r.error is None
    assert r.energy_j["cpu-package-0"] == pytest.approx(10.0)
    assert r.energy_j["dram-0"] == pytest.approx(1.5)
    assert r.energy_j["cpu-package-1"] == pytest.approx(20.0)
    assert r.energy_j["dram-1"] == 0.0
    assert r.energy_j["total"] == pytest.approx(31.5)
    assert r.details["wraps"] == 1
    assert r.details["negative_deltas_dropped"] == 0
    # counter-derived power series: one sample per domain plus total, positive while busy
    assert {s.domain for s in r.samples} == {
        "cpu-package-0", "dram-0", "cpu-package-1", "dram-1", "total"
    }
    assert max(s.power_w for s in r.samples if s.domain == "total") > 0


def test_reader_counter_wrap_and_glitch_arithmetic() -> None:
    c = Counter(scale_j=1e-6, wrap_range=1_000_000)
    c.update(900_000, 0.0)
    assert c.update(100_000, 1.0) == pytest.approx(0.2)  # wrapped: 100k + 100k µJ
    assert c.wraps == 1
    c2 = Counter(scale_j=1e-6, wrap_range=None)
    c2.update(500, 0.0)
    assert c2.update(100, 1.0) == 0.0  # no range known: a decrease is a glitch
    assert c2.negative_deltas_dropped == 1
    assert c2.update(600, 2.0) == pytest.approx(500e-6)  # counting resumes from the new base


def test_reader_reads_real_files(tmp_path: Path) -> None:
    zones = make_powercap_tree(tmp_path)
    found, _, _ = discover_zones(tmp_path)
    reader = RaplReader(found)
    reader.read()
    _set(zones["dram-1"], 4_000_000 + 250_000)
    tick = reader.read()
    assert tick.energy_j["dram-1"] == pytest.approx(0.25)
    assert tick.energy_j["cpu-package-0"] == 0.0


def test_unreadable_dram_is_reported_but_package_still_measured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    zones = make_powercap_tree(tmp_path)
    blocked = zones["dram-1"] / "energy_uj"
    blocked.chmod(0)  # enough as non-root; root ignores modes, hence the patch below
    real = rapl._read_text

    def read_text(path: Path) -> str:
        if Path(path).resolve() == blocked.resolve():
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(rapl, "_read_text", read_text)
    meter = RaplMeter(root=tmp_path)
    assert meter.available()
    assert "dram-1" not in meter.sensor()
    meter.begin("w")
    r = meter.end("w")
    meter.close()
    assert any("permission denied" in u for u in r.details["unreadable"])
    assert "sudo chmod o+r" in str(r.details["unreadable_fix"])


def test_all_unreadable_explains_permissions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_powercap_tree(tmp_path)

    def read_text(path: Path) -> str:
        if Path(path).name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(path))
        return Path(path).read_text().strip()

    monkeypatch.setattr(rapl, "_read_text", read_text)
    meter = RaplMeter(root=tmp_path)
    assert not meter.available()
    reason = meter.unavailable_reason() or ""
    assert "permission denied" in reason
    assert "root is often needed" in reason and "sudo chmod o+r" in reason
    with pytest.raises(E3Error) as err:
        make_meter("rapl", rapl_root=tmp_path)
    assert "run as root" in err.value.fix


def test_no_powercap_is_unavailable_not_an_exception(tmp_path: Path) -> None:
    meter = RaplMeter(root=tmp_path / "nope")
    assert not meter.available()
    assert "does not exist" in (meter.unavailable_reason() or "")
    meter.begin("w")
    assert meter.end("w").method == "missing"


def test_zone_vanishing_mid_run_gives_missing(tmp_path: Path) -> None:
    zones = make_powercap_tree(tmp_path)
    meter = RaplMeter(root=tmp_path)
    meter.begin("w")
    (zones["cpu-package-1"] / "energy_uj").unlink()
    time.sleep(0.15)
    r = meter.end("w")
    meter.close()
    assert r.method == "missing"
    assert "FileNotFoundError" in (r.error or "")


def test_auto_picks_rapl_when_readable(tmp_path: Path) -> None:
    make_zone(tmp_path, "intel-rapl:0", "package-0", 10, MAX_RANGE_UJ)
    meter, why = make_meter("auto", device="cpu", rapl_root=tmp_path)
    try:
        assert meter.name == "rapl"
        assert why == (
            "auto → rapl: measured, rapl:cpu-package-0 [nvml skipped (device is cpu)]"
        )
    finally:
        meter.close()


# ------------------------------------------- unreadable max_energy_range_uj (issue 12.3)
def test_counter_with_unknown_range_estimates_a_wrap_from_the_previous_power() -> None:
    """100 W read every 100 ms by a counter wrapping at 50 J whose range is unknown: each wrap
    interval used to be dropped (−0.1 s of energy per wrap, ~−20% here); now it is held at
    the previous interval's power and counted as estimated."""
    c = Counter(scale_j=1e-6, wrap_range=None, wraps_expected=True)
    raw, t = 7_000_000, 0.0
    c.update(raw, t)
    for _ in range(30):  # 3 s: 300 J through a 50 J range, 6 wraps
        t += 0.1
        raw = (raw + 10_000_000) % 50_000_000
        c.update(raw, t)
    assert c.total_j == pytest.approx(300.0)
    assert c.wraps_estimated == 6 and c.estimated_j == pytest.approx(60.0)
    assert c.negative_deltas_dropped == 0
    # a counter that is not expected to wrap (NVML's 64-bit) still drops a decrease as a glitch
    g = Counter(scale_j=1e-6, wrap_range=None)
    g.update(500, 0.0)
    g.update(600, 1.0)
    assert g.update(100, 2.0) == pytest.approx(100e-6) and g.negative_deltas_dropped == 1


def test_unreadable_range_is_said_in_the_record_and_wraps_are_not_lost(tmp_path: Path) -> None:
    import threading

    from e3bench.energy.accounting import summarize

    zone = make_zone(tmp_path, "intel-rapl:0", "package-0", 7_000_000, None)  # no max_energy_range_uj
    stop = threading.Event()
    t_start = time.perf_counter()

    def draw_100_w() -> None:  # the hardware: 100 W, a 50 J counter
        while not stop.is_set():
            _set(zone, int(7_000_000 + (time.perf_counter() - t_start) * 100e6) % 50_000_000)
            time.sleep(0.005)

    writer = threading.Thread(target=draw_100_w, daemon=True)
    writer.start()
    meter = RaplMeter(root=tmp_path)
    try:
        meter.begin("w")
        time.sleep(1.6)  # ~160 J: 3 wraps
        r = meter.end("w")
    finally:
        stop.set()
        writer.join()
        meter.close()
    assert r.method == "measured" and r.details["max_energy_range_uj"] == {"cpu-package-0": None}
    assert r.details["wraps_estimated"] >= 3
    assert r.energy_j["total"] == pytest.approx(100.0 * r.duration_s, rel=0.03)
    s = summarize(r, None, input_tokens=1, output_tokens=1, requests=1)
    assert any("max_energy_range_uj unreadable" in n and "estimated" in n for n in s.notes)
    # a window without a wrap still says the range is unknown
    meter = RaplMeter(root=tmp_path)
    meter.begin("quiet")
    r2 = meter.end("quiet")
    meter.close()
    assert any("unreadable" in n for n in summarize(r2, None, input_tokens=0, output_tokens=0, requests=0).notes)
