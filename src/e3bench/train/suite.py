"""``e3bench train``: a training-efficiency suite on a small decoder trained from scratch.

Each named configuration is a TOML file (see ``configs/train/``); a file states only what it
changes from the defaults below (:class:`TrainSpec`). All configurations of a suite share the
corpus, tokenizer, seeds and — unless a file says otherwise — model and batch shape, so their
loss curves compare at equal tokens. A configuration that diverges (non-finite or exploding
loss) is stopped and recorded; a configuration whose library is missing or unsupported on the
device is skipped with the reason; the suite always continues.
"""

from __future__ import annotations

import datetime as dt
import difflib
import glob
import math
import os
import statistics
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from e3bench.core.errors import E3Error, MissingExtra
from e3bench.core.timing import clock
from e3bench.train.records import ConfigResult, CurvePoint, GradNormStats, SuiteRecord

Progress = Callable[[str], None]


# ----------------------------------------------------------------------------------- spec
class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSection(_Section):
    hidden_size: int = Field(128, ge=8)
    layers: int = Field(4, ge=1)
    heads: int = Field(4, ge=1)
    kv_heads: int = Field(4, ge=1)
    intermediate_size: int = Field(344, ge=8)
    seq_len: int = Field(128, ge=8)
    tie_embeddings: bool = True


