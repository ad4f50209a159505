"""The Python API (docs/api.md): e3bench.run, load_records/load_record and e3bench.measure, with
real calls — a tiny local model through the real runner and store, real meters around real work."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

import e3bench
from conftest import run_cli

HEAVY = ("torch", "transformers", "pydantic", "numpy", "typer", "rich")


def test_import_e3bench_is_light():
    """`import e3bench` must not load torch (seconds) or any other heavy library."""
    res = subprocess.run([sys.executable, "-X", "importtime", "-c", "import e3bench"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stderr
    loaded = {ln.split("|")[-1].strip() for ln in res.stderr.splitlines() if "|" in ln}
    assert "e3bench" in loaded
    assert sorted(m for m in loaded if m.split(".")[0] in HEAVY) == []


def test_measure_imports_no_torch():
    code = (
        "import sys, e3bench\n"
        "with e3bench.measure('x', meter='estimate') as m: sum(range(10000))\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


# ----------------------------------------------------------------------------------- measure
def test_measure_a_sleep_with_the_estimate_meter():
    with e3bench.measure("nap", meter="estimate") as m:
        time.sleep(0.4)
    r = m.result
    assert r is not None and r.name == "nap"
    assert 0.4 <= r.duration_s < 1.5  # the one window's clock around the block (slack: a loaded CI machine)
    assert r.energy_j is not None and r.energy_j > 0
    assert (r.method, r.sensor, r.meter) == ("estimated", "tdp-model", "estimate")
    assert r.basis.startswith("gross")  # no idle baseline asked for
    assert r.energy_j == r.gross_energy_j and r.net_energy_j is None
    # the estimate's floor is 0.1 × TDP_eff: energy ≥ that over the window, and mean power = E / t
    assert r.mean_power_w == pytest.approx(r.energy_j / r.summary.duration_s, rel=1e-6)
    # CO2e = energy × grid intensity, with the intensity's source named
    assert r.co2e_g == pytest.approx(r.energy_j / 3.6e6 * r.grid_g_per_kwh, rel=1e-9)
    assert r.grid_region == "WORLD" and "world average" in r.co2e_source
    # the result's fields read on the measurement itself too
    assert (m.duration_s, m.energy_j, m.method) == (r.duration_s, r.energy_j, r.method)
    assert "J gross" in m.line() and "estimated" in m.line()


def test_measure_busy_loop_net_of_idle_in_a_region():
    with e3bench.measure("busy", meter="estimate", idle_seconds=0.3, region="DE") as m:
        m.requests = 1
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 0.4:
            sum(range(1000))
    assert 0.4 <= m.duration_s < 1.5
    assert m.basis == "net" and m.energy_j == m.net_energy_j
    assert m.gross_energy_j > m.energy_j >= 0  # idle power × duration subtracted
    assert m.summary.idle_state == "the caller's process before the measured block"
    assert m.grid_region == "DE" and m.co2e_g == pytest.approx(m.energy_j / 3.6e6 * m.grid_g_per_kwh)
    assert m.summary.energy_per_request_j == pytest.approx(m.energy_j)


def test_measure_keeps_the_result_when_the_block_raises():
    with pytest.raises(ZeroDivisionError):
        with e3bench.measure("boom", meter="estimate") as m:
            time.sleep(0.1)
            1 / 0  # noqa: B018
    assert m.result is not None and m.duration_s >= 0.1 and m.energy_j > 0


def test_measure_result_only_after_the_block():
    m = e3bench.measure("later", meter="none")
    with pytest.raises(AttributeError, match="once the with block has ended"):
        m.energy_j  # noqa: B018
    with m:
        pass
    assert m.method == "missing" and m.energy_j is None and m.meter == "none"
    assert "energy missing" in m.line()


def test_measure_syncs_cuda_by_default_only_when_torch_is_loaded():
    import functools

    import torch

    from e3bench.metering import default_sync

    assert default_sync("cpu") is None
    sync = default_sync("cuda:1")
    assert isinstance(sync, functools.partial) and sync.func is torch.cuda.synchronize and sync.args == ("cuda:1",)


def test_measure_start_stop_like_a_tracker():
    m = e3bench.measure("steps", meter="estimate")
    with pytest.raises(e3bench.E3Error, match="without start"):
        m.stop()
    m.start()
    time.sleep(0.2)
    r = m.stop()
    assert r is m.result and 0.2 <= r.duration_s < 1.2 and r.energy_j > 0


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"meter": "estimat"}, "unknown meter 'estimat' — fix: did you mean 'estimate'?"),
        ({"region": "Atlantis"}, "unknown grid region 'Atlantis'"),
        ({"meter": "estimate", "cpu_tdp_w": -5}, "measure(meter='estimate'): cpu_tdp_w must be a positive"),
        ({"meter": "estimate", "idle_seconds": -1}, "measure(idle_seconds=...): must be a number of seconds ≥ 0 (got -1)"),
        ({"meter": "estimate", "idle_seconds": float("nan")}, "measure(idle_seconds=...): must be a number"),
        ({"meter": "estimate", "timeout_s": 0}, "measure(timeout_s=...): must be a number of seconds > 0 (got 0)"),
        ({"meter": "estimate", "device": "gpu"}, "measure(device=...): 'gpu' is not cpu, cuda or cuda:<index>"),
    ],
)
def test_measure_bad_input_raises_e3error(kwargs, needle):
    with pytest.raises(e3bench.E3Error) as info:
        with e3bench.measure("x", **kwargs):
            pytest.fail("the block must not run")
    assert needle in info.value.one_line()


def test_measure_takes_one_list_of_keywords():
    """measure() and Measurement take the keywords of MeasureOptions (one list, one set of
    defaults); a misspelt one is an E3Error with the did-you-mean, not a TypeError."""
    import dataclasses

    from e3bench.metering import MeasureOptions, Measurement

    m = e3bench.measure("x", meter="estimate", idle_seconds=0.5)
    assert m._opts == MeasureOptions(meter="estimate", idle_seconds=0.5) == Measurement("x", meter="estimate",
                                                                                          idle_seconds=0.5)._opts
    assert e3bench.measure()._opts == MeasureOptions() and e3bench.measure().name == "measure"
    assert [f.name for f in dataclasses.fields(MeasureOptions)] == [
        "meter", "device", "region", "cpu_tdp_w", "idle_seconds", "sync", "timeout_s", "pue"]
    with pytest.raises(e3bench.E3Error) as info:
        e3bench.measure("x", metr="estimate")
    assert info.value.one_line() == "unknown keyword of e3bench.measure() 'metr' — fix: did you mean 'meter'?"


# ------------------------------------------------------------------------------------ run
def _fast(model, out) -> dict:
    return dict(model=str(model), batch_sizes=[1], prompt_tokens=8, max_new_tokens=4, warmup_iters=0,
                min_iters=2, min_seconds=0, idle_seconds=0.2, meter="estimate", tasks=[], output_dir=str(out))  # fmt: skip


@pytest.fixture(scope="module")
def ran(tiny_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("api-run")
    lines: list[str] = []
    rec = e3bench.run(**_fast(tiny_models["decoder"], out), progress=lines.append)
    return out, rec, lines


def test_run_returns_the_saved_record(ran):
    out, rec, lines = ran
    assert isinstance(rec, e3bench.ResultRecord) and rec.status == "ok"
    saved = out / "runs" / f"{rec.run_id}.json"  # where `e3bench run` puts it
    assert e3bench.ResultRecord.model_validate_json(saved.read_text()) == rec
    (gen,) = rec.efficiency.generation
    assert (gen.batch_size, gen.output_tokens_per_request, gen.iterations) == (1, 4, 2)
    assert gen.energy.method == "estimated" and gen.energy.gross_energy_j > 0
    assert rec.config["max_new_tokens"] == 4 and rec.config["meter"] == "estimate"
    assert any("loading" in ln for ln in lines)
    # loading back: by run id, by a prefix of it, by path, all of a folder
    assert e3bench.load_record(rec.run_id, root=out) == rec
    assert e3bench.load_record(rec.run_id[:-3], root=out) == rec
    assert e3bench.load_record(saved) == rec
    assert e3bench.load_records(out) == [rec]
    assert e3bench.load_records(saved) == [rec]


def test_config_forms_build_the_same_run(ran, tiny_models, tmp_path):
    """A RunConfig, a dict or a YAML file, plus keyword overrides, build one configuration."""
    out, rec, _ = ran
    cfg = e3bench.build(**_fast(tiny_models["decoder"], out))
    assert cfg.config_hash() == rec.config_hash
    assert e3bench.build(cfg.model_dump(), max_new_tokens=4).config_hash() == rec.config_hash
    yml = tmp_path / "run.yaml"
    yml.write_text("\n".join(f"{k}: {json.dumps(v)}" for k, v in _fast(tiny_models["decoder"], out).items()))
    assert e3bench.build(yml).config_hash() == rec.config_hash
    assert e3bench.build(cfg, max_new_tokens=5).max_new_tokens == 5


def test_defaults_are_the_clis(tmp_path):
    """No tasks named: e3bench run's default quality task, as on the command line."""
    from e3bench.config.values import DEFAULT_LIMIT, DEFAULT_TASKS

    cfg = e3bench.build(output_dir=str(tmp_path))
    assert (cfg.tasks, cfg.limit, cfg.defaulted("tasks")) == (DEFAULT_TASKS, DEFAULT_LIMIT, True)
    assert e3bench.build(tasks=[], output_dir=str(tmp_path)).tasks == ()
    assert e3bench.build(tasks="none", output_dir=str(tmp_path)).tasks == ()


