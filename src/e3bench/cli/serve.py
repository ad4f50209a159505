"""``e3bench serve``: load-test an OpenAI-compatible server (given by ``--url``, or started with
``--launch``) at concurrency levels and request rates; latency percentiles, goodput under SLOs,
joules per request, and quality from the same server (docs/serve.md)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer

from e3bench.cli import common
from e3bench.cli.common import console, fail
from e3bench.core.errors import E3Error


def _numbers(text: str | None, what: str, kind: type) -> list:
    if not text:
        return []
    out = []
    for part in text.split(","):
        try:
            v = kind(part.strip())
        except ValueError:
            raise E3Error(f"{what} {text!r}: '{part.strip()}' is not {'a whole number' if kind is int else 'a number'}",
                          f"pass a comma list, e.g. {what} {'1,2,4' if kind is int else '0.5,1,2'}") from None  # fmt: skip
        if not (v > 0 and math.isfinite(v)):
            raise E3Error(f"{what} {text!r}: {part.strip()} must be a finite number above 0", f"pass positive values to {what}")
        out.append(v)
    return out


def serve(
    model: str = typer.Option(..., "--model", "-m", help="the model: the name the server serves (--url), or an alias, hub id, folder or .gguf to launch"),
    url: Optional[str] = typer.Option(None, "--url", help="base URL of a running OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1"),
    launch: Optional[str] = typer.Option(None, "--launch", help="start the server: transformers | llamacpp | vllm (on 127.0.0.1, a free port)"),
    port: Optional[int] = typer.Option(None, "--port", help="port for --launch (default: a free one)"),
    concurrency: Optional[str] = typer.Option(None, "--concurrency", "-c", help="closed-loop levels, e.g. 1,2,4,8"),
    rate: Optional[str] = typer.Option(None, "--rate", help="open-loop levels in requests/s, e.g. 0.5,1,2"),
    arrival: str = typer.Option("poisson", "--arrival", help="open-loop arrivals: poisson | constant"),
    seed: int = typer.Option(0, "--seed", help="seed of the arrival schedule (and task sampling)"),
    min_requests: int = typer.Option(10, "--min-requests", help="each level runs at least this many requests"),
    min_seconds: float = typer.Option(10.0, "--min-seconds", help="... and at least this many seconds"),
    warmup: int = typer.Option(2, "--warmup", help="warm-up requests before the first level (not measured)"),
    prompt_tokens: int = typer.Option(64, "--prompt-tokens", "-p", help="tokens per synthetic prompt"),
    max_tokens: int = typer.Option(32, "--max-tokens", "-n", help="output tokens asked per request"),
    prompts: Optional[str] = typer.Option(None, "--prompts", help="synthetic (default), a text file (one prompt per line) or dataset:field, as in run"),
    ignore_eos: bool = typer.Option(False, "--ignore-eos", help="ask for exactly --max-tokens (vLLM/llama.cpp's ignore_eos; transformers serve refuses it)"),
    slo: Optional[str] = typer.Option(None, "--slo", help="SLOs in ms for goodput, e.g. ttft_ms=500,tpot_ms=50 (ttft_ms, tpot_ms, itl_ms, e2e_ms)"),
    tasks: Optional[str] = typer.Option(None, "--tasks", "-t", help="generative quality tasks through the server, e.g. gsm8k"),
    limit: Optional[int] = typer.Option(None, "--limit", help="items per task"),
    meter: str = typer.Option("auto", "--meter", help="energy meter (as run); the estimate follows the server's processes"),
    idle_seconds: float = typer.Option(5.0, "--idle-seconds", help="idle baseline with the server loaded and idle"),
    ready_timeout: float = typer.Option(300.0, "--ready-timeout", help="seconds a launched server may take to answer"),
    request_timeout: float = typer.Option(300.0, "--request-timeout", help="seconds one request may take"),
    device: str = typer.Option("cpu", "--device", help="device of a launched server (cpu, cuda)"),
    server_pid: Optional[int] = typer.Option(None, "--server-pid", help="pid of a --url server for the estimate meter"),
    server_arg: Optional[list[str]] = typer.Option(None, "--server-arg", help="extra argument for the --launch command, repeatable, e.g. --server-arg=--continuous-batching (transformers serve answers one request at a time without it)"),
    output_dir: Path = typer.Option(Path("results"), "--output-dir", "-o", help="results directory"),
    sweep: str = typer.Option("serve", "--sweep", help="folder inside the results directory"),
) -> None:
    """Load-test an OpenAI-compatible server: TTFT/TPOT/ITL/E2E percentiles, throughput, goodput, J/request per level.

    Each level runs >= --min-requests and >= --min-seconds after a warm-up; one record (kind serve) is kept in the results directory, listed by `e3bench ls`, in `e3bench report`."""
    from e3bench.serve.levels import parse_slo
    from e3bench.serve.session import ServeSettings, run_serve
    from e3bench.serve.tasks import check_tasks

    try:
        from e3bench.config.taskspec import split_task_list

        s = ServeSettings(
            model=model, url=url, launch=launch, port=port, concurrency=_numbers(concurrency, "--concurrency", int),
            rates=_numbers(rate, "--rate", float), arrival=arrival, seed=seed, min_requests=min_requests,
            min_seconds=min_seconds, warmup=warmup, prompt_tokens=prompt_tokens, max_tokens=max_tokens, prompts=prompts,
            ignore_eos=ignore_eos, slo=parse_slo(slo), tasks=list(split_task_list(tasks)) if tasks else [], limit=limit,
            meter=meter, idle_s=idle_seconds, ready_timeout_s=ready_timeout, request_timeout_s=request_timeout,
            device=device, server_pid=server_pid, server_args=list(server_arg or []), output_dir=output_dir, sweep=sweep,
        )  # fmt: skip
        s.check()
        check_tasks(s.tasks)
        common.doing("serve", what=f"{model} at {url or launch}", results=str(output_dir))
        from e3bench.cli.progress import reporter

        rec, path = run_serve(s, reporter())
    except E3Error as exc:
        fail(exc)
    from e3bench.report.serving import COLUMNS, CONSOLE_ORDER, level_rows
    from e3bench.report.textable import print_table

    con = console()
    cols = [c for c in COLUMNS if c not in ("session", "model")]
    print_table(con, cols, level_rows(rec.model_dump(mode="json")), hint="all columns: e3bench export DIR --format serve",
                drop_order=CONSOLE_ORDER)
    for t in rec.effectiveness:
        scores = ", ".join(f"{k} {v:.3g}" for k, v in t.metrics.items())
        con.print(f"{t.task} through the server: {scores} over {t.n_items} items", highlight=False, markup=False)
    for w in rec.warnings:
        typer.echo(f"warning: {w}", err=True)
    con.print(f"saved {path}", highlight=False, markup=False)
