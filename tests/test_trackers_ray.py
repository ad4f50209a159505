"""Trackers (W&B offline, MLflow on local SQLite) and the Ray executor on a local instance."""

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
    recs = list(RayExecutor(num_cpus=2).map(cfgs))
    assert sorted(r.config_hash for r in recs) == sorted(c.config_hash() for c in cfgs)
    assert all(r.status == "ok" for r in recs)
    assert completed_hashes(tmp_path / "ray") == {c.config_hash() for c in cfgs}
