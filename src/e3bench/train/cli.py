"""Command-line entry points of the training scenarios, as plain typer-style functions.

The main CLI registers them (``app.command()(finetune)``, ``app.command()(train)``) and catches
:class:`~e3bench.core.errors.E3Error`. ``python -m e3bench.train.cli {finetune,train} ...`` runs them
standalone with the same error handling.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable
from typing import Any

import typer

from e3bench.core.fmt import count, num, wrap
from e3bench.core.progress import Reporter


def _check_output(output_dir: str, sub: str) -> None:
    """Fail before any model loads or trains when ``<output_dir>/<sub>`` cannot be written."""
    from pathlib import Path

    from e3bench.config.validate import check_output_dir

    for _, err in check_output_dir(Path(output_dir) / sub):
        raise err


def _progress(quiet: bool, reporter: Reporter | None):
    """``reporter`` (the CLI's), else plain ``· message`` lines on stderr (standalone use)."""
    if reporter is not None:
        return reporter

    def progress(msg: str) -> None:
        if not quiet:
            typer.echo(f"· {msg}", err=True)

    return progress


def command(fn: Callable[..., None], make_reporter: Callable[[bool], Reporter] | None) -> Callable[..., None]:
    """``fn`` (:func:`finetune` or :func:`train`) as a typer command that passes it
    ``reporter=make_reporter(quiet)``: the CLI's progress display, which this layer cannot
    import (None: plain lines)."""
    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def cmd(**kwargs: Any) -> None:
        made = make_reporter(bool(kwargs.get("quiet"))) if make_reporter else None
        fn(**kwargs, reporter=made)

    cmd.__signature__ = sig.replace(parameters=[p for p in sig.parameters.values() if p.name != "reporter"])  # type: ignore[attr-defined]
    return cmd


def finetune(
    model: str = typer.Option(..., "--model", "-m", help="alias, HF id, local model dir or .gguf file"),
    task: str | None = typer.Option(None, "--task", help="boolq (default) | copa | rte | cb | wic | wsc | multirc (SuperGLUE) | arc_easy | openbookqa | hellaswag; with --train-file the name your data is recorded under (default: the file's name)"),
    train_file: str | None = typer.Option(None, "--train-file", help="JSONL {query, choices, gold} to train on"),
    eval_file: str | None = typer.Option(None, "--eval-file", help="JSONL {query, choices, gold} to evaluate on"),
    mode: str = typer.Option("lora", "--mode", help="lora | full"),
    lora_r: int = typer.Option(8, "--lora-r"),
    lora_alpha: int = typer.Option(16, "--lora-alpha"),
    lora_dropout: float = typer.Option(0.0, "--lora-dropout"),
    lora_targets: str | None = typer.Option(None, "--lora-targets", help="comma list of module names (default: peft's per-model choice)"),
    optimizer: str = typer.Option("adamw", "--optimizer", help="adamw | muon | adamw8bit | galore"),
    lr: float | None = typer.Option(None, "--lr", help="default 5e-4 (LoRA) / 5e-5 (full)"),
    weight_decay: float = typer.Option(0.0, "--weight-decay"),
    warmup_steps: int = typer.Option(0, "--warmup-steps"),
    lr_schedule: str = typer.Option("constant", "--lr-schedule", help="constant | linear | cosine (after the warm-up, over --max-steps)"),
    batch_size: int = typer.Option(8, "--batch-size"),
    max_steps: int = typer.Option(100, "--max-steps"),
    max_train_samples: int | None = typer.Option(None, "--max-train-samples"),
    max_eval_samples: int = typer.Option(200, "--max-eval-samples"),
    eval_every: int = typer.Option(20, "--eval-every", help="steps between validation evaluations"),
    target_accuracy: float = typer.Option(0.7, "--target-accuracy", help="for time/energy-to-accuracy"),
    max_seq_len: int = typer.Option(256, "--max-seq-len"),
    grad_clip: float = typer.Option(1.0, "--grad-clip", help="0 disables clipping"),
    grad_checkpointing: bool = typer.Option(False, "--grad-ckpt/--no-grad-ckpt"),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    precision: str = typer.Option("auto", "--precision", help="auto | fp32 | bf16 | fp16"),
    meter: str = typer.Option("auto", "--meter", help="auto|nvml|rapl|estimate|codecarbon|none"),
    idle_seconds: float = typer.Option(2.0, "--idle-seconds", help="idle-baseline length (0: none)"),
    cpu_tdp_w: float | None = typer.Option(None, "--cpu-tdp-w"),
    region: str | None = typer.Option(None, "--region", help="grid region for CO2e"),
    threads: int | None = typer.Option(None, "--threads", help="torch intra-op threads"),
    output_dir: str = typer.Option("results", "--output-dir", "-o"),
    checkpoint_every: int | None = typer.Option(None, "--checkpoint-every", help="default: every evaluation"),
    resume: bool = typer.Option(False, "--resume", help="continue from this configuration's checkpoint"),
    trust_remote_code: bool = typer.Option(
        False, "--trust-remote-code", help="let the model folder's own Python code run (off: such models are refused)"
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
    reporter: Reporter | None = None,
) -> None:
    """Fine-tune (LoRA or full) on a classification task: speed, memory, energy, time/energy to accuracy.

    Reports speed, memory, energy and time/energy to a target accuracy."""
    from pydantic import ValidationError

    from e3bench.core.errors import E3Error
    from e3bench.train.finetune import FinetuneConfig, run_finetune

    try:
        cfg = FinetuneConfig(
            model=model, task=task, train_file=train_file, eval_file=eval_file, mode=mode, lora_r=lora_r,
            lora_alpha=lora_alpha, lora_dropout=lora_dropout,
            lora_targets=tuple(t.strip() for t in lora_targets.split(",") if t.strip()) if lora_targets else None,
            optimizer=optimizer, lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps,
            lr_schedule=lr_schedule, batch_size=batch_size, max_steps=max_steps, max_train_samples=max_train_samples,
            max_eval_samples=max_eval_samples, eval_every=eval_every, target_accuracy=target_accuracy,
            max_seq_len=max_seq_len, grad_clip=grad_clip or None, grad_checkpointing=grad_checkpointing,
            seed=seed, device=device, precision=precision, meter=meter, idle_seconds=idle_seconds,
            cpu_tdp_w=cpu_tdp_w, region=region, threads=threads, output_dir=output_dir,
            checkpoint_every=checkpoint_every, trust_remote_code=trust_remote_code,
        )  # fmt: skip
    except ValidationError as exc:
        err = exc.errors()[0]
        raise E3Error(f"--{str(err['loc'][0]).replace('_', '-')}: {err['msg']}", "fix the option value") from None
    _check_output(output_dir, "finetune")
    record, path = run_finetune(cfg, resume=resume, progress=_progress(quiet, reporter))
    typer.echo(format_finetune(record))
    typer.echo(f"result: {path}")


def train(
    suite: list[str] = typer.Option([], "--suite", "-s", help="TOML config files, a directory or a glob"),
    configs: list[str] | None = typer.Argument(None, help="more TOML files (a shell glob after --suite lands here)"),
    text: str | None = typer.Option(None, "--text", help="training text file for every config"),
    max_steps: int | None = typer.Option(None, "--max-steps", help="override train.max_steps everywhere"),
    set_: list[str] = typer.Option([], "--set", help="section.key=value for every config (repeatable)"),
    baseline: str | None = typer.Option(None, "--baseline", help="reference config name (default: 'baseline')"),
    device: str | None = typer.Option(None, "--device", help="auto | cpu | cuda (overrides the files)"),
    meter: str = typer.Option("auto", "--meter", help="auto|nvml|rapl|estimate|codecarbon|none"),
    idle_seconds: float = typer.Option(2.0, "--idle-seconds"),
    cpu_tdp_w: float | None = typer.Option(None, "--cpu-tdp-w"),
    region: str | None = typer.Option(None, "--region"),
    threads: int | None = typer.Option(None, "--threads", help="torch intra-op threads (default on CPU: usable cores − 1)"),
    output_dir: str = typer.Option("results", "--output-dir", "-o"),
    no_plot: bool = typer.Option(False, "--no-plot", help="skip loss_curves.png"),
    seeds: int = typer.Option(1, "--seeds", help="runs per configuration (seed, seed+1, ...), interleaved; "
                              "claims are judged over them"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
    reporter: Reporter | None = None,
) -> None:
    """Training-efficiency suite: small decoders trained from scratch under named configurations.

    Trains a small decoder from scratch under each named
    configuration and compare them with the baseline (REPORT.md, loss_curves.png, suite.json)."""
    from e3bench.train.suite import run_suite

    _check_output(output_dir, "train")
    record, out = run_suite(
        [*suite, *(configs or [])], output_dir=output_dir, sets=set_, text=text, max_steps=max_steps,
        device=device, meter=meter, idle_seconds=idle_seconds, cpu_tdp_w=cpu_tdp_w, region=region,
        threads=threads, baseline=baseline, plot=not no_plot, progress=_progress(quiet, reporter), seeds=seeds,
    )  # fmt: skip
    typer.echo(format_suite(record))
    typer.echo(f"report: {out / 'REPORT.md'}")


# --------------------------------------------------------------------------------- output
def format_finetune(r, width: int | None = None) -> str:
    """The console summary of a :class:`~e3bench.train.records.FinetuneRecord`, each line
    wrapped at spaces to ``width`` columns (default: the terminal's, ``COLUMNS`` honoured)
    with its continuation indented; paths and ids are never broken."""
    from e3bench.train.records import basis_energy_j

    t = r.target
    e = r.train_energy
    ej = basis_energy_j(e)
    lines = [
        f"{r.model['architecture']} {r.model['name']} on {r.data['task']} ({r.method['fine_tuning']}, {r.method['mode']} mode): "
        f"status {r.status}",
        f"  trainable {r.trainable_parameters:,} / {r.total_parameters:,} params ({100 * r.trainable_fraction:.2f}%)",
        f"  {count(r.steps, 'step')}, {count(r.samples_seen, 'sample')}, {count(r.tokens_seen, 'token', sep=True)} in {r.train_time_s:.1f} s: "
        f"{r.train_tokens_per_s:,.0f} tokens/s, {r.train_samples_per_s:.2f} samples/s",
        f"  accuracy final {num(r.final_accuracy, '.3f')} best {num(r.best_accuracy, '.3f')} "
        f"(majority class {r.data.get('majority_class_accuracy', float('nan')):.3f})",
    ]
    if r.evals and r.evals[-1].metrics:
        lines.append("  final " + ", ".join(f"{k} {v:.3f}" for k, v in r.evals[-1].metrics.items()))
    m = r.vs_majority
    if m is not None:
        lines.append(f"  accuracy − majority class = {m.margin:+.3f} (95% CI {m.ci95_low:+.3f} to {m.ci95_high:+.3f}; "
                     f"{'above the majority class' if m.clear else 'not clearly above the majority class'}; "
                     f"{m.which}, {m.n_items} items, Wilson interval)")  # fmt: skip
    if r.memory:
        lines.append(
            f"  peak RSS {r.memory.peak_rss_bytes / 2**20:,.0f} MiB"
            + (f", peak GPU {r.memory.peak_device_memory_bytes / 2**20:,.0f} MiB" if r.memory.peak_device_memory_bytes else "")
        )
    if e is not None:
        lines.append(
            f"  training energy {num(ej, ',.1f')} J ({e.basis}; {e.method}, {e.sensor}) = "
            f"{num(None if ej is None else ej / 3.6e6)} kWh"
        )
    if t is not None:
        if t.reached and t.reached_at_step:
            lines.append(
                f"  target {t.target_accuracy:.3f} reached at step {t.reached_at_step}: {t.time_to_target_s:.1f} s, "
                f"{num(t.energy_to_target_j, ',.1f')} J, {t.samples_to_target} samples"
            )
        elif t.reached:  # at step 0: the untrained model met it, no time or energy to the target
            lines.append(f"  target {t.target_accuracy:.3f}: {t.note}; no time or energy to the target")
        else:
            lines.append(f"  {t.note}")
    for w in r.warnings:
        lines.append(f"  warning: {w}")
    if width is None:
        import shutil

        width = shutil.get_terminal_size().columns
    indent = lambda line: len(line) - len(line.lstrip()) + 2  # noqa: E731
    return "\n".join(part for line in lines for part in wrap(line, width, indent(line)))


def format_suite(record) -> str:
    """The console table of a :class:`~e3bench.train.records.SuiteRecord`."""
    from e3bench.train.suite.report import summary_rows

    rows = summary_rows(record)
    head = f"{'config':<14} {'status':<9} {'val loss':>9} {'Δ@tokens':>9} {'tok/s':>9} {'opt KiB':>9} {'energy J':>9}"
    out = [head, "-" * len(head)]
    for r in rows:
        out.append(
            f"{r['config']:<14} {r['status']:<9} {num(r['final_val_loss'], '.3f'):>9} {num(r['delta'], '+.3f'):>9} "
            f"{num(r['tokens_per_s'], ',.0f'):>9} {num(r['opt_state_kib'], ',.0f'):>9} {num(r['energy_j'], ',.1f'):>9}"
            + (f"  claims: {r['claims']}" if r.get("claims") else "")
        )
    for c in [*record.configs, *record.repeats]:  # why a configuration did not finish, in one line each
        if c.status != "ok" and c.reason:
            out.append(f"{c.name} (seed {c.seed}) {c.status}: {c.reason}")
    return "\n".join(out)


def main() -> None:  # pragma: no cover - thin wrapper
    """``python -m e3bench.train.cli``: the training commands alone (E3Error → one line, exit 2)."""
    from e3bench.core.errors import E3Error

    app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)
    app.command("finetune")(command(finetune, None))
    app.command("train")(command(train, None))
    try:
        app()
    except E3Error as exc:
        typer.echo(f"error: {exc.one_line()}", err=True)
        sys.exit(exc.exit_code)


if __name__ == "__main__":  # pragma: no cover
    main()
