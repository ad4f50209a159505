"""The one way a finished run is kept: write its record, then log it to the trackers.

Used by ``e3bench run``, the sweep worker and the executors' failure paths, with ONE rule:

* **File**: ``<output_dir>/<sweep>/<stem>.json``. ``stem`` is the record's ``run_id`` for a
  one-off run (``resumable=False``: every run is kept, repeats never overwrite each other) and
  the config hash inside a sweep (``resumable=True``: one record per configuration, so a resumed
  sweep skips it when ``ok`` and a retry replaces a ``failed`` one).
* **Trackers**: only ``ok`` records, logged under project ``"e3bench"`` (both paths), grouped by
  the sweep name (``cfg.sweep``; ``"runs"`` for one-off runs), run name = ``run_id``. Before this
  rule, ``e3bench run`` logged to project "e3bench" and sweeps to a project named after the sweep.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from e3bench.config.run import RunConfig
from e3bench.core.errors import E3Error
from e3bench.results import store
from e3bench.results.schema import ResultRecord


@dataclass(frozen=True)
class Finished:
    """Where the record went and one line per tracker (empty when none was asked or run)."""

    path: Path
    tracker_lines: list[str]


def resumable_path(cfg: RunConfig) -> Path:
    """The file a sweep's record of ``cfg`` is written to (``<config_hash>.json``)."""
    return store.record_path(cfg.output_dir, cfg.sweep, cfg.config_hash())


def finish_run(record: ResultRecord, cfg: RunConfig, *, resumable: bool, trackers: bool = True) -> Finished:
    """Save ``record`` (atomically) and log it to ``cfg.trackers``; see the module docstring.

    ``trackers=False`` only saves (the Ray driver: the worker node already logged). Raises
    :class:`~e3bench.core.errors.E3Error` when the record cannot be written; tracker failures
    never raise, they come back as lines.
    """
    path = store.save(record, cfg.output_dir, cfg.sweep, stem=cfg.config_hash() if resumable else record.run_id)
    lines: list[str] = []
    if trackers and cfg.trackers and record.status == "ok":
        from e3bench.results import trackers as tr

        lines = tr.log(record, cfg.trackers, project=tr.PROJECT, group=cfg.sweep, output_dir=cfg.output_dir)
    return Finished(path, lines)


class FailedBatches(E3Error):
    """Some batch sizes ran out of memory; the record of the ones measured before is saved
    (``record``, at ``path``). Raised by ``e3bench.run``; ``e3bench run`` prints it and exits 2."""

    def __init__(self, problem: str, fix: str, *, record: ResultRecord, path: Path) -> None:
        super().__init__(problem, fix)
        self.record = record
        self.path = path


def failed_batches_error(record: ResultRecord, path: Path) -> FailedBatches | None:
    """The error of a saved record with ``efficiency.failed_batches`` (None when none failed):
    the first failure's reason, which batch sizes were kept, and where."""
    failed = record.efficiency.failed_batches if record.efficiency else []
    if not failed:
        return None
    kept = [r.batch_size for r in [*record.efficiency.generation, *record.efficiency.forward]]
    saved = f"batch size{'' if len(kept) == 1 else 's'} {', '.join(map(str, kept))} measured and saved" if kept else "the record saved"
    return FailedBatches(f"{failed[0].error}; {saved} in {path}",
                         "use smaller --batch-size values (the KV cache grows with batch × tokens)",
                         record=record, path=path)  # fmt: skip
