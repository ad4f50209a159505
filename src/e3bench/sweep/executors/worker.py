"""Run one RunConfig in this process and keep its record (used by the subprocess executor).

    python -m e3bench.sweep.executors.worker '<RunConfig JSON>'

Writes ``<output_dir>/<sweep>/<config_hash>.json`` — ``status: ok`` or, for a user error,
``status: failed`` with the one-line message — through :func:`e3bench.sweep.finish.finish_run`
and exits 0 when a record was written.
"""

from __future__ import annotations

import sys

from e3bench.config.run import RunConfig
from e3bench.core.errors import E3Error


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