def test_load_record_by_id_names_the_nearest(ran, tmp_path):
    _, rec, _ = ran
    ids = [rec.run_id[:-6] + "111111", rec.run_id[:-6] + "222222"]
    for rid in ids:
        (tmp_path / f"{rid}.json").write_text(rec.model_copy(update={"run_id": rid}).model_dump_json())
    assert e3bench.load_record(ids[0], root=tmp_path).run_id == ids[0]
    with pytest.raises(e3bench.E3Error, match=f"2 records under .* match '{rec.run_id[:-6]}'"):
        e3bench.load_record(rec.run_id[:-6], root=tmp_path)
    with pytest.raises(e3bench.E3Error) as info:
        e3bench.load_record(ids[0][:-1] + "2x", root=tmp_path)
    assert info.value.one_line() == (f"unknown run id '{ids[0][:-1]}2x' under {tmp_path} — fix: did you mean "
                                     f"'{ids[0]}'?")  # fmt: skip


def test_run_errors_are_the_cli_lines(tmp_path):
    """Same problems, same fixes as `e3bench run`; the location names the keyword, not the flag."""
    with pytest.raises(e3bench.E3Error) as info:
        e3bench.run(meter="nvm", batch_sizes=[0], output_dir=str(tmp_path))
    lines = info.value.one_lines()
    cli = run_cli("run", "--meter", "nvm", "--batch-size", "0", "-o", str(tmp_path), timeout=120)
    assert cli.returncode == 2
    cli_lines = [ln.removeprefix("error: ") for ln in cli.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 2 and len(cli_lines) == 2
    assert sorted(ln.replace("run(meter=...)", "--meter").replace("run(batch_sizes=...)", "--batch-size")
                  for ln in lines) == sorted(cli_lines)  # fmt: skip
    assert not list(tmp_path.rglob("*.json"))  # nothing written for a config that does not validate


def test_load_errors(tmp_path):
    with pytest.raises(e3bench.E3Error, match="does not exist"):
        e3bench.load_records(tmp_path / "nope")
    with pytest.raises(e3bench.E3Error, match="no e3bench results"):
        e3bench.load_records(tmp_path)
    with pytest.raises(e3bench.E3Error, match="result file .* does not exist"):
        e3bench.load_record(tmp_path / "x.json")


def test_run_out_of_memory_raises_with_the_saved_record(tiny_models, tmp_path):
    """Batch sizes that did not fit: the record of the others is saved and comes with the error
    (FailedBatches, an E3Error whose line is the CLI's)."""
    from e3bench.core import registry
    from e3bench.sweep.finish import FailedBatches
    from test_run_limits import OomBackend

    registry.backends.register(OomBackend.name, OomBackend)
    try:
        with pytest.raises(FailedBatches) as info:
            e3bench.run(**{**_fast(tiny_models["decoder"], tmp_path), "backend": "oomfake", "batch_sizes": [1, 8]})
    finally:
        registry.backends.unregister(OomBackend.name)
    err = info.value
    assert isinstance(err, e3bench.E3Error)
    assert err.one_line().startswith("batch size 8 did not fit in host memory")
    assert f"batch size 1 measured and saved in {err.path}" in err.one_line()
    assert [g.batch_size for g in err.record.efficiency.generation] == [1]
    assert e3bench.load_record(err.path) == err.record
