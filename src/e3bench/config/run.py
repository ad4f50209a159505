"""Validated, frozen run configuration: YAML file + ``--set key=value`` + CLI flags. No I/O
beyond reading the YAML the user names."""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from e3bench.core.errors import E3Error

DTYPES = ("fp32", "bf16", "fp16", "int8", "int4")
#: backend-specific precision names (llama.cpp GGUF types such as q4_k_m, q8_0, f16; "native" =
#: the file as shipped). Whether a backend can run one is its capabilities' call, not ours.
_BACKEND_PRECISION = re.compile(r"^(native|f16|f32|i?q[1-8](_[0-9a-z]+)*)$")
DEVICES = ("cpu", "cuda")


class RunConfig(BaseModel):
    """Everything that defines one run. Hashed (minus output location) to identify the run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field("smollm2-135m", description="alias, Hugging Face id, local dir or .gguf file")
    backend: str = Field("pytorch", description="backend name (see `e3bench backends`)")
    backend_options: dict[str, Any] = Field(
        {},
        description="keyword options for the backend, e.g. n_ctx (llamacpp), compile (pytorch), "
        "gpu_memory_utilization (vllm); --backend-option key=value or --set backend_options.key=value",
    )
    device: Literal["cpu", "cuda"] = "cpu"
    dtype: str = Field("fp32", description="fp32|bf16|fp16|int8|int4, or a backend's own (q4_k_m, native)")
    batch_sizes: tuple[int, ...] = Field((1, 4), description="batch sizes to measure")
    prompt_tokens: int = Field(128, description="synthetic prompt length in tokens")
    max_new_tokens: int = Field(32, description="fixed output length for speed runs")
    prompts: str | None = Field(
        None, description="None = synthetic; a text file (one prompt per line); or dataset:field"
    )
    warmup_iters: int = Field(1, description="untimed iterations per batch size")
    min_iters: int = Field(5, description="measure at least this many iterations ...")
    min_seconds: float = Field(5.0, description="... and at least this many seconds")
    max_seconds: float = Field(120.0, description="stop measuring a batch size after this long")
    threads: int | None = Field(None, description="torch intra-op threads (None = library default)")
    seed: int = 0
    meter: str = Field("auto", description="auto|nvml|rapl|estimate|codecarbon|none")
    cross_check_meter: str | None = Field(
        None, description="a second meter over the same windows, e.g. codecarbon (labelled cross-check)"
    )
    cpu_tdp_w: float | None = Field(None, description="CPU TDP override for the estimate meter")
    idle_seconds: float = Field(3.0, description="idle-baseline measurement before the workload")
    region: str | None = Field(None, description="grid region for CO2e (None = world average)")
    tasks: tuple[str, ...] = Field((), description="effectiveness tasks to run on the same model")
    limit: int | None = Field(None, description="items per task (first N)")
    log_samples: bool = False
    engine: Literal["e3bench", "lm-eval"] = "e3bench"
    trackers: tuple[str, ...] = Field((), description="wandb and/or mlflow: log each run's metrics")
    output_dir: str = "results"
    sweep: str = Field("runs", description="sub-directory of output_dir grouping runs")
    cache_dir: str | None = Field(None, description="converted-model cache (default ~/.cache/e3bench)")

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, v: str) -> str:
        v = v.lower()
        if v not in DTYPES and not _BACKEND_PRECISION.match(v):
            raise ValueError(
                f"unknown precision {v!r}: use one of {', '.join(DTYPES)}, or a GGUF type such as q4_k_m / q8_0 / f16"
            )
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

    @field_validator("warmup_iters")
    @classmethod
    def _non_negative(cls, v: int) -> int:
        if v < 0:
            raise ValueError(f"must be ≥ 0 (got {v})")
        return v

    @field_validator("min_seconds", "idle_seconds", "max_seconds")
    @classmethod
    def _non_negative_f(cls, v: float) -> float:
        if v < 0:
            raise ValueError(f"must be ≥ 0 (got {v})")
        return v

    @field_validator("trackers")
    @classmethod
    def _trackers(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [t for t in v if t not in ("wandb", "mlflow")]
        if bad:
            raise ValueError(f"unknown tracker '{bad[0]}' (use wandb and/or mlflow)")
        return v

    @field_validator("limit")
    @classmethod
    def _limit(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError(f"must be ≥ 1 (got {v})")
        return v

    def identity(self) -> dict[str, Any]:
        """Fields that define *what is measured* (not where results go)."""
        return self.model_dump(exclude={"output_dir", "sweep", "cache_dir", "log_samples", "trackers"})

    def config_hash(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


_FIELDS = tuple(RunConfig.model_fields)
_ALIASES = {"batch_size": "batch_sizes", "batch-size": "batch_sizes", "task": "tasks"}


def _coerce(key: str, value: Any) -> Any:
    """Turn CLI strings ("1,4,8", "null") into what the field expects."""
    if key in ("batch_sizes", "tasks", "trackers"):
        if isinstance(value, str):
            parts = [p.strip() for p in value.split(",") if p.strip()]
            if key == "batch_sizes":
                try:
                    return tuple(int(p) for p in parts)
                except ValueError:
                    raise E3Error(
                        f"batch_sizes must be integers, got '{value}'", "e.g. --batch-size 1,4,8"
                    ) from None
            return tuple(parts)
        if isinstance(value, int):
            return (value,)
        if isinstance(value, list):
            return tuple(value)
    if isinstance(value, str) and value.lower() in ("null", "~"):
        return None
    return value


def _unknown_key(key: str, where: str) -> E3Error:
    near = difflib.get_close_matches(key, _FIELDS, n=1)
    hint = f"did you mean '{near[0]}'?" if near else f"valid keys: {', '.join(_FIELDS)}"
    return E3Error(f"unknown config key '{key}' in {where}", hint)


def load_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise E3Error(f"config file not found: {p}", "check the path given to --config")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise E3Error(f"config file {p} is not valid YAML{where}", "fix the YAML syntax") from None
    if not isinstance(data, dict):
        raise E3Error(f"config file {p} must be a mapping of key: value", "see README 'Config'")
    return data


def parse_set(items: list[str]) -> dict[str, Any]:
    """Parse ``--set key=value`` items; values are YAML scalars (so 4 is int, true is bool)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise E3Error(f"--set expects key=value, got '{item}'", "e.g. --set max_new_tokens=64")
        k, v = item.split("=", 1)
        k = k.strip()
        try:
            out[k] = yaml.safe_load(v) if v.strip() else v
        except yaml.YAMLError:
            out[k] = v
        if isinstance(out[k], (str, int)) and k in ("batch_sizes", "batch_size", "tasks", "trackers"):
            out[k] = str(out[k])
    return out


