"""Run one RunConfig in this process and store its record (used by the subprocess executor).

    python -m e3bench.sweep.executors.worker '<RunConfig JSON>'

Writes ``<output_dir>/<sweep>/<config_hash>.json`` — ``status: ok`` or, for a user error,
``status: failed`` with the one-line message — and exits 0 when a record was written.
"""

from __future__ import annotations

import sys

from e3bench.config.run import RunConfig
from e3bench.core.errors import E3Error


def run_and_store(cfg: RunConfig):
    from e3bench.bench import envinfo
    from e3bench.bench.runner import run_one
    from e3bench.results import store
    from e3bench.results.schema import failed_record

    try:
        record = run_one(cfg, progress=lambda m: print(f"· {m}", file=sys.stderr, flush=True))
    except E3Error as exc:
        record = failed_record(cfg, exc.one_line(), envinfo.collect(sample_cpu=False))
    store.save(record, cfg.output_dir, cfg.sweep, stem=cfg.config_hash())
    if cfg.trackers and record.status == "ok":
        from e3bench.results import trackers

        for line in trackers.log(record, cfg.trackers, project=cfg.sweep, output_dir=cfg.output_dir):
            print(f"tracker: {line}", file=sys.stderr)
    return record


def main(argv: list[str]) -> int:
    cfg = RunConfig.model_validate_json(argv[1])
    rec = run_and_store(cfg)
    print(rec.status)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
