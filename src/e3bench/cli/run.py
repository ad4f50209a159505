"""``e3bench run``: one configuration, end to end. Its flags are generated from
:class:`~e3bench.config.run.RunConfig`'s fields (one ``--<field>`` per field, help = the field's
description), so a new config field is a new flag without touching this file."""

from __future__ import annotations

from rich.markup import escape  # progress lines and paths are text, not rich markup

import inspect
import types
import typing
from pathlib import Path
from typing import Any, Optional

import typer

from e3bench.cli import common
from e3bench.cli.common import console, fail
from e3bench.config.run import RunConfig, flag_of
from e3bench.core.errors import E3Error
from e3bench.core.fmt import count
from e3bench.evals.defaults import default_task_or_skip

#: short aliases of some flags
SHORT = {"model": "-m", "backend": "-b", "output_dir": "-o"}
#: fields set another way (``--backend-option``)
NOT_FLAGS = ("backend_options",)
#: fields whose flag takes a comma list, llama-bench style: one run per value (``-p 64,128``)
MULTI = ("prompt_tokens", "max_new_tokens", "threads")


def _cli_type(annotation: Any) -> type:
    """The click-facing type of a field: lists and choices are typed as strings."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _cli_type(args[0])
    if annotation in (bool, int, float):
        return annotation
    return str


def precision_help() -> str:
    """Every precision each registered backend accepts, read from its ``capabilities`` (per
    device where it narrows them; the extra a precision needs), for ``--dtype``'s help."""
    import e3bench.backends  # noqa: F401  (registers the built-in backends)
    from e3bench.config.run import DTYPES
    from e3bench.core import registry

    parts = []
    for name in registry.backends.names():
        cls = registry.backends.peek(name)
        caps = getattr(cls, "capabilities", None)
        if caps is None:
            continue
        own = sorted(p for p in caps.precisions if p not in DTYPES)  # a backend's own: GGUF types, native
        text = ", ".join([p for p in DTYPES if p in caps.precisions] + own)
        by_device = dict(caps.precisions_by_device)
        narrow = [f"{d}: {', '.join(p for p in [*DTYPES, *own] if p in ps)}" for d, ps in sorted(by_device.items())]
        needs: dict[str, list[str]] = {}
        for p, _, extra in caps.precision_extras:
            needs.setdefault(extra, []).append(p)
        extras = [f"{'/'.join(ps)} need e3bench[{extra}]" for extra, ps in sorted(needs.items())]
        notes = "; ".join(narrow + [", ".join(extras)] if extras else narrow)
        parts.append(f"{name}: {text}" + (f" ({notes})" if notes else ""))
    return escape("precision; the backends accept: " + ". ".join(parts))  # [quant] is text, not markup


def _field_params() -> list[inspect.Parameter]:
    params = []
    for name, field in RunConfig.model_fields.items():
        if name in NOT_FLAGS:
            continue
        decls = [flag_of(name)] + ([SHORT[name]] if name in SHORT else [])
        text = field.description or ""
        if name == "dtype":
            text = precision_help()
        if name in MULTI:
            text += "; a comma list (e.g. 64,128) makes one run per value, each its own record"
        opt = typer.Option(None, *decls, help=text, show_default=False)
        kind = str if name in MULTI else _cli_type(field.annotation)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=Optional[kind]))
    return params


_EXTRA = [
    inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
                      default=typer.Option(None, "--config", "-c", help="YAML run config")),
    inspect.Parameter("set_", inspect.Parameter.KEYWORD_ONLY, annotation=list[str],
                      default=typer.Option([], "--set", help="override: key=value (repeatable)")),
    inspect.Parameter("backend_option", inspect.Parameter.KEYWORD_ONLY, annotation=list[str],
                      default=typer.Option([], "--backend-option", "-O",
                                           help="backend option key=value, e.g. n_ctx=4096 (repeatable)")),
    inspect.Parameter("model_args", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str],
                      default=typer.Option(None, "--model-args", help="lm-eval-style model arguments, comma separated: "
                                           "revision=REV, trust_remote_code=true, chat_template=on|off, dtype=bfloat16, "
                                           "device=cuda:1, pretrained=MODEL (each sets the flag of that name)")),
    inspect.Parameter("repeats", inspect.Parameter.KEYWORD_ONLY, annotation=int,
                      default=typer.Option(1, "--repeats", "-r", help="run each configuration N times: N records with the "
                                           "same config_hash and their own run_id (e3bench report aggregates them)")),
    inspect.Parameter("quiet", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                      default=typer.Option(False, "--quiet", "-q", help="no progress (bars or lines) on stderr")),
]  # fmt: skip


def build_run_config(flags: dict[str, Any], *, config: Path | None, sets: list[str], backend_options: list[str]):
    """The one validated RunConfig of ``e3bench run`` (see :func:`run_configs`; a comma list in
    ``flags`` is an error here)."""
    cfgs = run_configs(flags, config=config, sets=sets, backend_options=backend_options)
    if len(cfgs) != 1:
        raise E3Error(f"{len(cfgs)} configurations where one was expected", "give one value per flag")
    return cfgs[0]


