"""Run one RunConfig in this process and keep its record (used by the subprocess executor).

    python -m e3bench.sweep.executors.worker '<RunConfig JSON>'

Writes ``<output_dir>/<sweep>/<config_hash>.json`` — ``status: ok`` or, for a user error,
``status: failed`` with the one-line message — through :func:`e3bench.sweep.finish.finish_run`
and exits 0 when a record was written.

Threads: every executor starts this process with :func:`run_env`, so a configuration runs under
the same thread settings whichever executor runs it (Ray gives its workers
``OMP_NUM_THREADS=1``; a local sweep inherits the shell's): ``threads`` of the config, else the
``OMP_NUM_THREADS`` of the environment the sweep was started in, else the physical cores this
process may use (PyTorch's own default). ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` are set to
that number, and the record's manifest keeps them (``thread_env``) with the ``torch_threads``
the run had.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

from e3bench.config.run import RunConfig
from e3bench.core.errors import E3Error
from e3bench.core.host import resolve_threads

#: environment variables that set the thread pools of OpenMP / MKL / OpenBLAS (torch, onnxruntime)
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def run_env(cfg: RunConfig, requested: int | None, base: Mapping[str, str]) -> dict[str, str]:
    """The environment a run of ``cfg`` gets: ``base`` with every thread variable set to
    ``cfg.threads``, else ``requested`` (the sweep's ``OMP_NUM_THREADS``: :func:`e3bench.core.host.env_threads`), else
    the physical cores this process may use — :func:`e3bench.core.host.resolve_threads`, the rule
    the run itself applies, so the run resolves the same count; whatever ``base`` had for them
    (Ray's ``1``) is replaced."""
    n = resolve_threads(cfg.threads or requested, environ={})[0]
    env = {k: v for k, v in base.items() if k not in THREAD_VARS}
    env.update({k: str(n) for k in THREAD_VARS})
    env["TOKENIZERS_PARALLELISM"] = "false"
    return env


def run_and_store(cfg: RunConfig):
    """Run ``cfg``; a user error becomes a failed record. Returns the record that was saved."""
    from e3bench.bench import envinfo
    from e3bench.bench.runner import run_one
    from e3bench.results.schema import failed_record
    from e3bench.sweep.finish import finish_run

    try:
        record = run_one(cfg, progress=lambda m: print(f"· {m}", file=sys.stderr, flush=True))
    except E3Error as exc:
        record = failed_record(cfg, exc.one_line(), envinfo.collect(sample_cpu=False))
    done = finish_run(record, cfg, resumable=True)
    for line in done.tracker_lines:
        print(f"tracker: {line}", file=sys.stderr)
    return record


def main(argv: list[str]) -> int:
    """Entry point of the subprocess: ``argv[1]`` is the RunConfig as JSON."""
    cfg = RunConfig.model_validate_json(argv[1])
    rec = run_and_store(cfg)
    print(rec.status)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
