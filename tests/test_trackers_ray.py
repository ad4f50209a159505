"""Trackers (W&B offline, MLflow on local SQLite) and the Ray executor on a local instance."""

import os

import pytest

from e3bench.config.run import build_config
from e3bench.bench.runner import run_one


@pytest.fixture(scope="module")
def record(tiny_models):
    cfg = build_config(overrides=dict(model=str(tiny_models["decoder"]), batch_sizes="1", max_new_tokens=3,
                                      prompt_tokens=8, min_iters=2, min_seconds=0, meter="none", idle_seconds=0))  # fmt: skip
    return run_one(cfg)


def test_metrics_have_units_and_batch_prefix(record):
    from e3bench.results.trackers import metrics_of

    m = metrics_of(record)
    assert m["bs1/decode_tokens_per_s_mean"] > 0 and m["bs1/ttft_ms_mean"] > 0


def test_wandb_offline(record, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    from e3bench.results.trackers import log

    (line,) = log(record, ("wandb",), output_dir=str(tmp_path))
    assert line.startswith("wandb run") and "offline" in line, line
    assert list(tmp_path.rglob("*.wandb"))


def test_mlflow_sqlite(record, tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    from e3bench.results.trackers import log

    (line,) = log(record, ("mlflow",), project="t", output_dir=str(tmp_path))
    assert line.startswith("mlflow run"), line
    client = mlflow.tracking.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("t")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.data.metrics["bs1.decode_tokens_per_s_mean"] > 0
    assert run.data.params["config_hash"] == record.config_hash


def test_unknown_tracker_is_a_config_error():
    from e3bench.core.errors import E3Error

    with pytest.raises(E3Error, match="unknown tracker"):
        build_config(overrides=dict(trackers="tensorboard"))


@pytest.mark.slow
def test_ray_executor_local_instance(tiny_models, tmp_path):
    pytest.importorskip("ray")
    from e3bench.sweep.executors.ray import RayExecutor
    from e3bench.results.store import completed_hashes

    cfgs = [
        build_config(overrides=dict(model=str(tiny_models["decoder"]), batch_sizes="1", max_new_tokens=3, seed=s,
                                    prompt_tokens=8, min_iters=2, min_seconds=0, meter="none", idle_seconds=0,
                                    output_dir=str(tmp_path), sweep="ray"))  # fmt: skip
        for s in (0, 1)
    ]
    from e3bench.core.host import resolve_threads

    recs = list(RayExecutor(num_cpus=2).map(cfgs))
    assert sorted(r.config_hash for r in recs) == sorted(c.config_hash() for c in cfgs)
    assert all(r.status == "ok" for r in recs)
    # the runs had this process's thread settings, not Ray's OMP_NUM_THREADS=1 (S15: 57x faster)
    n = resolve_threads(None, os.environ)[0]
    assert {(r.manifest.thread_env["OMP_NUM_THREADS"], r.manifest.torch_threads) for r in recs} == {(str(n), n)}
    assert completed_hashes(tmp_path / "ray") == {c.config_hash() for c in cfgs}


@pytest.fixture
def fake_tracker():
    """A tracker registered at run time that remembers how it was called."""
    from e3bench.core import registry

    calls = []

    def log(rec, *, project, group, output_dir):
        calls.append({"run_id": rec.run_id, "project": project, "group": group, "output_dir": output_dir})
        return f"fake run {rec.run_id}"

    registry.trackers.register("fake", log)
    yield calls
    registry.trackers.unregister("fake")


def test_one_finish_rule_for_run_and_sweep(record, tmp_path, fake_tracker):
    """`e3bench run` and the sweep worker both end in finish_run: same project, files by rule."""
    from e3bench.sweep.finish import finish_run

    one_off = build_config(overrides=dict(output_dir=str(tmp_path), trackers="fake"))
    swept = build_config(overrides=dict(output_dir=str(tmp_path), trackers="fake", sweep="s1"))
    a = finish_run(record, one_off, resumable=False)
    b = finish_run(record, swept, resumable=True)
    assert a.path == tmp_path / "runs" / f"{record.run_id}.json"
    assert b.path == tmp_path / "s1" / f"{swept.config_hash()}.json"
    assert a.tracker_lines == b.tracker_lines == [f"fake run {record.run_id}"]
    assert [(c["project"], c["group"]) for c in fake_tracker] == [("e3bench", "runs"), ("e3bench", "s1")]
    failed = record.model_copy(update={"status": "failed"})
    assert finish_run(failed, swept, resumable=True).tracker_lines == []  # only ok records are logged


def test_cli_run_and_sweep_worker_use_the_finish_rule(tiny_models, tmp_path, fake_tracker):
    """The two paths that used to disagree (project 'e3bench' vs the sweep's name)."""
    from typer.testing import CliRunner

    from e3bench.cli.app import app
    from e3bench.sweep.executors.worker import run_and_store

    fast = dict(model=str(tiny_models["decoder"]), batch_sizes="1", max_new_tokens=2, prompt_tokens=8, min_iters=1,
                min_seconds=0, warmup_iters=0, meter="none", idle_seconds=0, output_dir=str(tmp_path), trackers="fake")  # fmt: skip
    flags = [x for k, v in fast.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    flags = [f.replace("--batch-sizes", "--batch-size") for f in flags]
    res = CliRunner().invoke(app, ["run", *flags, "--tasks", "none", "-q"])
    assert res.exit_code == 0, res.output
    assert f"tracker: fake run {fake_tracker[0]['run_id']}" in res.output
    rec = run_and_store(build_config(overrides={**fast, "sweep": "grid1"}))
    assert [(c["project"], c["group"]) for c in fake_tracker] == [("e3bench", "runs"), ("e3bench", "grid1")]
    assert (tmp_path / "runs" / f"{fake_tracker[0]['run_id']}.json").exists()
    assert (tmp_path / "grid1" / f"{rec.config_hash}.json").exists()
