"""Command line: parse → config → runner → store → summary. No measurement logic here."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from e3bench.core.errors import E3Error

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="e3bench: efficiency, energy and effectiveness of small language models from one run.",
    pretty_exceptions_enable=False,
)


def _fail(exc: E3Error) -> None:
    typer.echo(f"error: {exc.one_line()}", err=True)
    raise typer.Exit(exc.exit_code)


def _console():
    from rich.console import Console

    return Console(stderr=False, soft_wrap=False, width=None if sys.stdout.isatty() else 120)


@app.command()
def run(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="alias, HF id, local dir or .gguf file"),
    backend: Optional[str] = typer.Option(None, "--backend", "-b", help="backend (default pytorch)"),
    device: Optional[str] = typer.Option(None, "--device", help="cpu | cuda"),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="fp32 | bf16 | fp16"),
    batch_size: Optional[str] = typer.Option(None, "--batch-size", help="comma list, e.g. 1,4,8"),
    prompt_tokens: Optional[int] = typer.Option(None, "--prompt-tokens", help="synthetic prompt length"),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", help="fixed output length"),
    prompts: Optional[str] = typer.Option(None, "--prompts", help="prompts.txt or dataset:field"),
    tasks: Optional[str] = typer.Option(None, "--tasks", help="comma list, e.g. mmlu,hellaswag,gsm8k"),
    limit: Optional[int] = typer.Option(None, "--limit", help="items per task (first N)"),
    log_samples: Optional[bool] = typer.Option(None, "--log-samples", help="save per-item predictions"),
    engine: Optional[str] = typer.Option(None, "--engine", help="e3bench | lm-eval"),
    meter: Optional[str] = typer.Option(None, "--meter", help="auto|nvml|rapl|estimate|codecarbon|none"),
    cross_check: Optional[str] = typer.Option(None, "--cross-check", help="second meter, e.g. codecarbon"),
    cpu_tdp_w: Optional[float] = typer.Option(None, "--cpu-tdp-w", help="CPU TDP for the estimate meter"),
    region: Optional[str] = typer.Option(None, "--region", help="grid region for CO2e, e.g. DE, US-CA"),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch intra-op threads"),
    min_iters: Optional[int] = typer.Option(None, "--min-iters"),
    min_seconds: Optional[float] = typer.Option(None, "--min-seconds"),
    warmup_iters: Optional[int] = typer.Option(None, "--warmup-iters"),
    output_dir: Optional[str] = typer.Option(None, "--output-dir", "-o", help="default results/"),
    cache_dir: Optional[str] = typer.Option(
        None, "--cache-dir", help="converted/exported/quantized models (default ~/.cache/e3bench)"
    ),
    trackers: Optional[str] = typer.Option(None, "--trackers", help="wandb,mlflow: log metrics there too"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML run config"),
    set_: list[str] = typer.Option([], "--set", help="override: key=value (repeatable)"),
    backend_option: list[str] = typer.Option(
        [], "--backend-option", "-O", help="backend option key=value, e.g. n_ctx=4096 (repeatable)"
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress lines"),
) -> None:
    """Benchmark one model configuration: speed, energy and (with --tasks) quality."""
    from e3bench.config.run import build_config

    try:
        cfg = build_config(
            yaml_path=config,
            overrides=dict(
                model=model, backend=backend, device=device, dtype=dtype, batch_sizes=batch_size,
                prompt_tokens=prompt_tokens, max_new_tokens=max_new_tokens, prompts=prompts,
                tasks=tasks, limit=limit, log_samples=log_samples, engine=engine, meter=meter,
                cross_check_meter=cross_check, cpu_tdp_w=cpu_tdp_w, region=region, threads=threads, min_iters=min_iters,
                min_seconds=min_seconds, warmup_iters=warmup_iters, output_dir=output_dir, trackers=trackers,
                cache_dir=cache_dir,
            ),  # fmt: skip
            sets=[f"backend_options.{o}" for o in backend_option] + list(set_),
        )
        from e3bench.results import store
        from e3bench.report.summary import print_summary
        from e3bench.bench.runner import run_one

        console = _console()

        def progress(msg: str) -> None:
            if not quiet:
                console.print(f"[dim]·[/dim] {msg}", highlight=False)

        record = run_one(cfg, progress=progress)
        path = store.save(record, cfg.output_dir, cfg.sweep)
        print_summary(record, console)
        console.print(f"result: {path}", highlight=False)
        if cfg.trackers:
            from e3bench.results import trackers as tr

            for line in tr.log(record, cfg.trackers, output_dir=cfg.output_dir):
                console.print(f"tracker: {line}", highlight=False)
    except E3Error as exc:
        _fail(exc)


@app.command()
def sweep(
    sweep_file: Path = typer.Argument(..., help="YAML sweep file (name, base, grid)"),
    executor: str = typer.Option("local", "--executor", help="local (a subprocess per run) | ray"),
    output_dir: Optional[str] = typer.Option(None, "--output-dir", "-o", help="default: the file's or results/"),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster address (default: local)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="show the plan, run nothing"),
) -> None:
    """Run a grid of configurations; resumable (completed runs, by config hash, are skipped)."""
    try:
        from e3bench.sweep.run import run_sweep

        run_sweep(sweep_file, executor=executor, output_dir=output_dir, ray_address=ray_address,
                  dry_run=dry_run, console=_console())  # fmt: skip
    except E3Error as exc:
        _fail(exc)


@app.command()
def report(
    results_dir: Path = typer.Argument(..., help="results directory (or one sweep inside it)"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="default: <results_dir>/report"),
) -> None:
    """Tables (CSV, LaTeX), plots, Pareto fronts, a Markdown summary and one HTML page."""
    try:
        from e3bench.report.render import build_report

        rep = build_report(results_dir, out)
        console = _console()
        for w in rep.warnings:
            console.print(f"[yellow]note:[/yellow] {w}", highlight=False)
        console.print(f"report: {rep.out_dir / 'report.html'} ({len(rep.configs)} configurations, "
                      f"{len(rep.files)} files)", highlight=False)  # fmt: skip
    except E3Error as exc:
        _fail(exc)


@app.command("ls")
def ls_(
    results_dir: Path = typer.Argument(Path("results"), help="results directory"),
    filter_: list[str] = typer.Option([], "--filter", "-f", help="column=value (also != > < >= <=)"),
    columns: Optional[str] = typer.Option(None, "--columns", help="comma list of columns"),
) -> None:
    """List runs (one row per run × batch size), filtered through the SQLite index."""
    try:
        from rich.table import Table

        from e3bench.report.tables import cell
        from e3bench.results.index import query

        rows = query(results_dir, filter_, columns.split(",") if columns else None)
        console = _console()
        if not rows:
            console.print("no matching runs")
            return
        t = Table()
        for c in rows[0]:
            t.add_column(c)
        for r in rows:
            t.add_row(*(cell(v) for v in r.values()))
        console.print(t)
    except E3Error as exc:
        _fail(exc)


@app.command()
def export(
    results_dir: Path = typer.Argument(..., help="results directory"),
    out: Path = typer.Option(..., "--out", "-o", help="file ending in .csv or .parquet"),
) -> None:
    """Export the flat run table (one row per run × batch size) to CSV or Parquet."""
    try:
        from e3bench.core.fsutil import atomic_write_text
        from e3bench.report.tables import to_csv, to_parquet
        from e3bench.results.flatten import RUN_COLUMNS
        from e3bench.results.index import load_rows

        runs, _, _ = load_rows(results_dir)
        if out.suffix == ".csv":
            atomic_write_text(out, to_csv(runs, RUN_COLUMNS))
        elif out.suffix == ".parquet":
            to_parquet(runs, RUN_COLUMNS, out)
        else:
            raise E3Error(f"cannot export to '{out.suffix or out.name}'", "use a .csv or .parquet file name")
        typer.echo(f"wrote {len(runs)} rows to {out}")
    except E3Error as exc:
        _fail(exc)


@app.command()
def env() -> None:
    """Print the hardware/software fingerprint recorded in every result."""
    from e3bench.bench import envinfo

    m = envinfo.collect()
    console = _console()
    from rich.table import Table

    t = Table(title="e3bench environment", show_header=False)
    for k, v in m.model_dump().items():
        if isinstance(v, dict):
            v = ", ".join(f"{a}={b}" for a, b in v.items()) or "-"
        elif isinstance(v, list):
            v = "; ".join(str(x) for x in v) or "none"
        t.add_row(k, str(v))
    console.print(t)


@app.command()
def models() -> None:
    """List model aliases, whether each is available here, and the installed backends."""
    from rich.table import Table

    from e3bench.core import registry
    from e3bench.backends.models import ALIASES, bundled_gguf_path

    console = _console()
    t = Table(title="model aliases")
    for col in ("alias", "hub id", "available here", "description"):
        t.add_column(col)
    for a in ALIASES.values():
        local = bundled_gguf_path(a)
        t.add_row(a.name, a.hub_id, f"yes: {local}" if local else "hub only", a.description)
    console.print(t)
    b = Table(title="backends")
    b.add_column("backend")
    b.add_column("installed")
    b.add_column("description")
    for name, ok in registry.installed("backend").items():
        b.add_row(name, "yes" if ok else "no", registry.entries("backend")[name].description)
    console.print(b)
    console.print("Any Hugging Face id (org/name), local model directory or .gguf file also works.")


@app.command()
def tasks() -> None:
    """List the built-in effectiveness tasks (use them with `e3bench run --tasks a,b`)."""
    from rich.table import Table

    from e3bench.evals.tasks import describe_tasks

    t = Table(title="tasks")
    t.add_column("task")
    t.add_column("description")
    for name, desc in describe_tasks().items():
        t.add_row(name, desc)
    console = _console()
    console.print(t)
    console.print("Data: $E3BENCH_DATA_DIR first, then the Hugging Face hub. Options: name:key=value,...")


def _register_training() -> None:
    # training commands live with the training code; registered here so there is one CLI
    from e3bench.train.cli import finetune as _finetune
    from e3bench.train.cli import train as _train

    app.command("finetune")(_finetune)
    app.command("train")(_train)


_register_training()


def main() -> None:
    try:
        app()
    except E3Error as exc:  # errors raised outside a command body
        typer.echo(f"error: {exc.one_line()}", err=True)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