class DataSection(_Section):
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
    warmup_steps: int = Field(10, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    grad_clip: float | None = Field(1.0, gt=0)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        from e3bench.train.optim import check_optimizer_name

        check_optimizer_name(v)
        return v


class TrainSection(_Section):
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


class MTPSection(_Section):
    k: int = Field(0, ge=0, le=8)
    weight: float = Field(0.3, ge=0)


class TrainSpec(_Section):
    name: str
    extends: str | None = None  # another TOML file (relative to this one) whose values this one changes
    description: str = ""
    expected: str = ""
    model: ModelSection = ModelSection()
    data: DataSection = DataSection()
    optim: OptimSection = OptimSection()
    train: TrainSection = TrainSection()
    mtp: MTPSection = MTPSection()


_SECTIONS = {
    "": TrainSpec, "model": ModelSection, "data": DataSection, "optim": OptimSection,
    "train": TrainSection, "mtp": MTPSection,
}  # fmt: skip


def _fields(section: str) -> list[str]:
    return list(_SECTIONS[section].model_fields)


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
                if sub not in _fields(key):
                    raise _unknown(sub, key, where)


def _unknown(key: str, section: str, where: str) -> E3Error:
    valid = _fields(section)
    near = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    hint = f" (did you mean '{near[0]}'?)" if near else ""
    full = f"{section}.{key}" if section else key
    place = f"[{section}]" if section else "the top level"
    return E3Error(f"{where}: unknown key '{full}'{hint}", f"valid keys in {place}: {', '.join(valid)}")


def set_overrides(data: dict[str, Any], sets: Sequence[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides (values parsed as TOML scalars)."""
    import copy

    out = copy.deepcopy(data)
    for item in sets:
        key, eq, raw = item.partition("=")
        if not eq:
            raise E3Error(f"--set '{item}' is not key=value", "write e.g. --set train.max_steps=50")
        value = _parse_scalar(raw.strip())
        parts = key.strip().split(".")
        if len(parts) == 1:
            out[parts[0]] = value
        elif len(parts) == 2:
            out.setdefault(parts[0], {})
            if not isinstance(out[parts[0]], dict):
                raise E3Error(f"--set {key}: '{parts[0]}' is not a section", "use section.key=value")
            out[parts[0]][parts[1]] = value
        else:
            raise E3Error(f"--set '{key}' has too many dots", "use section.key=value")
    return out


def _parse_scalar(raw: str) -> Any:
    import tomllib

    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw  # bare string


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
        for k in ("name", "description", "expected", "extends"):
            base.pop(k, None)
        data = _merge(base, data)
    return data


def load_spec(path: str | Path, sets: Sequence[str] = ()) -> TrainSpec:
    path = Path(path)
    data = _load_with_extends(path)
    data.setdefault("name", path.stem)
    data = set_overrides(data, sets)
    where = str(path)
    _check_keys(data, where)
    try:
        return TrainSpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        ctx = err.get("ctx", {}).get("error")
        if isinstance(ctx, E3Error):
            raise E3Error(f"{where}: {ctx.problem}", ctx.fix) from None
        raise E3Error(f"{where}: {loc}: {err['msg']}", "fix the value (see docs/training.md)") from None


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


# ------------------------------------------------------------------------------- running
def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def _skip_reason(spec: TrainSpec, device: str) -> str | None:
    """Reasons a configuration cannot run here, found before any work."""
    needs_8bit = spec.optim.name == "adamw8bit" or (spec.optim.name == "muon" and spec.optim.muon_aux == "adamw8bit")
    if needs_8bit and spec.optim.impl == "bitsandbytes":
        from importlib import metadata

        try:
            v = metadata.version("bitsandbytes")
        except metadata.PackageNotFoundError:
            return "bitsandbytes is not installed (pip install 'e3bench[train]')"
        major, minor = (int(x) for x in v.split(".")[:2])
        if device == "cpu" and (major, minor) < (0, 45):
            return f"bitsandbytes {v} has no CPU optimizer kernels (CPU support arrived in 0.45)"
    if spec.data.num_workers and sys.platform == "win32":  # pragma: no cover
        return None
    return None


def run_config(
    spec: TrainSpec,
    tok,  # data.TokenizedCorpus
    session,  # common.EnergySession
    *,
    device: str,
    progress: Progress,
    file: str | None = None,
) -> ConfigResult:
    """Train one configuration; never raises for training failures (they become the status)."""
    t_start = clock()
    res = ConfigResult(
        name=spec.name, file=file, description=spec.description, expected=spec.expected,
        status="ok", spec=spec.model_dump(mode="json"),
    )  # fmt: skip
    reason = _skip_reason(spec, device)
    if reason:
        res.status, res.reason = "skipped", reason
        progress(f"[{spec.name}] skipped: {reason}")
        return res
    try:
        _train(spec, tok, session, device=device, progress=progress, res=res)
    except MissingExtra as exc:
        res.status, res.reason = "skipped", exc.one_line()
        progress(f"[{spec.name}] skipped: {res.reason}")
    except E3Error as exc:
        res.status, res.reason = "failed", exc.one_line()
        progress(f"[{spec.name}] failed: {res.reason}")
    except Exception as exc:  # noqa: BLE001 - one broken config must not end the suite
        tb = traceback.extract_tb(exc.__traceback__)[-1]
        res.status = "failed"
        res.reason = f"{type(exc).__name__}: {exc} (at {Path(tb.filename).name}:{tb.lineno})"
        progress(f"[{spec.name}] failed: {res.reason}")
    res.duration_s = clock() - t_start
    return res


def _train(spec: TrainSpec, tok, session, *, device: str, progress: Progress, res: ConfigResult) -> None:
    import torch

    from e3bench.train import common, data, mtp, optim

    prec = common.resolve_precision(spec.train.precision, device)
    common.seed_everything(spec.train.seed)
    ms = mtp.ModelSettings(**spec.model.model_dump())
    lm = mtp.build_model(ms, tok.vocab_size, mtp_k=spec.mtp.k, mtp_weight=spec.mtp.weight, seed=spec.train.seed)
    if spec.train.grad_checkpointing:
        lm.enable_gradient_checkpointing()
    lm.to(device).train()
    params = [p for p in lm.parameters() if p.requires_grad]
    res.parameters = sum(p.numel() for p in params)
    res.parameter_bytes = sum(p.numel() * p.element_size() for p in params)
    res.gradient_bytes = res.parameter_bytes
    settings = optim.OptimSettings(**{
        k: v for k, v in spec.optim.model_dump().items() if k in optim.OptimSettings.__dataclass_fields__
    })  # fmt: skip
    opt, res.optimizer_detail = optim.build_optimizer(
        lm.named_parameters(), settings, device=device, exclude_ids=lm.embedding_ids()
    )
    res.optimizer = spec.optim.name
    scaler = common.make_grad_scaler(device, prec)
    block_len = spec.model.seq_len + 1
    bs = spec.data.batch_size
    steps = spec.train.max_steps
    loader = data.make_train_loader(
        tok.train_ids, block_len=block_len, batch_size=bs, steps=steps, seed=spec.train.seed,
        num_workers=spec.data.num_workers, prefetch_factor=spec.data.prefetch_factor,
        pin_memory=device.startswith("cuda"),
    )  # fmt: skip
    val = data.val_batches(tok.val_ids, block_len=block_len, batch_size=bs, n_batches=spec.train.eval_batches)
    tokens_per_step = bs * spec.model.seq_len
    bucket_train, bucket_eval = f"{spec.name}/train", f"{spec.name}/eval"
    session.reset(bucket_train)
    session.reset(bucket_eval)

    def evaluate() -> float:
        lm.eval()
        total = 0.0
        with session.window(bucket_eval), torch.no_grad(), common.autocast(device, prec):
            for b in val:
                _, main, _ = lm(b.to(device))
                total += float(main)
        lm.train()
        return total / len(val)

    mem = common.MemoryTracker(device)
    mem.start()
    step_s: list[float] = []
    norms: list[float] = []
    spikes: list[tuple[int, float]] = []
    clipped = 0
    first_loss: float | None = None
    last_aux: float | None = None
    win_loss: list[float] = []
    clip = spec.optim.grad_clip
    v0 = evaluate()
    res.val_loss_curve.append(CurvePoint(step=0, tokens=0, loss=v0))
    progress(f"[{spec.name}] {res.parameters:,} params, {res.optimizer_detail}; val loss at start {v0:.3f}")
    it = None
    step = 0
    try:
        while step < steps:
            seg_end = min(steps, (step // spec.train.eval_every + 1) * spec.train.eval_every)
            with session.window(bucket_train):
                if it is None:
                    it = iter(loader)  # worker start-up counts as training time
                t_prev = clock()
                while step < seg_end:
                    block = next(it).to(device, non_blocking=True)
                    optim.set_lr(opt, optim.lr_factor(
                        step, warmup_steps=spec.optim.warmup_steps, total_steps=steps,
                        schedule=spec.optim.schedule, min_ratio=spec.optim.min_lr_ratio,
                    ))  # fmt: skip
                    with common.autocast(device, prec):
                        loss, main, aux = lm(block)
                    loss_v = float(loss.detach())
                    common.check_loss(loss_v, step, first_loss, spec.train.diverge_factor)
                    if first_loss is None:
                        first_loss = loss_v
                    scaler.scale(loss).backward()
                    for o in optim.parts(opt):
                        scaler.unscale_(o)
                    gn = float(torch.nn.utils.clip_grad_norm_(params, clip if clip else float("inf")))
                    if not math.isfinite(gn) and not prec.use_grad_scaler:
                        raise common.Diverged(f"gradient norm became {gn} at step {step}")
                    if math.isfinite(gn):
                        recent = norms[-spec.train.spike_window :]
                        if len(recent) >= 3 and gn > spec.train.spike_factor * _median(recent):
                            spikes.append((step, gn))
                        norms.append(gn)
                        if clip and gn > clip:
                            clipped += 1
                    for o in optim.parts(opt):
                        scaler.step(o)
                    scaler.update()
                    opt.zero_grad(set_to_none=True)
                    common.synchronize(device)
                    now = clock()
                    step_s.append(now - t_prev)
                    t_prev = now
                    win_loss.append(float(main.detach()))
                    if aux is not None:
                        last_aux = float(aux.detach())
                    step += 1
                    if step % 5 == 0 or step == seg_end:
                        res.train_loss_curve.append(
                            CurvePoint(step=step, tokens=step * tokens_per_step, loss=sum(win_loss) / len(win_loss))
                        )
                        win_loss = []
            v = evaluate()
            res.val_loss_curve.append(CurvePoint(step=step, tokens=step * tokens_per_step, loss=v))
            if not math.isfinite(v):
                raise common.Diverged(f"validation loss became {v} at step {step}")
            progress(
                f"[{spec.name}] step {step}/{steps}: train {res.train_loss_curve[-1].loss:.3f} val {v:.3f} "
                f"({tokens_per_step * len(step_s) / max(sum(step_s), 1e-9):,.0f} tok/s)"
            )
    except common.Diverged as exc:
        res.status, res.reason = "diverged", str(exc)
        progress(f"[{spec.name}] diverged: {exc}; stopped, continuing the suite")
    finally:
        res.memory = mem.stop()
        del it
    res.steps = len(step_s)
    res.tokens = res.steps * tokens_per_step
    res.train_time_s = sum(step_s)
    res.tokens_per_s = res.tokens / res.train_time_s if res.train_time_s > 0 else None
    res.step_time_ms = common.stats([s * 1e3 for s in step_s[1:]])
    if res.step_time_ms is not None and res.step_time_ms.p50 > 0:
        res.tokens_per_s_median_step = tokens_per_step / (res.step_time_ms.p50 / 1e3)
    res.optimizer_state_bytes = common.optimizer_state_bytes(opt)
    finite_val = [p.loss for p in res.val_loss_curve if math.isfinite(p.loss)]
    res.final_val_loss = res.val_loss_curve[-1].loss if res.val_loss_curve else None
    res.best_val_loss = min(finite_val) if finite_val else None
    res.final_train_loss = res.train_loss_curve[-1].loss if res.train_loss_curve else None
    res.mtp_aux_loss_final = last_aux
    res.grad_norm = GradNormStats(
        stats=common.stats(norms), spike_factor=spec.train.spike_factor, window=spec.train.spike_window,
        spikes=spikes[:50], clipped_steps=clipped, clip_threshold=clip,
    )  # fmt: skip
    res.energy = session.figures(bucket_train, tokens=res.tokens, samples=res.steps * bs)
    res.eval_energy = session.figures(bucket_eval)
    if spec.data.num_workers and res.energy.sensor == "tdp-model":
        res.warnings.append(
            "the estimate meter models this process's CPU time only: the DataLoader worker processes' "
            "CPU is not in the energy figure"
        )
    if spikes:
        res.warnings.append(f"{len(spikes)} gradient-norm spike(s) (> {spec.train.spike_factor:g}× recent median)")


# --------------------------------------------------------------------------- comparison
def _interp(curve: list[CurvePoint], tokens: float) -> float | None:
    pts = [(p.tokens, p.loss) for p in curve if math.isfinite(p.loss)]
    if not pts or tokens > pts[-1][0] or tokens < pts[0][0]:
        return None
    for (t0, l0), (t1, l1) in zip(pts, pts[1:], strict=False):
        if t0 <= tokens <= t1:
            return l0 if t1 == t0 else l0 + (l1 - l0) * (tokens - t0) / (t1 - t0)
    return pts[-1][1]


def _tokens_to_loss(curve: list[CurvePoint], target: float) -> float | None:
    pts = [(p.tokens, p.loss) for p in curve if math.isfinite(p.loss)]
    for (t0, l0), (t1, l1) in zip(pts, pts[1:], strict=False):
        if l1 <= target:
            if l0 <= target:
                return float(t0)
            return t0 + (t1 - t0) * (l0 - target) / (l0 - l1)
    return None


def _ratio(a, b) -> float | None:
    if a is None or b is None or not b:
        return None
    return a / b


def compare(base: ConfigResult, res: ConfigResult) -> dict[str, Any]:
    """Figures of ``res`` relative to the baseline (see :class:`ConfigResult`)."""
    out: dict[str, Any] = {"baseline": base.name}
    if not base.val_loss_curve or not res.val_loss_curve:
        return out
    common_tokens = min(base.val_loss_curve[-1].tokens, res.val_loss_curve[-1].tokens)
    lb, lc = _interp(base.val_loss_curve, common_tokens), _interp(res.val_loss_curve, common_tokens)
    out["equal_tokens"] = common_tokens
    out["val_loss_at_equal_tokens"] = lc
    out["baseline_val_loss_at_equal_tokens"] = lb
    out["delta_val_loss_at_equal_tokens"] = None if lb is None or lc is None else lc - lb
    out["per_eval_delta"] = [
        (p.tokens, None if (x := _interp(res.val_loss_curve, p.tokens)) is None else x - p.loss)
        for p in base.val_loss_curve
    ]
    target = base.final_val_loss
    needed = _tokens_to_loss(res.val_loss_curve, target) if target is not None else None
    out["tokens_to_baseline_final_loss"] = needed
    out["token_efficiency"] = _ratio(base.tokens, needed) if needed else None
    out["tokens_per_s_ratio"] = _ratio(res.tokens_per_s, base.tokens_per_s)
    out["tokens_per_s_median_step_ratio"] = _ratio(res.tokens_per_s_median_step, base.tokens_per_s_median_step)
    if needed and res.tokens_per_s:
        out["time_to_baseline_final_loss_s"] = needed / res.tokens_per_s
        out["time_efficiency"] = _ratio(base.train_time_s, out["time_to_baseline_final_loss_s"])
    out["optimizer_state_ratio"] = _ratio(res.optimizer_state_bytes, base.optimizer_state_bytes)
    if res.memory and base.memory:
        out["peak_rss_delta_bytes"] = (res.memory.peak_rss_bytes - res.memory.rss_start_bytes) - (
            base.memory.peak_rss_bytes - base.memory.rss_start_bytes
        )
        if res.memory.peak_device_memory_bytes and base.memory.peak_device_memory_bytes:
            out["peak_device_memory_ratio"] = _ratio(
                res.memory.peak_device_memory_bytes, base.memory.peak_device_memory_bytes
            )
    if res.energy and base.energy:
        out["j_per_token_ratio"] = _ratio(res.energy.j_per_token, base.energy.j_per_token)
    return out


# ---------------------------------------------------------------------------------- suite
def run_suite(
    paths: Sequence[str | Path],
    *,
    output_dir: str | Path = "results",
    sets: Sequence[str] = (),
    text: str | None = None,
    max_steps: int | None = None,
    device: str | None = None,
    meter: str = "auto",
    idle_seconds: float = 2.0,
    cpu_tdp_w: float | None = None,
    region: str | None = None,
    threads: int | None = None,
    baseline: str | None = None,
    plot: bool = True,
    progress: Progress | None = None,
) -> tuple[SuiteRecord, Path]:
    """Run every configuration; write suite.json, REPORT.md and loss_curves.png; return the
    record and its directory."""
    from e3bench.bench import envinfo
    from e3bench.core.fsutil import atomic_write_text
    from e3bench.train import common, data, report

    progress = progress or (lambda _m: None)
    t0 = clock()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    files = expand_paths(paths)
    extra: list[str] = list(sets)
    if text:
        extra.append(f"data.text={_toml_str(text)}")
    if max_steps:
        extra.append(f"train.max_steps={max_steps}")
    if device:
        extra.append(f"train.device={_toml_str(device)}")
    specs = [load_spec(f, extra) for f in files]  # every file validated before any training
    names = [s.name for s in specs]
    dups = {n for n in names if names.count(n) > 1}
    if dups:
        raise E3Error(f"configuration names must be unique; repeated: {', '.join(sorted(dups))}", "rename one")
    base_name = baseline or ("baseline" if "baseline" in names else names[0])
    if base_name not in names:
        raise E3Error(f"--baseline '{base_name}' is not among the configs ({', '.join(names)})", "pick one of them")
    order = sorted(range(len(specs)), key=lambda i: specs[i].name != base_name)  # baseline first
    common.set_threads(threads)
    dev = common.resolve_device(specs[0].train.device)
    for s in specs:
        if common.resolve_device(s.train.device) != dev:
            raise E3Error("all configurations of a suite must run on one device", "set train.device the same everywhere")
    prec = common.resolve_precision(specs[0].train.precision, dev)
    for s in specs:  # fail on unusable precision before training anything
        common.resolve_precision(s.train.precision, dev)

    manifest = envinfo.collect(torch_threads=threads)
    import torch

    manifest.torch_threads = torch.get_num_threads()
    warnings: list[str] = []
    busy = envinfo.busy_warning(manifest, "suite") if dev == "cpu" else None
    if busy:
        warnings.append(busy)
    suite_id = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    out_dir = Path(output_dir) / "train" / suite_id
    session = common.EnergySession(
        meter, device=dev, cpu_tdp_w=cpu_tdp_w, idle_seconds=idle_seconds, region=region, progress=progress
    )
    toks: dict[tuple, Any] = {}
    corpora: dict[tuple, Any] = {}

    def tokenized(spec: TrainSpec):
        d = spec.data
        ckey = (d.text, d.hf_dataset, d.hf_config, d.hf_split, d.hf_field, d.max_chars, d.val_fraction)
        if ckey not in corpora:
            corpora[ckey] = data.load_corpus(
                d.text, hf_dataset=d.hf_dataset, hf_config=d.hf_config, hf_split=d.hf_split,
                hf_field=d.hf_field, max_chars=d.max_chars, val_fraction=d.val_fraction,
            )  # fmt: skip
        tkey = (ckey, d.tokenizer, d.vocab_size)
        if tkey not in toks:
            toks[tkey] = data.train_tokenizer(corpora[ckey], d.tokenizer, d.vocab_size)
            t = toks[tkey]
            progress(
                f"tokenizer: {t.kind}, vocab {t.vocab_size}, {t.train_ids.numel():,} train / "
                f"{t.val_ids.numel():,} val tokens ({t.train_seconds:.1f} s)"
            )
        return corpora[ckey], toks[tkey]

    corpus0, tok0 = tokenized(specs[order[0]])
    record = SuiteRecord(
        suite_id=suite_id,
        created_utc=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        baseline=base_name,
        corpus=corpus0.describe(),
        tokenizer=tok0.describe(),
        device=dev,
        precision=prec.note,
        manifest=manifest,
        energy_meter=session.name,
        energy_meter_reason=session.reason,
        idle=session.idle_dict(),
        warnings=warnings,
    )
    shapes = {(s.model, s.data.batch_size, s.data.tokenizer, s.data.vocab_size) for s in specs}
    if len(shapes) > 1:
        warnings.append("configurations differ in model, batch or tokenizer: compare them at equal tokens only")
    try:
        for i in order:
            spec = specs[i]
            progress(f"== {spec.name} ({files[i]})")
            try:
                _, tok = tokenized(spec)
            except E3Error as exc:
                record.configs.append(ConfigResult(name=spec.name, status="failed", reason=exc.one_line()))
                continue
            res = run_config(spec, tok, session, device=dev, progress=progress, file=str(files[i]))
            record.configs.append(res)
            _finish(record, base_name)
            record.duration_s = clock() - t0
            atomic_write_text(out_dir / "suite.json", record.model_dump_json(indent=1))
    finally:
        session.close()
    _finish(record, base_name)
    record.duration_s = clock() - t0
    atomic_write_text(out_dir / "suite.json", record.model_dump_json(indent=1))
    report.write_report(record, out_dir, plot=plot)
    return record, out_dir


def _finish(record: SuiteRecord, base_name: str) -> None:
    base = next((c for c in record.configs if c.name == base_name), None)
    for c in record.configs:
        if base is None or c is base or base.status != "ok" or c.status in ("skipped", "failed"):
            continue
        c.vs_baseline = compare(base, c)


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
