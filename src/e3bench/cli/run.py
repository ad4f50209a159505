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

#: short aliases of some flags
SHORT = {"model": "-m", "backend": "-b", "output_dir": "-o"}
#: fields set another way (``--backend-option``)
NOT_FLAGS = ("backend_options",)


def _cli_type(annotation: Any) -> type:
    """The click-facing type of a field: lists and choices are typed as strings."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _cli_type(args[0])
    if annotation in (bool, int, float):
        return annotation
    return str


def _field_params() -> list[inspect.Parameter]:
    params = []
    for name, field in RunConfig.model_fields.items():
        if name in NOT_FLAGS:
            continue
        decls = [flag_of(name)] + ([SHORT[name]] if name in SHORT else [])
        opt = typer.Option(None, *decls, help=field.description or "", show_default=False)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=opt,
                                        annotation=Optional[_cli_type(field.annotation)]))  # fmt: skip
    return params


_EXTRA = [
    inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
                      default=typer.Option(None, "--config", "-c", help="YAML run config")),
    inspect.Parameter("set_", inspect.Parameter.KEYWORD_ONLY, annotation=list[str],
                      default=typer.Option([], "--set", help="override: key=value (repeatable)")),
    inspect.Parameter("backend_option", inspect.Parameter.KEYWORD_ONLY, annotation=list[str],
                      default=typer.Option([], "--backend-option", "-O",
                                           help="backend option key=value, e.g. n_ctx=4096 (repeatable)")),
    inspect.Parameter("quiet", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                      default=typer.Option(False, "--quiet", "-q", help="no progress (bars or lines) on stderr")),
]  # fmt: skip


def build_run_config(flags: dict[str, Any], *, config: Path | None, sets: list[str], backend_options: list[str]):
    """The validated RunConfig of ``e3bench run``: YAML < flags < ``-O`` < ``--set``; it must be
    runnable here (backend installed, device and precision supported).

    Raises :class:`~e3bench.config.validate.ConfigError` with every problem, each naming its flag.
    """
    from e3bench.config.overrides import parse_set
    from e3bench.config.run import Layer, build_config, set_layer

    opts = parse_set([f"backend_options.{o}" for o in backend_options], flag="--backend-option", example="n_ctx=4096")
    opt_layer = Layer(opts, lambda k: f"--backend-option {k.split('.', 1)[-1]}")
    return build_config(yaml_path=config, overrides=flags, layers=[opt_layer, set_layer(list(sets))], runnable=True)


def run(**kwargs: Any) -> None:
    """Benchmark one model configuration: speed, energy and (with --tasks) quality."""
    quiet = kwargs.pop("quiet")
    try:
        cfg = build_run_config(
            {k: v for k, v in kwargs.items() if k in RunConfig.model_fields},
            config=kwargs["config"], sets=kwargs["set_"], backend_options=kwargs["backend_option"],
        )  # fmt: skip
        common.doing("run", what=f"{cfg.model} ({cfg.backend}, {cfg.dtype}, {cfg.device}; config {cfg.config_hash()})",
                     results=str(Path(cfg.output_dir) / cfg.sweep))  # fmt: skip
        from e3bench.bench.runner import run_one
        from e3bench.report.summary import print_summary
        from e3bench.sweep.finish import failed_batches_error, finish_run

        from e3bench.cli.progress import reporter

        out = console()
        record = run_one(cfg, progress=reporter(quiet=quiet))  # progress on stderr, results on stdout
        done = finish_run(record, cfg, resumable=False)
        print_summary(record, out)
        out.print(escape(f"result: {done.path}"), highlight=False)
        for line in done.tracker_lines:
            out.print(escape(f"tracker: {line}"), highlight=False)
        failed = failed_batches_error(record, done.path)
        if failed is not None:
            raise failed
    except E3Error as exc:
        fail(exc)


run.__signature__ = inspect.Signature(_field_params() + _EXTRA)  # type: ignore[attr-defined]
