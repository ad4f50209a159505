"""The manifest every record carries: the hardware/software fingerprint of the machine a run
used (filled by :func:`e3bench.bench.envinfo.collect`)."""

from __future__ import annotations

from pydantic import BaseModel


class GpuInfo(BaseModel):
    """One CUDA device as seen by NVML / torch (bytes, watts)."""

    index: int
    name: str
    memory_total_bytes: int | None = None
    driver: str | None = None
    cuda: str | None = None
    power_limit_w: float | None = None


class Manifest(BaseModel):
    """Versions, CPU, memory, GPUs, threads and machine load just before the run."""

    e3bench_version: str
    git_sha: str | None
    python: str
    platform: str
    libraries: dict[str, str]
    cpu_model: str
    cpu_cores_logical: int
    cpu_cores_physical: int | None
    cpu_affinity_cores: int | None
    memory_total_bytes: int | None
    gpus: list[GpuInfo]
    torch_threads: int | None
    #: the run's one CPU thread count, applied to every backend and executor (None: records
    #: from before it was resolved), and how it was found (core.host.THREADS_SOURCES)
    threads: int | None = None
    threads_source: str | None = None
    #: the thread counts the backend's engine reports after the load (setting → count)
    backend_threads: dict[str, int] = {}
    thread_env: dict[str, str]
    load_avg_1m_before: float | None
    hostname: str
    # other processes' CPU use just before the run, this process excluded (None: not sampled)
    other_cpu_busy_pct_before: float | None = None
