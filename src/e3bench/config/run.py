"""Validated, frozen run configuration: YAML file < CLI flags < ``--set key=value``.

:func:`build_config` is the only way configs are made (``e3bench run``, sweeps, benchmarks):
it merges the layers, validates the schema (:class:`RunConfig`) AND the names against this
installation (:mod:`e3bench.config.validate`), and reports every problem at once, each at the
YAML line or flag it came from. No I/O beyond reading the YAML the user names.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from e3bench.config.layers import (Layer, Locate, at, base_layers, duplicate_problems, flags_layer, set_layer, where_of,
                                   yaml_layer)
from e3bench.config.validate import Problem, raise_problems, semantic_checks
from e3bench.config.values import ALIASES, DEFAULT_LIMIT, DEFAULT_TASKS, FLAGS, NO_TASKS, coerce, flag_of
from e3bench.core.devices import device_problem
from e3bench.core.errors import E3Error, unknown_name
from e3bench.core.ids import stable_hash
from e3bench.results.labels import NOT_IDENTITY

DTYPES = ("fp32", "bf16", "fp16", "int8", "int4")
#: backend-specific precision names (llama.cpp GGUF types such as q4_k_m, q8_0, f16; "native" =
#: the file as shipped). Whether a backend can run one is its capabilities' call, not ours.
_BACKEND_PRECISION = re.compile(r"^(native|f16|f32|i?q[1-8](_[0-9a-z]+)*)$")


class RunConfig(BaseModel):
    """Everything that defines one run. Hashed (minus output location) to identify the run.

    The model checks types and ranges only, so records written elsewhere (other plugins) always
    load; names are checked against this installation by :func:`build_config`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field("smollm2-135m", min_length=1, description="alias, Hugging Face id, local dir or .gguf file")
    backend: str = Field("pytorch", description="backend name (see `e3bench models`)")
    backend_options: dict[str, Any] = Field(
        {},
        description="keyword options for the backend, e.g. n_ctx (llamacpp), compile (pytorch), "
        "gpu_memory_utilization (vllm); --backend-option key=value or --set backend_options.key=value",
    )
    device: str = Field("cpu", description="cpu | cuda | cuda:N (N = the GPU index CUDA sees; cuda = cuda:0)")
    dtype: str = Field("fp32", description="fp32|bf16|fp16|int8|int4, or a backend's own (q4_k_m, native)")
    batch_sizes: tuple[int, ...] = Field((1, 4), description="batch sizes to measure, comma list, e.g. 1,4,8")
    prompt_tokens: int = Field(128, description="synthetic prompt length in tokens")
    max_new_tokens: int = Field(32, description="fixed output length for speed runs")
    prompts: str | None = Field(
        None, description="None = synthetic; a text file (one prompt per line); or dataset:field"
    )
    warmup_iters: int = Field(1, description="untimed iterations per batch size")
    min_iters: int = Field(5, description="measure at least this many iterations ...")
    min_seconds: float = Field(5.0, description="... and at least this many seconds")
    max_seconds: float = Field(
        120.0,
        description="cap per batch size (s): measuring stops once this long has passed and 2 iterations exist, "
        "even below --min-iters / --min-seconds (the record and the output then say the cap cut it)",
    )
    threads: int | None = Field(
        None, description="CPU threads of every backend (unset: OMP_NUM_THREADS, else the physical cores available)"
    )
    seed: int = Field(0, description="random seed (prompt sampling, task sampling)")
    meter: str = Field("auto", description="auto|nvml|rapl|estimate|codecarbon|none (or a plugin meter)")
    cross_check_meter: str | None = Field(
        None, description="a second meter over the same windows, e.g. codecarbon (labelled cross-check)"
    )
    cpu_tdp_w: float | None = Field(None, description="CPU TDP in watts for the estimate meter")
    meter_timeout_s: float = Field(
        60.0,
        description="most seconds one energy-meter read may take; a meter that hangs longer makes the energy "
        "of that window and later ones missing (with the reason), and the run goes on; 0 = wait forever",
    )
    idle_seconds: float = Field(3.0, description="idle-baseline measurement before the workload (s)")
    region: str | None = Field(None, description="grid region for CO2e, e.g. DE, US-CA (unset = world average)")
    tasks: tuple[str, ...] = Field(
        (),
        description=f"quality tasks, comma list, e.g. mmlu,hellaswag,gsm8k; 'none' (or '') = no task. e3bench run's "
        f"default: {','.join(DEFAULT_TASKS)}, first {DEFAULT_LIMIT} items (skipped with a note when its data is "
        "nowhere: neither $E3BENCH_DATA_DIR nor the hub)",
    )
    limit: int | None = Field(None, description="items per task (first N); unset = all (e3bench run's default task: "
                              f"{DEFAULT_LIMIT})")
    log_samples: bool = Field(False, description="save per-item predictions")
    engine: Literal["e3bench", "lm-eval"] = Field("e3bench", description="e3bench | lm-eval")
    num_fewshot: int | None = Field(
        None, description="--engine lm-eval: few-shot examples for every task (unset = each task's own); "
        "e3bench tasks take it per task, e.g. mmlu:num_fewshot=5",
    )
    include_path: str | None = Field(
        None, description="--engine lm-eval: a folder of your own lm-eval task YAMLs (lm-eval's --include_path)"
    )
    trackers: tuple[str, ...] = Field((), description="wandb,mlflow: log each run's metrics there too")
    output_dir: str = Field("results", description="results directory")
    sweep: str = Field("runs", description="sub-directory of output_dir grouping runs (one folder name)")
    cache_dir: str | None = Field(None, description="converted/exported/quantized models (default ~/.cache/e3bench)")
    trust_remote_code: bool = Field(
        False, description="let the model folder's own Python code run (transformers/vLLM auto_map); off: such models are refused"
    )
    revision: str | None = Field(None, description="hub model revision: a branch, tag or commit (unset = the default branch)")
    chat_template: bool = Field(
        False, description="format task prompts with the tokenizer's chat template (instruct models; lm-eval's "
        "--apply_chat_template); off = plain text prompts"
    )
    score_batch_size: int | Literal["auto"] | None = Field(
        None, description="requests per batch when tasks score log-likelihoods or generate (gsm8k, squad, jsonl_gen): N, "
        "or auto = the largest scoring batch that fits (CUDA: halve on out-of-memory; CPU: a memory budget; generation: "
        "16); unset = 16"
    )
    pue: float = Field(
        1.0, description="data-centre Power Usage Effectiveness (CodeCarbon's pue): CO2e uses facility energy = "
        "measured IT energy × PUE; 1.0 = IT energy only"
    )
    #: fields :func:`build_config` filled with ``e3bench run``'s defaults (not asked by the user)
    _defaulted: frozenset[str] = PrivateAttr(frozenset())

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, v: str) -> str:
        v = v.lower()
        if v not in DTYPES and not _BACKEND_PRECISION.match(v):
            raise ValueError(
                f"unknown precision {v!r}: use one of {', '.join(DTYPES)}, or a GGUF type such as q4_k_m / q8_0 / f16"
            )
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        problem = device_problem(v)
        if problem is not None:
            raise ValueError(problem)
        return v

    @field_validator("score_batch_size", mode="before")
    @classmethod
    def _score_batch(cls, v: Any) -> Any:
        if v is None:
            return v
        text = str(v).strip().lower()
        if text == "auto":
            return "auto"
        if isinstance(v, bool) or not text.isdigit() or int(text) < 1:
            raise ValueError(f"must be a whole number ≥ 1 or auto (got {v!r}); leave it unset for the default")
        return int(text)

    @field_validator("pue")
    @classmethod
    def _pue(cls, v: float) -> float:
        if not (math.isfinite(v) and v >= 1.0):
            raise ValueError(f"a PUE is facility energy / IT energy, a finite number ≥ 1.0 (got {v}); e.g. 1.2")
        return v

    @field_validator("batch_sizes")
    @classmethod
    def _positive_batches(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v:
            raise ValueError("at least one batch size is needed")
        bad = [b for b in v if b < 1]
        if bad:
            raise ValueError(f"batch sizes must be ≥ 1 (got {bad[0]})")
        return tuple(v)

    @field_validator("prompt_tokens", "max_new_tokens", "min_iters")
    @classmethod
    def _at_least_one(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"must be ≥ 1 (got {v})")
        return v

    @field_validator("threads", "limit")
    @classmethod
    def _unset_or_at_least_one(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError(f"must be ≥ 1 (got {v}); leave it unset for the default")
        return v

    @field_validator("warmup_iters")
    @classmethod
    def _non_negative(cls, v: int) -> int:
        if v < 0:
            raise ValueError(f"must be ≥ 0 (got {v})")
        return v

    @field_validator("num_fewshot")
    @classmethod
    def _unset_or_non_negative(cls, v: int | None) -> int | None:
        if v is not None and v < 0:
            raise ValueError(f"must be ≥ 0 (got {v}); leave it unset for each task's own")
        return v

    @field_validator("min_seconds", "idle_seconds", "max_seconds", "meter_timeout_s")
    @classmethod
    def _non_negative_f(cls, v: float) -> float:
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"must be a finite number ≥ 0 (got {v})")
        return v

    @field_validator("cpu_tdp_w")
    @classmethod
    def _watts(cls, v: float | None) -> float | None:
        if v is not None and not (math.isfinite(v) and v > 0):
            raise ValueError(f"must be a finite number of watts > 0 (got {v})")
        return v

    @field_validator("sweep")
    @classmethod
    def _one_folder(cls, v: str) -> str:
        from e3bench.results.store import sweep_name_problem

        problem = sweep_name_problem(v)
        if problem is not None:
            raise ValueError(f"must be one folder name inside output_dir, a plain name such as 'my-sweep' (got {v!r}: {problem})")
        return v

    def identity(self) -> dict[str, Any]:
        """Fields that define *what is measured* (not where results go). Fields added later
        count only when set (:data:`_LATE_FIELDS`) — ``trust_remote_code`` (the model's own code
        may replace transformers' classes), ``num_fewshot``, ``include_path``, ``revision``,
        ``chat_template`` (other prompts, other scores), ``score_batch_size`` (padding moves
        log-likelihoods by ~1e-5), ``pue`` (other CO2e) — so the hashes of runs made before they
        existed do not change."""
        d = self.model_dump(exclude=set(NOT_IDENTITY))
        for late, unset in _LATE_FIELDS.items():
            if d[late] == unset:
                del d[late]
        return d

    def model_notes(self) -> list[str]:
        """One line per model argument the user set (``--model-args``), for the record's model notes."""
        notes = []
        if self.trust_remote_code:
            notes.append("trust_remote_code was ON (asked for): the model folder's own Python code was allowed to run")
        if self.revision is not None:
            notes.append(f"hub revision {self.revision} (asked for)")
        if self.chat_template:
            notes.append("task prompts were formatted with the tokenizer's chat template (chat_template on)")
        return notes

    def defaulted(self, field: str) -> bool:
        """Whether ``field`` holds a default of ``e3bench run`` the user did not ask for (the
        default quality task: a run whose default task has no data skips it, with a note)."""
        return field in self._defaulted

    def config_hash(self) -> str:
        """16 hex of SHA-256 over :meth:`identity` (the run's identity across machines)."""
        return stable_hash(self.identity())


#: the key that carries lm-eval-style model arguments (YAML ``model_args:``, ``--model-args``)
MODEL_ARGS_KEY = "model_args"
#: fields added after records existed, and their unset value: in the identity only when set
_LATE_FIELDS: dict[str, Any] = {"trust_remote_code": False, "num_fewshot": None, "include_path": None,
                                "revision": None, "chat_template": False, "score_batch_size": None, "pue": 1.0}
FIELDS: tuple[str, ...] = tuple(RunConfig.model_fields)
__all__ = ["ALIASES", "DEFAULT_LIMIT", "DEFAULT_TASKS", "FIELDS", "FLAGS", "NOT_IDENTITY", "NO_TASKS", "Layer",
           "RunConfig", "base_layers", "build_config", "coerce", "duplicate_problems", "flag_of", "flags_layer", "set_layer",
           "yaml_layer"]  # fmt: skip


def build_config(
    *,
    yaml_path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    sets: list[str] | None = None,
    layers: list[Layer] | None = None,
    runnable: bool = False,
    run_defaults: bool = False,
) -> RunConfig:
    """Merge YAML < ``overrides`` (CLI flags) < ``sets`` (``--set``) < ``layers``, validate, and
    return a frozen :class:`RunConfig`.

    ``run_defaults=True`` (``e3bench run``): when no layer names ``tasks``, the run gets the
    default quality task :data:`DEFAULT_TASKS` on its first :data:`DEFAULT_LIMIT` items (``limit``
    unless one is given); :meth:`RunConfig.defaulted` then says so.

    Always checked: the schema, unknown keys, meter/cross-check/tracker/task/backend names, task
    options, the region and the backend's options. ``runnable=True`` (``e3bench run``) also
    requires the backend to be installed here and to support the device and precision; sweeps
    skip such runs instead, and a config may be built on one machine and run on another.
    Raises :class:`~e3bench.config.validate.ConfigError` listing every problem found.
    """
    stack, problems = base_layers(yaml_path, overrides or {})
    stack.append(set_layer(list(sets or [])))
    stack += layers or []
    merged, origin = _merge(stack, problems)
    defaulted: set[str] = set()
    if run_defaults and "tasks" not in origin and "tasks" not in merged:
        merged["tasks"], defaulted = DEFAULT_TASKS, {"tasks"}
        if "limit" not in merged:
            merged["limit"] = DEFAULT_LIMIT
            defaulted.add("limit")
    cfg = _validate(merged, origin, problems, runnable=runnable)
    cfg._defaulted = frozenset(defaulted)
    return cfg


def _merge(stack: list[Layer], problems: list[Problem]) -> tuple[dict[str, Any], dict[str, Locate]]:
    merged: dict[str, Any] = {}
    origin: dict[str, Locate] = {}
    for layer in stack:
        for key, value in layer.values.items():
            field = ALIASES.get(key, key)
            where = layer.locate(key)
            if field.startswith("backend_options."):  # --set backend_options.n_ctx=4096
                opts = dict(merged.get("backend_options") or {})
                opts[field.split(".", 1)[1]] = value
                merged["backend_options"] = opts
                origin[field] = layer.locate
                continue
            if field == MODEL_ARGS_KEY:  # lm-eval's --model_args: sets the fields it names
                _merge_model_args(layer, key, value, merged, origin, problems)
                continue
            if field not in FIELDS:
                err = unknown_name("config key", key, FIELDS + tuple(ALIASES), fix=f"valid keys: {', '.join(FIELDS)}")
                problems.append(Problem(where, err.problem, err.fix))
                continue
            if field == "backend_options":
                if value is not None and not isinstance(value, dict):
                    problems.append(Problem(where, f"backend_options must be a mapping, got {value!r}",
                                            "e.g. backend_options: {n_ctx: 4096} in YAML, or --backend-option n_ctx=4096"))  # fmt: skip
                    continue
                for opt in value or {}:
                    origin[f"backend_options.{opt}"] = at(layer.locate, key, opt)
            try:
                merged[field] = coerce(field, value)
            except E3Error as exc:
                problems.append(Problem(where, exc.problem, exc.fix))
                continue
            origin[field] = at(layer.locate, key)
    return merged, origin


def _merge_model_args(layer: Layer, key: str, value: Any, merged: dict[str, Any], origin: dict[str, Locate],
                      problems: list[Problem]) -> None:  # fmt: skip
    """Set the fields ``model_args`` (text or mapping) names into ``merged``, each located at
    ``key`` of ``layer`` (``--model-args`` or the YAML line)."""
    from e3bench.config.overrides import parse_model_args

    try:
        fields = parse_model_args(value)
    except E3Error as exc:
        problems.append(Problem(layer.locate(key), exc.problem, exc.fix))
        return
    direct = {ALIASES.get(k, k): k for k in layer.values if k != key}  # what the same layer sets itself
    for field, v in fields.items():
        try:
            value = coerce(field, v)
        except E3Error as exc:
            problems.append(Problem(layer.locate(key) + f" ({field})", exc.problem, exc.fix))
            continue
        if field in direct:  # --dtype fp32 --model-args dtype=bf16: neither silently wins
            other = direct[field]
            try:
                same = coerce(field, layer.values[other]) == value
            except E3Error:
                same = False  # the direct value's own problem is reported where it is merged
            if not same:
                problems.append(Problem(layer.locate(key) + f" ({field})",
                                        f"it sets {field}={v}, but {layer.locate(other)} gives {layer.values[other]}",
                                        f"give {field} once"))  # fmt: skip
                continue
        merged[field] = value
        origin[field] = lambda path, key=key: layer.locate(key) + f" ({path})"




def _validate(merged: dict[str, Any], origin: dict[str, Locate], problems: list[Problem], *, runnable: bool) -> RunConfig:
    cfg: RunConfig | None = None
    bad: set[str] = set()
    try:
        cfg = RunConfig(**merged)
    except ValidationError as exc:
        for err in exc.errors():
            top = str(err["loc"][0]) if err["loc"] else "config"
            bad.add(top)
            problems.append(Problem(where_of(origin, top), *_schema_message(top, err)))
    values = cfg.model_dump() if cfg is not None else {
        **{k: f.default for k, f in RunConfig.model_fields.items()}, **merged
    }  # fmt: skip
    for key, err in semantic_checks(values, runnable=runnable, skip=bad):
        problems.append(Problem(where_of(origin, key), err.problem, err.fix))
    raise_problems(problems)
    assert cfg is not None
    return cfg


def _schema_message(field: str, err: Mapping[str, Any]) -> tuple[str, str]:
    if err["type"] == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        return f"bad value for '{field}': {err.get('input')!r}", f"use one of {expected}"
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"bad value for '{field}': {msg}", f"see `e3bench run --help` for {flag_of(field)}"


def load_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in YAML file ``path`` (E3Error if missing, invalid or not a mapping)."""
    from e3bench.config import yamlfile

    return yamlfile.load(path).data
