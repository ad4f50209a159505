"""Synthetic but valid result records for report tests: every figure chosen by the test, no model.

``record(...)`` builds a :class:`ResultRecord` whose config is a real ``RunConfig`` (so its hash is
the one a run would have); ``save(root, rec, samples=...)`` stores it and its samples file the
way a run does (:mod:`e3bench.results.store`). ``summary(...)`` builds a ConfigSummary directly.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from e3bench.config.run import RunConfig
from e3bench.core.timing import summarize
from e3bench.energy.accounting import EnergySummary
from e3bench.results import store
from e3bench.results.manifest import Manifest
from e3bench.results.schema import BatchResult, Efficiency, ModelInfo, RawSamples, ResultRecord, TaskResult

_ids = itertools.count()

MANIFEST = Manifest(e3bench_version="0.1.0", git_sha=None, python="3.11", platform="linux", libraries={},
                    cpu_model="test cpu", cpu_cores_logical=2, cpu_cores_physical=2, cpu_affinity_cores=2,
                    memory_total_bytes=2**33, gpus=[], torch_threads=2, thread_env={}, load_avg_1m_before=0.1,
                    hostname="test")  # fmt: skip


def batch(bs: int, decode: list[float], ept: float | None, *, method: str = "measured", cut: str | None = None,
          ttft: list[float] | None = None) -> BatchResult:
    """A batch result whose decode tokens/s iterations are ``decode`` and energy per token ``ept``."""
    n = len(decode)
    e2e = summarize([1000.0] * n)
    energy = None if ept is None else EnergySummary(window=f"bs{bs}", method=method, sensor="rapl" if method == "measured"
                                                    else "tdp-model", basis="net", ept_total_j_per_token=ept)  # fmt: skip
    return BatchResult(batch_size=bs, iterations=n, measured_s=float(n), cut_by_max_seconds=cut,
                       input_tokens_per_request_mean=64, output_tokens_per_request=16, e2e_ms=e2e,
                       ttft_ms=summarize(ttft or [50.0] * n), tpot_ms=summarize([20.0] * n), itl_ms=summarize([20.0] * n),
                       prefill_tokens_per_s=summarize([1000.0] * n), decode_tokens_per_s=summarize(decode),
                       throughput_tokens_per_s=sum(decode) / n, requests_per_s=1.0, energy=energy,
                       raw=RawSamples())  # fmt: skip


def record(*, dtype: str = "fp32", batches: list[BatchResult] | None = None, task: tuple | None = None,
           warnings: tuple[str, ...] = (), created: str | None = None, peak_rss: int = 600 * 2**20,
           weights: int = 270 * 2**20, truncated: int | None = None,
           rss_includes: str | None = "measured phase (after load)", **config) -> ResultRecord:
    """A successful record. ``task``: (name, metric, value, stderr, n_items); ``config``: RunConfig
    fields (``prompt_tokens=64``, ``tasks=("hellaswag",)``, ...)."""
    cfg = RunConfig(dtype=dtype, **config)
    gens = batches if batches is not None else [batch(1, [50.0, 52.0, 51.0], 0.03)]
    eff = Efficiency(load_time_s=1.0, load_note="", prompt_source="synthetic", generation=gens, peak_rss_bytes=peak_rss,
                     peak_rss_includes=rss_includes)  # fmt: skip
    tasks = []
    if task is not None:
        name, metric, value, stderr, n = task
        tasks.append(TaskResult(task=name, engine="e3bench", metrics={metric: value}, stderr={metric: stderr}, n_items=n,
                                duration_s=1.0, examples_per_s=n, samples_file="x" if cfg.log_samples else None,
                                truncated_items=truncated))  # fmt: skip
    i = next(_ids)
    return ResultRecord(run_id=f"run{i:04d}-{dtype}", created_utc=created or f"2026-11-30T10:{i % 60:02d}:00Z",
                        status="ok", config=cfg.model_dump(mode="json"), config_hash=cfg.config_hash(),
                        manifest=MANIFEST, model=ModelInfo(name="smollm2-135m", source="alias", path="p",
                                                           architecture="LlamaForCausalLM", model_type="llama",
                                                           parameters=135_000_000, weights_bytes=weights, dtype=dtype,
                                                           device="cpu"),
                        efficiency=eff, effectiveness=tasks, warnings=list(warnings))  # fmt: skip


def save(root: Path, rec: ResultRecord, *, sweep: str = "runs", samples: list[dict] | None = None) -> Path:
    """Store ``rec`` under ``root/sweep`` (and its first task's ``samples``) as a run would."""
    if samples is not None:
        store.save_samples(root, sweep, rec.run_id, rec.effectiveness[0].task, samples)
    return store.save(rec, root, sweep, stem=rec.run_id)


def summary(dtype: str, *, tasks: dict | None = None, batches: dict | None = None, **config):
    """A :class:`~e3bench.report.compare.ConfigSummary` of one configuration, built directly."""
    from e3bench.report.compare import ConfigSummary
    from e3bench.report.workload import workload_of

    cfg = RunConfig(dtype=dtype, **config).model_dump(mode="json")
    return ConfigSummary(label=f"m {dtype}", model="m", backend="pytorch", dtype=dtype, device="cpu",
                         config_hash=f"h-{dtype}", config=cfg, workload=workload_of(cfg), run_ids=[dtype],
                         batches=batches or {}, task_scores=tasks or {})  # fmt: skip