def build_config(
    *,
    yaml_path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    sets: list[str] | None = None,
) -> RunConfig:
    """Merge YAML < CLI flags < --set, validate, and return a frozen RunConfig."""
    merged: dict[str, Any] = {}
    layers: list[tuple[str, dict[str, Any]]] = []
    if yaml_path is not None:
        layers.append((str(yaml_path), load_yaml(yaml_path)))
    layers.append(("command-line options", {k: v for k, v in (overrides or {}).items() if v is not None}))
    layers.append(("--set", parse_set(sets or [])))
    for where, layer in layers:
        for key, value in layer.items():
            key = _ALIASES.get(key, key)
            if key.startswith("backend_options."):  # --set backend_options.n_ctx=4096
                opts = dict(merged.get("backend_options") or {})
                opts[key.split(".", 1)[1]] = value
                merged["backend_options"] = opts
                continue
            if key not in _FIELDS:
                raise _unknown_key(key, where)
            if key == "backend_options" and value is not None and not isinstance(value, dict):
                raise E3Error(
                    f"backend_options in {where} must be a mapping, got {value!r}",
                    "e.g. backend_options: {n_ctx: 4096} in YAML, or --backend-option n_ctx=4096",
                )
            merged[key] = _coerce(key, value)
    try:
        return RunConfig(**merged)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "config"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "literal_error":
            ctx = err.get("ctx", {}).get("expected", "")
            raise E3Error(f"bad value for '{loc}': {err.get('input')!r}", f"use one of {ctx}") from None
        raise E3Error(f"bad value for '{loc}': {msg}", f"see `e3bench run --help` for '{loc}'") from None
