"""Records for the training scenarios. Units are in field names (``_s``, ``_j``, ``_kwh``,
``_bytes``, ``_w``, ``_g``, ``tokens_per_s``); every figure says how it was obtained in the
docstring of the model holding it.

* :class:`FinetuneRecord` — one ``e3bench finetune`` run (``<output_dir>/finetune/<run_id>.json``).
* :class:`SuiteRecord` — one ``e3bench train`` suite (``<output_dir>/train/<suite_id>/suite.json``)
  holding a :class:`ConfigResult` per named configuration.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from e3bench.core.timing import Stats
from e3bench.energy.accounting import EnergyRun, EnergySummary
from e3bench.results.manifest import Manifest

#: 2: energy figures are :class:`EnergySummary` (as in run records), run-level meter facts an
#: :class:`EnergyRun`; ``ConfigResult.energy`` is ``train_energy``. Schema-1 records still read.
TRAIN_SCHEMA_VERSION = 2


def basis_energy_j(e: EnergySummary | None) -> float | None:
    """The summary's energy on its basis, joules: net when known, else gross (None when
    missing or not measured)."""
    if e is None:
        return None
    return e.net_energy_j if e.net_energy_j is not None else e.gross_energy_j


def _upgrade_energy(d: Any, window: str) -> Any:
    """A schema-1 ``EnergyFigures`` dict as an :class:`EnergySummary` dict (same gross/net/
    method/sensor/basis/CO2e fields; ``j_per_token`` → ``ept_total_j_per_token``,
    ``j_per_sample`` → ``energy_per_request_j``)."""
    if not isinstance(d, dict) or "window" in d:
        return d
    d = {k: v for k, v in d.items() if k not in ("windows", "gross_energy_kwh", "net_energy_kwh")}
    d["window"] = window
    d["ept_total_j_per_token"] = d.pop("j_per_token", None)
    d["energy_per_request_j"] = d.pop("j_per_sample", None)
    return d


def _upgrade_run(data: Any, buckets: dict[str, str]) -> Any:
    """Read a schema-1 training record: run-level ``energy_meter``/``energy_meter_reason``/
    ``idle`` become ``energy`` (:class:`EnergyRun`); energy figures become summaries."""
    if not isinstance(data, dict) or data.get("schema_version", TRAIN_SCHEMA_VERSION) >= 2:
        return data
    data = dict(data)
    if "energy_meter" in data and "energy" not in data:
        data["energy"] = {
            "meter": data.pop("energy_meter"), "meter_choice_reason": data.pop("energy_meter_reason", ""),
            "idle": data.pop("idle", None),
        }  # fmt: skip
    for old, (new, window) in buckets.items():
        if old in data:
            data[new] = _upgrade_energy(data.pop(old), window)
    return data


class MemoryFigures(BaseModel):
    """Peak memory during the measured part of a run.

    ``peak_rss_bytes``: highest resident set size seen by a 20 Hz sampler during the run
    (``rss_start_bytes`` is RSS when it started, so ``peak_rss_bytes - rss_start_bytes`` is what
    the run added). ``process_peak_rss_bytes``: getrusage lifetime peak of the process (includes
    anything that ran before). ``peak_device_memory_bytes``: ``torch.cuda.max_memory_allocated``
    after a reset at the start (CUDA only); ``device_memory_reserved_bytes`` the allocator's peak
    reservation.
    """

    rss_start_bytes: int
    peak_rss_bytes: int
    process_peak_rss_bytes: int
    rss_method: str = "RSS (/proc/self/statm) sampled at 20 Hz during the run"
    peak_device_memory_bytes: int | None = None
    device_memory_reserved_bytes: int | None = None
    device_memory_method: str | None = None


# ----------------------------------------------------------------------------- finetune
class EvalPoint(BaseModel):
    """One validation evaluation. Times and energy are cumulative *training* figures up to this
    point (evaluation time and energy excluded; they are in ``eval_s`` / ``eval_energy_j``)."""

    step: int
    samples_seen: int
    tokens_seen: int
    train_time_s: float
    wall_time_s: float  # training + evaluations so far (excludes model load and idle baseline)
    train_energy_j: float | None  # on the energy basis of the record (net when available)
    train_energy_gross_j: float | None
    accuracy: float
    eval_loss: float
    n_items: int
    eval_s: float
    eval_energy_j: float | None = None
    #: the task's standard metrics beside accuracy (CB ``f1``; MultiRC ``f1a``, ``em``), fractions
    metrics: dict[str, float] = Field(default_factory=dict)


class MajorityMargin(BaseModel):
    """How far an accuracy is above the majority-class rate of the same held-out items:
    ``margin = accuracy - majority_class_accuracy`` with a 95 % interval (the Wilson score
    interval of the accuracy over ``n_items``, minus the majority rate, which is fixed by the
    items); ``clear`` when the whole interval is above zero."""

    which: str  # which evaluation (e.g. "final evaluation, step 300")
    accuracy: float
    majority_class_accuracy: float
    n_items: int
    margin: float
    ci95_low: float
    ci95_high: float
    clear: bool
    method: str


class TargetResult(BaseModel):
    """Time/energy to a target validation accuracy.

    When ``reached`` is false, ``best_accuracy``/``best_step`` say how far it got and the
    ``budget_*`` fields what was spent trying; the ``*_to_target*`` fields are then ``None``.
    Accuracy is only checked at evaluation points, so the figures are upper bounds with the
    resolution of ``--eval-every``.
    """

    target_accuracy: float
    reached: bool
    reached_at_step: int | None = None
    time_to_target_s: float | None = None  # training time (evaluations excluded)
    wall_time_to_target_s: float | None = None
    energy_to_target_j: float | None = None
    energy_to_target_kwh: float | None = None
    samples_to_target: int | None = None
    tokens_to_target: int | None = None
    best_accuracy: float
    best_step: int
    budget_steps: int
    budget_samples: int
    budget_tokens: int
    budget_train_time_s: float
    budget_energy_j: float | None = None
    note: str | None = None


class FinetuneRecord(BaseModel):
    """One ``e3bench finetune`` run: what ran (config, model, classification method, data),
    speed (tokens/s and samples/s of training steps), every evaluation, the target result,
    memory and energy (training and evaluation windows, idle-subtracted where possible)."""

    schema_version: int = TRAIN_SCHEMA_VERSION
    kind: Literal["finetune"] = "finetune"
    run_id: str
    created_utc: str
    status: Literal["ok", "diverged", "failed"]
    error: str | None = None
    config: dict[str, Any]
    config_hash: str
    manifest: Manifest
    model: dict[str, Any]  # name, path, architecture, model_type, parameters, head
    method: dict[str, Any]  # how classification is done for this architecture (documented)
    data: dict[str, Any]  # sources, split sizes, majority-class accuracy
    trainable_parameters: int
    total_parameters: int
    trainable_fraction: float
    steps: int
    samples_seen: int
    tokens_seen: int
    train_time_s: float
    train_tokens_per_s: float
    train_samples_per_s: float
    step_time_ms: Stats | None = None
    load_time_s: float
    resumed_from_step: int | None = None
    train_loss_curve: list[tuple[int, float]] = []  # (step, mean loss since previous point)
    evals: list[EvalPoint] = []
    final_accuracy: float | None = None
    best_accuracy: float | None = None
    #: the final evaluation's accuracy against the majority class, with a CI (did it learn?)
    vs_majority: MajorityMargin | None = None
    target: TargetResult | None = None
    memory: MemoryFigures | None = None
    energy: EnergyRun | None = None  # meter, why it was chosen, idle baseline
    train_energy: EnergySummary | None = None  # training windows of this session
    eval_energy: EnergySummary | None = None
    checkpoint_dir: str | None = None
    warnings: list[str] = Field(default_factory=list)
    duration_s: float = 0.0

    @model_validator(mode="before")
    @classmethod
    def _schema_1(cls, data: Any) -> Any:
        return _upgrade_run(data, {"train_energy": ("train_energy", "train"), "eval_energy": ("eval_energy", "eval")})


# -------------------------------------------------------------------------------- train
class GradNormStats(BaseModel):
    """Global L2 gradient norm before clipping, every step. A *spike* is a step whose norm
    exceeds ``spike_factor`` × the median of the previous ``window`` steps."""

    stats: Stats | None
    spike_factor: float
    window: int
    spikes: list[tuple[int, float]] = []  # (step, norm)
    clipped_steps: int = 0
    clip_threshold: float | None = None


class CurvePoint(BaseModel):
    """A point of a loss curve: after ``step`` steps and ``tokens`` training tokens, the loss
    (cross-entropy, nats per token)."""

    step: int
    tokens: int
    loss: float


class ConfigResult(BaseModel):
    """One named configuration of the training suite.

    ``tokens_per_s``: training tokens / training wall time (evaluation excluded; device
    synchronised at both ends of each step). ``optimizer_state_bytes``: bytes of every tensor
    held in the optimizer state (8-bit states counted at 1 byte/element, GaLore projection
    matrices included), measured after the last step. ``loss_at_equal_tokens`` compares
    validation losses with the baseline at the baseline's evaluation token counts
    (linear interpolation); ``tokens_to_baseline_final_loss`` is how many tokens this config
    needed to reach the baseline's final validation loss (None if never).
    """

    name: str
    file: str | None = None
    description: str = ""
    expected: str = ""
    status: Literal["ok", "diverged", "skipped", "failed"]
    reason: str | None = None
    spec: dict[str, Any] = {}
    optimizer: str = ""
    optimizer_detail: str = ""
    parameters: int = 0
    steps: int = 0
    tokens: int = 0
    train_time_s: float = 0.0
    tokens_per_s: float | None = None
    #: tokens per step / median step time: robust to bursts of load from other processes
    tokens_per_s_median_step: float | None = None
    step_time_ms: Stats | None = None
    train_loss_curve: list[CurvePoint] = []
    val_loss_curve: list[CurvePoint] = []
    final_val_loss: float | None = None
    best_val_loss: float | None = None
    final_train_loss: float | None = None
    mtp_aux_loss_final: float | None = None
    optimizer_state_bytes: int | None = None
    parameter_bytes: int | None = None
    gradient_bytes: int | None = None
    grad_norm: GradNormStats | None = None
    memory: MemoryFigures | None = None
    train_energy: EnergySummary | None = None  # training windows only
    eval_energy: EnergySummary | None = None
    vs_baseline: dict[str, Any] = {}
    warnings: list[str] = []
    duration_s: float = 0.0
    #: issue 19: the run's seed; backward-pass time per step (ms, device synchronised around it);
    #: Collider's achieved sparsity; memory split (weights, gradients, optimizer state,
    #: activations, bytes, with its method); NVML utilization (%, CUDA); the gradient-norm band
    #: check; the load other processes put on the machine while this run trained
    seed: int | None = None
    backward_time_ms: Stats | None = None
    collider: dict[str, Any] | None = None
    memory_breakdown: dict[str, Any] | None = None
    gpu_utilization: dict[str, Any] | None = None
    grad_norm_band: dict[str, Any] | None = None
    load: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _schema_1(cls, data: Any) -> Any:
        if isinstance(data, dict) and "energy" in data and "train_energy" not in data:
            data = dict(data)
            data["train_energy"] = _upgrade_energy(data.pop("energy"), f"{data.get('name', '')}/train")
            data["eval_energy"] = _upgrade_energy(data.get("eval_energy"), f"{data.get('name', '')}/eval")
        return data


class SuiteRecord(BaseModel):
    """One ``e3bench train`` suite: corpus, tokenizer, device, the meter with its idle
    baseline, and one :class:`ConfigResult` per configuration (baseline first)."""

    schema_version: int = TRAIN_SCHEMA_VERSION
    kind: Literal["train-suite"] = "train-suite"
    suite_id: str
    created_utc: str
    baseline: str | None
    corpus: dict[str, Any]
    tokenizer: dict[str, Any]
    device: str
    precision: str
    manifest: Manifest
    energy: EnergyRun | None = None  # meter, why it was chosen, idle baseline (one for the suite)
    configs: list[ConfigResult] = []
    warnings: list[str] = Field(default_factory=list)
    duration_s: float = 0.0
    #: issue 19: the seeds run (the first one's results are ``configs``; the others' are
    #: ``repeats``), and one verdict per claim (:func:`e3bench.train.shared.claims.judge`)
    seeds: list[int] = [0]
    repeats: list[ConfigResult] = []
    claims: list[dict[str, Any]] = []

    @model_validator(mode="before")
    @classmethod
    def _schema_1(cls, data: Any) -> Any:
        return _upgrade_run(data, {})
