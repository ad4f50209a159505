"""The result record: one JSON file per run. Units are in field names (``_ms``, ``_s``, ``_j``,
``_w``, ``_bytes``, ``_g``, ``tokens_per_s``); every derived number says how it was obtained in
the docstring of the model holding it, and raw samples are kept so anything can be recomputed.

``SCHEMA_VERSION`` changes whenever a field changes meaning or is removed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from e3bench.results.manifest import Manifest
from e3bench.energy.accounting import EnergyRun, EnergySummary
from e3bench.results.roofline import Roofline
from e3bench.core.timing import Stats

SCHEMA_VERSION = 1


class ModelInfo(BaseModel):
    """The model as loaded: where it came from, its architecture, size (parameters, weight bytes)."""

    name: str
    source: str  # alias | hub | local-dir | gguf
    path: str
    gguf_file: str | None = None
    architecture: str
    model_type: str
    parameters: int
    weights_bytes: int
    dtype: str
    device: str
    notes: list[str] = []


class RawSamples(BaseModel):
    """Every measured iteration, in measurement order."""

    e2e_ms: list[float] = []
    ttft_ms: list[float] = []
    #: inter-token gaps of each iteration (clock at token k+1 minus token k)
    itl_ms: list[list[float]] = []
    output_tokens: list[int] = []


class BatchResult(BaseModel):
    """Generation speed at one batch size.

    TTFT: request handed to the backend → first decode step's token available (runner clock in
    the backend's per-token callback). TPOT = (E2E − TTFT) / (n_out − 1). ITL: gaps between
    consecutive tokens. prefill_tokens_per_s = batch × prompt tokens / TTFT.
    decode_tokens_per_s = batch × (n_out − 1) / (E2E − TTFT).
    throughput_tokens_per_s = all output tokens / summed E2E over the measured iterations.
    """

    batch_size: int
    iterations: int
    measured_s: float
    #: --min-iters of the run; None in records made before it was stored
    min_iters_asked: int | None = None
    #: why the --max-seconds cap ended this batch size before --min-iters / --min-seconds
    #: were reached (None: the stopping rule was met)
    cut_by_max_seconds: str | None = None
    #: wall seconds of the untimed warm-up iterations at this batch size (``warmup_iters`` of
    #: them, synchronized, outside the metered window; not in TTFT/TPOT/E2E): whatever a backend
    #: does once for new shapes is here (pytorch-compile: torch.compile of the decode step and the
    #: static KV cache's allocation); None in records made before it was stored, or no warm-up
    warmup_s: float | None = None
    input_tokens_per_request_mean: float
    output_tokens_per_request: float
    e2e_ms: Stats
    ttft_ms: Stats | None
    tpot_ms: Stats | None
    itl_ms: Stats | None
    prefill_tokens_per_s: Stats | None
    decode_tokens_per_s: Stats | None
    throughput_tokens_per_s: float
    requests_per_s: float
    roofline_fraction: float | None = None
    energy: EnergySummary | None = None
    energy_cross_check: EnergySummary | None = None  # same window, second meter (if asked)
    raw: RawSamples


class ForwardResult(BaseModel):
    """Encoder-only models: latency of one forward pass over the batch."""

    batch_size: int
    iterations: int
    measured_s: float
    #: --min-iters of the run; None in records made before it was stored
    min_iters_asked: int | None = None
    #: why the --max-seconds cap ended this batch size before --min-iters / --min-seconds
    #: were reached (None: the stopping rule was met)
    cut_by_max_seconds: str | None = None
    #: wall seconds of the untimed warm-up iterations at this batch size (``warmup_iters`` of
    #: them, synchronized, outside the metered window; not in TTFT/TPOT/E2E): whatever a backend
    #: does once for new shapes is here (pytorch-compile: torch.compile of the decode step and the
    #: static KV cache's allocation); None in records made before it was stored, or no warm-up
    warmup_s: float | None = None
    input_tokens_per_request_mean: float
    latency_ms: Stats
    tokens_per_s: float  # input tokens processed per second
    energy: EnergySummary | None = None
    energy_cross_check: EnergySummary | None = None
    raw_latency_ms: list[float]


class FailedBatch(BaseModel):
    """A batch size that could not be measured (it did not fit in memory, or a larger one before
    it did not); the batch sizes measured before it are kept in the record."""

    batch_size: int
    error: str


class Efficiency(BaseModel):
    """Speed and memory of one run: load time, one result per batch size, peaks, roofline."""

    load_time_s: float
    load_note: str
    #: wall seconds of the one untimed batch-1 request (at most 4 new tokens) that primes the model
    #: before the idle baseline (synchronized; outside every metered window); None when no idle
    #: baseline was metered, so no priming request ran. For pytorch-compile it includes a first
    #: torch.compile (the warm-ups' ``warmup_s`` then hold any recompilation for new shapes)
    priming_s: float | None = None
    prompt_source: str
    generation: list[BatchResult] = []
    forward: list[ForwardResult] = []
    #: batch sizes that ran out of memory (and larger ones skipped after), with the reason
    failed_batches: list[FailedBatch] = []
    #: peak RSS of the measured phase (after load): ``peak_rss_includes`` names what it covers,
    #: ``peak_rss_method`` how it was read; the process lifetime peak (load, conversions, the
    #: roofline probe, caches) is ``peak_rss_lifetime_bytes``. Old records: lifetime only.
    peak_rss_bytes: int
    peak_rss_method: str = "getrusage(RUSAGE_SELF).ru_maxrss: process lifetime peak, load included"
    peak_rss_includes: str | None = None
    peak_rss_lifetime_bytes: int | None = None
    peak_device_memory_bytes: int | None = None
    peak_device_memory_method: str | None = None
    roofline: Roofline | None = None


class TaskResult(BaseModel):
    """One task's scores (each metric with its standard error), speed, energy and samples file.

    ``task`` is unique within a record: a task over a user's file is named after it
    (``jsonl_gen[qa]``, or its ``label`` option) and a repeated name gets ``#2``, ``#3``.
    ``duration_s`` and ``examples_per_s`` (``n_items / duration_s``) are of the task's own
    metered window unless ``duration_basis`` says they are apportioned (an lm-eval group's
    subtasks share the group's window; their energy is then on the group's row and None here).
    ``truncated_items``: items whose prompt was cut on the left to fit the model's context,
    lm-eval's rule (``max_length - max_new_tokens`` tokens kept); None where not counted (tasks
    that do not generate, older records). ``data_source`` / ``data_sha256``: the data file the
    items came from and the SHA-256 of its bytes, where the task reads a user's file.
    Fields added after schema_version 1 are optional, so older records still load.
    """

    task: str
    engine: str
    metrics: dict[str, float]
    stderr: dict[str, float]
    n_items: int
    duration_s: float
    examples_per_s: float
    duration_basis: str | None = None
    energy: EnergySummary | None = None
    energy_cross_check: EnergySummary | None = None
    details: dict[str, Any] = {}
    samples_file: str | None = None
    truncated_items: int | None = None
    data_source: str | None = None
    data_sha256: str | None = None


class ResultRecord(BaseModel):
    """One run, stored as ``<output_dir>/<sweep>/<stem>.json`` (:mod:`e3bench.results.store`):
    config and its hash, the machine (manifest), the model, efficiency, energy facts and task
    results; ``status="failed"`` records carry ``error`` and nothing measured."""

    schema_version: int = SCHEMA_VERSION
    run_id: str
    created_utc: str
    status: Literal["ok", "failed"]
    error: str | None = None
    config: dict[str, Any]
    config_hash: str
    manifest: Manifest
    model: ModelInfo | None = None
    efficiency: Efficiency | None = None
    energy: EnergyRun | None = None
    effectiveness: list[TaskResult] = []
    warnings: list[str] = Field(default_factory=list)
    duration_s: float = 0.0


if TYPE_CHECKING:
    from e3bench.config.run import RunConfig


def failed_record(cfg: RunConfig, error: str, manifest: Manifest) -> ResultRecord:
    """The record of a run that could not complete (a sweep keeps going and stores it).

    ``error`` is the one-line reason (an :class:`E3Error`'s ``one_line()``, a crash tail);
    ``manifest`` describes the machine (``e3bench.bench.envinfo.collect(sample_cpu=False)``: a
    run that never ran has no contention to report). ``run_id`` and ``created_utc`` are now.
    """
    from e3bench.core.ids import run_id, utc_now_iso

    config_hash = cfg.config_hash()
    return ResultRecord(
        run_id=run_id(config_hash),
        created_utc=utc_now_iso(),
        status="failed",
        error=error,
        config=cfg.model_dump(mode="json"),
        config_hash=config_hash,
        manifest=manifest,
    )


# ------------------------------------------------------------------ serving (e3bench serve)
class ServeRequest(BaseModel):
    """One request of a serving level as the client timed it (ms, clock of ``serve.client``):
    ``start_s`` is seconds from the level's start; ``error_kind`` None for a completed request."""

    start_s: float
    ttft_ms: float | None = None
    e2e_ms: float | None = None
    itl_ms: list[float] = []
    output_tokens: int = 0
    error_kind: str | None = None


class ServeLevel(BaseModel):
    """One load level of ``e3bench serve``: a closed loop at ``concurrency`` or an open loop at
    ``rate`` requests/s (``arrival`` poisson or constant).

    Latencies (:class:`Stats`, CIs of the mean) are over completed requests: TTFT = first token
    chunk − request start, ITL = gaps between token chunks, TPOT = (E2E − TTFT) / (output
    tokens − 1), E2E = end of stream − start. ``achieved_rate_per_s`` = completed requests /
    ``duration_s`` (first start → last end); ``output_tokens_per_s`` = output tokens of completed
    requests / ``duration_s``; ``tokens_source`` says where token counts came from (server usage
    or the tokenizer). Goodput: ``goodput_share`` of *sent* requests completed within every SLO of
    the record (Wilson 95 % interval), ``goodput_per_s`` = those requests / ``duration_s``.
    ``energy`` is the level's metered window (idle baseline: server loaded and idle);
    ``client_cpu_s`` the client process's CPU time over the level.
    """

    load: Literal["concurrency", "rate"]
    value: float
    label: str
    arrival: str | None = None
    status: Literal["ok", "failed"] = "ok"
    error: str | None = None
    requests_sent: int
    requests_ok: int
    errors_by_kind: dict[str, int] = {}
    duration_s: float
    offered_rate_per_s: float | None = None
    achieved_rate_per_s: float
    output_tokens_per_s: float
    input_tokens: int = 0
    output_tokens: int = 0
    tokens_source: str = ""
    tokens_check: str | None = None
    ttft_ms: Stats | None = None
    tpot_ms: Stats | None = None
    itl_ms: Stats | None = None
    e2e_ms: Stats | None = None
    goodput_share: float | None = None
    goodput_ci95: tuple[float, float] | None = None
    goodput_per_s: float | None = None
    energy: EnergySummary | None = None
    client_cpu_s: float | None = None
    client_cpu_utilisation: float | None = None
    requests: list[ServeRequest] = []


class ServeRecord(BaseModel):
    """One ``e3bench serve`` session, stored beside run records as a document of ``kind``
    ``serve`` (:mod:`e3bench.results.store`): the server (``url``, how it was launched and its
    log file), the load settings and SLOs, one :class:`ServeLevel` per level (a failed level is
    kept with its error, the levels before it whole), quality tasks scored through the same
    server, and the energy facts (meter, idle baseline)."""

    kind: Literal["serve"] = "serve"
    schema_version: int = SCHEMA_VERSION
    run_id: str
    created_utc: str
    status: Literal["ok", "failed"]
    error: str | None = None
    url: str
    model: str
    launch: dict[str, Any] | None = None
    settings: dict[str, Any] = {}
    slo: dict[str, float] = {}
    manifest: Manifest | None = None
    energy: EnergyRun | None = None
    levels: list[ServeLevel] = []
    effectiveness: list[TaskResult] = []
    warnings: list[str] = Field(default_factory=list)
    duration_s: float = 0.0
