"""Suite configurations: one TOML file per named configuration (:class:`TrainSpec`), which
states only what it changes from the defaults — or from the file it ``extends`` — plus
``--set section.key=value`` overrides for every file. Everything is validated before any
training.
"""

from __future__ import annotations

import glob
import sys
from pathlib import Path
from typing import Any, Literal
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from e3bench.core.errors import E3Error, unknown_name


class _Section(BaseModel):
    """A TOML section: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSection(_Section):
    """``[model]``: shape of the Llama-style decoder (see :mod:`.model`)."""

    hidden_size: int = Field(128, ge=8)
    layers: int = Field(4, ge=1)
    heads: int = Field(4, ge=1)
    kv_heads: int = Field(4, ge=1)
    intermediate_size: int = Field(344, ge=8)
    seq_len: int = Field(128, ge=8)
    tie_embeddings: bool = True


class DataSection(_Section):
    """``[data]``: corpus, tokenizer and batches (see :mod:`.data`)."""

    text: str | None = None  # path; default $E3BENCH_DATA_DIR/text/tinyshakespeare.txt
    hf_dataset: str | None = None
    hf_config: str | None = None
    hf_split: str = "train"
    hf_field: str = "text"
    max_chars: int | None = Field(None, ge=2000)
    val_fraction: float = 0.1
    tokenizer: Literal["bpe", "char"] = "bpe"
    vocab_size: int = Field(512, ge=16)
    batch_size: int = Field(16, ge=1)
    num_workers: int = Field(0, ge=0)
    prefetch_factor: int = Field(2, ge=1)


class OptimSection(_Section):
    """``[optim]``: optimizer, learning-rate schedule and clipping (see :mod:`e3bench.train.shared.optim`)."""

    name: str = "adamw"
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(0.1, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    muon_lr: float | None = None
    muon_momentum: float = 0.95
    muon_aux: Literal["adamw", "adamw8bit"] = "adamw"
    impl: Literal["bitsandbytes", "torchao"] = "bitsandbytes"
    galore_rank: int = Field(32, ge=1)
    galore_update_proj_gap: int = Field(50, ge=1)
    galore_scale: float = 0.25
    galore_rank_cap: float = Field(0.25, gt=0, le=1)  # galore2 / galore2_projection: rank ≤ cap × min dim
    galore_oversample: int = Field(8, ge=0)
    galore_power_iters: int = Field(2, ge=0)
    galore2_projection: bool = False  # muon8bit: momentum kept in a GaLore 2 subspace
    muon_block_size: int = Field(256, ge=8)
    warmup_steps: int = Field(10, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    grad_clip: float | None = Field(1.0, gt=0)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        from e3bench.train.shared.optim import check_optimizer_name

        check_optimizer_name(v)
        return v


class TrainSection(_Section):
    """``[train]``: budget, evaluation, seed, precision, device and divergence/spike thresholds."""

    max_steps: int = Field(100, ge=1)
    eval_every: int = Field(20, ge=1)
    eval_batches: int = Field(4, ge=1)
    seed: int = 0
    grad_checkpointing: bool = False
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    device: str = "auto"
    diverge_factor: float = Field(3.0, gt=1)  # loss > factor × initial loss → diverged
    spike_factor: float = Field(4.0, gt=1)
    spike_window: int = Field(20, ge=3)
    collider_threshold: float | None = Field(None, ge=0)  # keep tokens whose loss ≥ this (nats)
    collider_sparsity: float | None = Field(None, ge=0, lt=1)  # or drop this share of lowest-loss tokens
    grad_norm_band: tuple[float, float] = (0.5, 5.0)  # the healthy gradient-norm range (report)


class MTPSection(_Section):
    """``[mtp]``: ``k`` multi-token-prediction heads and the weight of their mean loss."""

    k: int = Field(0, ge=0, le=8)
    weight: float = Field(0.3, ge=0)


class TrainSpec(_Section):
    """One named configuration of the suite (a TOML file, after ``extends`` and ``--set``)."""

    name: str
    extends: str | None = None  # another TOML file (relative to this one) whose values this one changes
    description: str = ""
    expected: str = ""
    model: ModelSection = ModelSection()
    data: DataSection = DataSection()
    optim: OptimSection = OptimSection()
    train: TrainSection = TrainSection()
    mtp: MTPSection = MTPSection()
    #: machine-readable claims, metric → expected value (see :mod:`e3bench.train.shared.claims`)
    claims: dict[str, str] = {}

    @field_validator("claims")
    @classmethod
    def _claims(cls, v: dict[str, str]) -> dict[str, str]:
        from e3bench.train.shared.claims import parse_claim

        for metric, text in v.items():
            parse_claim(metric, text)
        return v


_SECTIONS = {
    "": TrainSpec, "model": ModelSection, "data": DataSection, "optim": OptimSection,
    "train": TrainSection, "mtp": MTPSection, "claims": None,
}  # fmt: skip


def _fields(section: str) -> list[str]:
    model = _SECTIONS[section]
    return [] if model is None else list(model.model_fields)


def _load_toml(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        from e3bench.core.errors import require

        tomllib = require("tomli", "train", "reading TOML configs on Python 3.10")
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise E3Error(f"suite config {path} does not exist", "check the path (or the glob)") from None
    except tomllib.TOMLDecodeError as exc:
        raise E3Error(f"{path} is not valid TOML: {exc}", "fix the file") from None


def _check_keys(data: dict[str, Any], where: str) -> None:
    for key, value in data.items():
        if key not in _fields(""):
            raise _unknown(key, "", where)
        if key in _SECTIONS and key:
            if not isinstance(value, dict):
                raise E3Error(f"{where}: '{key}' must be a table ([{key}])", f"write [{key}] then key = value lines")
            for sub in value:
                if _SECTIONS[key] is not None and sub not in _fields(key):
                    raise _unknown(sub, key, where)


def _unknown(key: str, section: str, where: str) -> E3Error:
    valid = _fields(section)
    place = f"[{section}]" if section else "the top level"
    err = unknown_name("key", key, valid, fix=f"valid keys in {place}: {', '.join(valid)}")
    full = f"{section}.{key}" if section else key
    return E3Error(f"{where}: unknown key '{full}'", err.fix)


def set_overrides(data: dict[str, Any], sets: Sequence[str]) -> dict[str, Any]:
    """A copy of ``data`` with ``section.key=value`` overrides (values parsed as TOML scalars,
    else kept as strings), through the one ``--set`` parser (:mod:`e3bench.config.overrides`).
    Raises :class:`E3Error` for an item that is not ``key=value`` or has more than one dot."""
    from e3bench.config.overrides import apply_overrides, parse_set, toml_scalar

    overrides = parse_set(sets, scalar=toml_scalar, example="train.max_steps=50")
    return apply_overrides(data, overrides, max_depth=2)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _load_with_extends(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    data = _load_toml(path)
    _check_keys(data, str(path))
    parent = data.get("extends")
    if parent:
        ppath = (path.parent / parent).resolve()
        if ppath in chain or ppath == path.resolve():
            raise E3Error(f"{path}: 'extends' forms a cycle through {ppath}", "remove the cycle")
        if not ppath.is_file():
            raise E3Error(f"{path}: extends '{parent}', which does not exist ({ppath})", "fix the path")
        base = _load_with_extends(ppath, (*chain, path.resolve()))
        for k in ("name", "description", "expected", "extends", "claims"):  # a file's own, not inherited
            base.pop(k, None)
        data = _merge(base, data)
    return data


def load_spec(path: str | Path, sets: Sequence[str] = ()) -> TrainSpec:
    """Read a suite TOML file (following ``extends``), apply ``--set`` overrides, validate.

    Raises :class:`E3Error` naming the file and key for a missing or invalid file, an unknown
    key (with the valid ones), a bad value or an ``extends`` cycle.
    """
    path = Path(path)
    data = _load_with_extends(path)
    data.setdefault("name", path.stem)
    data = set_overrides(data, sets)
    where = str(path)
    _check_keys(data, where)
    try:
        try:
            spec = TrainSpec.model_validate(data)
        except E3Error as exc:  # a validator's own error (a claim): name the file as every other error does
            raise E3Error(f"{where}: {exc.problem}", exc.fix) from None
        check_combination(spec, where)
        return spec
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        ctx = err.get("ctx", {}).get("error")
        if isinstance(ctx, E3Error):
            raise E3Error(f"{where}: {ctx.problem}", ctx.fix) from None
        raise E3Error(f"{where}: {loc}: {err['msg']}", "fix the value (see docs/training.md)") from None


def check_combination(spec: TrainSpec, where: str) -> None:
    """Raise :class:`E3Error` (one line naming the keys) for settings that cannot combine:
    both Collider settings, ``galore2_projection`` without ``muon8bit``, a GaLore rank cap that
    leaves rank 0 on this model's matrices, a claim on a feature the configuration lacks, or a
    claim whose ``vs`` reference is the configuration itself."""
    t, o, m = spec.train, spec.optim, spec.model
    from e3bench.train.suite.model import shape_problem

    if (shape := shape_problem(m)) is not None:  # found now, not when this configuration's turn comes
        raise E3Error(f"{where}: {shape[0]}", shape[1])
    if t.collider_threshold is not None and t.collider_sparsity is not None:
        raise E3Error(f"{where}: train.collider_threshold and train.collider_sparsity cannot combine",
                      "set one of them (a loss threshold, or the share of tokens to drop)")  # fmt: skip
    if o.galore2_projection and o.name != "muon8bit":
        raise E3Error(f"{where}: optim.galore2_projection needs optim.name = \"muon8bit\" (it is \"{o.name}\")",
                      "remove optim.galore2_projection, or use optim.name = \"muon8bit\"")  # fmt: skip
    if o.name in ("galore", "galore2") or o.galore2_projection:
        smallest = min(m.hidden_size, m.intermediate_size, m.hidden_size // m.heads * m.kv_heads)
        if o.name != "galore" and int(o.galore_rank_cap * smallest) < 1:
            raise E3Error(
                f"{where}: optim.galore_rank_cap {o.galore_rank_cap:g} × the smallest hidden-matrix dimension "
                f"{smallest} (model.hidden_size / heads × kv_heads) leaves rank 0: no 2-D hidden matrix to project",
                "raise optim.galore_rank_cap or the model's dimensions",
            )
    filters = t.collider_threshold is not None or t.collider_sparsity is not None
    from e3bench.train.shared.claims import METRICS, parse_claim

    for metric, text in spec.claims.items():
        if parse_claim(metric, text).ref == spec.name:
            raise E3Error(f"{where}: claims.{metric} = \"{text}\" compares {spec.name} with itself",
                          "name another configuration after 'vs', or drop the 'vs ...' (the baseline)")  # fmt: skip
        need = METRICS[metric].needs
        if need == "collider" and not filters:
            raise E3Error(f"{where}: claims.{metric} needs Collider (train.collider_threshold or train.collider_sparsity)",
                          "remove the claim or enable Collider")  # fmt: skip
        if need == "mtp" and not spec.mtp.k:
            raise E3Error(f"{where}: claims.{metric} needs MTP heads (mtp.k > 0)", "remove the claim or set mtp.k")


def expand_paths(items: Sequence[str | Path]) -> list[Path]:
    """Files, directories (their *.toml) and quoted globs → sorted unique files, in order given."""
    out: list[Path] = []
    for item in items:
        s = str(item)
        p = Path(s)
        if p.is_dir():
            found = sorted(p.glob("*.toml"))
        elif any(c in s for c in "*?["):
            found = [Path(x) for x in sorted(glob.glob(s))]
            if not found:
                raise E3Error(f"no suite config matches '{s}'", "check the pattern")
        else:
            found = [p]
        for f in found:
            if f not in out:
                out.append(f)
    if not out:
        raise E3Error("no suite configs given", "pass --suite configs/train/*.toml")
    return out


def toml_str(s: str) -> str:
    """``s`` as a TOML basic string (quoted, backslashes and quotes escaped)."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