def run_configs(flags: dict[str, Any], *, config: Path | None, sets: list[str], backend_options: list[str]) -> list:
    """The validated RunConfigs of ``e3bench run``: YAML < flags < ``-O`` < ``--set``, one per
    combination of the comma lists of :data:`MULTI` (``--prompt-tokens 64,128 --threads 1,2``:
    four), expanded by the sweep planner (:func:`e3bench.sweep.plan.combine`). Each must be
    runnable here (backend installed, device and precision supported).

    Raises :class:`~e3bench.config.validate.ConfigError` with every problem, each naming its flag.
    """
    from e3bench.config.overrides import parse_set
    from e3bench.config.run import Layer, base_layers, set_layer
    from e3bench.config.validate import Problem, raise_problems
    from e3bench.sweep.plan import combine

    problems: list[Problem] = []
    lists: dict[str, list[int]] = {}
    bad: set[str] = set()  # reported here; built with the field's default so the rest is checked too
    for key in MULTI:
        value = flags.get(key)
        if isinstance(value, str) and "," in value:
            try:
                lists[key] = [int(v) for v in value.split(",") if v.strip()]
            except ValueError:
                bad.add(key)
                problems.append(Problem(flag_of(key), f"'{value}' is not a comma list of whole numbers",
                                        f"e.g. {flag_of(key)} 64,128"))  # fmt: skip
    before, dups = base_layers(config, {k: v for k, v in flags.items() if k not in lists and k not in bad})
    problems = dups + problems
    axes = [[Layer({k: v}, lambda _path, k=k: flag_of(k)) for v in values] for k, values in lists.items()]
    opts = parse_set([f"backend_options.{o}" for o in backend_options], flag="--backend-option", example="n_ctx=4096")
    after = [Layer(opts, lambda k: f"--backend-option {k.split('.', 1)[-1]}"), set_layer(list(sets))]
    runs, _, found = combine(before, axes, after, runnable=True, run_defaults=True)
    raise_problems(problems + found)
    return runs


def run(**kwargs: Any) -> None:
    """Benchmark a model configuration: speed, energy and quality on the same loaded model.

    Quality by default on a fixed ARC-Easy subset, see --tasks; --tasks none: no task).
    Comma lists of --prompt-tokens, --max-new-tokens and --threads, and --repeats, make several
    runs, each its own record."""
    quiet, repeats = kwargs.pop("quiet"), kwargs.pop("repeats")
    try:
        if repeats < 1:
            raise E3Error(f"--repeats must be ≥ 1 (got {repeats})", "e.g. --repeats 3")
        cfgs = run_configs(
            {k: v for k, v in kwargs.items() if k in RunConfig.model_fields or k == "model_args"},
            config=kwargs["config"], sets=kwargs["set_"], backend_options=kwargs["backend_option"],
        )  # fmt: skip
        jobs = [default_task_or_skip(cfg) for cfg in cfgs for _ in range(repeats)]
        out = console()
        records = []
        for i, (cfg, skipped) in enumerate(jobs, 1):
            if len(jobs) > 1:
                out.rule(escape(f"run {i} of {len(jobs)}: {_varied(cfg, cfgs)}"), style="bold")
            records.append(_run_and_keep(cfg, skipped, out, quiet=quiet, left=len(jobs) - i))
        if len(jobs) > 1:
            from e3bench.report.summary import print_runs

            print_runs(records, out, varied=[k for k in MULTI if len({getattr(c, k) for c in cfgs}) > 1])
    except E3Error as exc:
        fail(exc)


def _varied(cfg: RunConfig, cfgs: list[RunConfig]) -> str:
    """What tells ``cfg`` apart from the other configurations of the command (``prompt_tokens=64``)."""
    keys = [k for k in MULTI if len({getattr(c, k) for c in cfgs}) > 1]
    return ", ".join(f"{k}={getattr(cfg, k)}" for k in keys) or f"config {cfg.config_hash()}"


def _run_and_keep(cfg: RunConfig, skipped: str | None, out, *, quiet: bool, left: int):
    """One run of ``cfg``: measure (progress on stderr), save the record, print its summary on
    stdout. A batch size that did not fit is an :class:`E3Error` after the record is saved
    (``left``: runs of the command after it, not started)."""
    from e3bench.bench.runner import run_one
    from e3bench.cli.progress import reporter
    from e3bench.report.summary import print_summary
    from e3bench.sweep.finish import failed_batches_error, finish_run

    common.doing("run", what=f"{cfg.model} ({cfg.backend}, {cfg.dtype}, {cfg.device}; config {cfg.config_hash()})",
                 results=str(Path(cfg.output_dir) / cfg.sweep))  # fmt: skip
    progress = reporter(quiet=quiet)
    if skipped:
        progress.note(skipped)
    record = run_one(cfg, progress=progress)
    if skipped:
        record.warnings.append(skipped)
    done = finish_run(record, cfg, resumable=False)
    print_summary(record, out)
    out.print(escape(f"result: {done.path}"), highlight=False)
    for line in done.tracker_lines:
        out.print(escape(f"tracker: {line}"), highlight=False)
    failed = failed_batches_error(record, done.path)
    if failed is not None:
        if left:
            failed.problem += f"; the {count(left, 'run')} after it {'was' if left == 1 else 'were'} not started"
        raise failed
    return record


run.__signature__ = inspect.Signature(_field_params() + _EXTRA)  # type: ignore[attr-defined]
