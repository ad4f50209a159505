"""The Python API's runs and records: :func:`run`, :func:`load_records`, :func:`load_record`.

``e3bench.run(...)`` is ``e3bench run`` without the terminal: the same config building and
validation (every problem at once, before the model loads), the same runner, the same store
(``<output_dir>/<sweep>/<run_id>.json``), and the same errors — an
:class:`~e3bench.core.errors.E3Error` (or a subclass: ``ConfigError``, ``MissingExtra``,
:class:`~e3bench.sweep.finish.FailedBatches`) whose ``one_line()`` is the CLI's line after
``error:``. See docs/api.md.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from e3bench.config.run import RunConfig
    from e3bench.results.schema import ResultRecord

Progress = Callable[[str], None]


def _keyword(key: str) -> str:
    """How a keyword of :func:`run` is named in error messages (the CLI names its flag)."""
    return f"run({key.split('.')[0]}=...)"


def _item(key: str) -> str:
    return f"config[{key.split('.')[0]!r}]"


def build(config: Any = None, /, **fields: Any) -> RunConfig:
    """The validated, runnable :class:`~e3bench.config.run.RunConfig` of :func:`run`.

    ``config``: a ``RunConfig``, a mapping of its fields, or the path of a YAML run config (the
    CLI's ``--config``); ``fields`` override it (the CLI's flags), e.g. ``max_new_tokens=8``;
    with no ``tasks`` anywhere, ``e3bench run``'s default task is added (``RunConfig.defaulted``);
    backend options go in ``backend_options={...}``. Raises
    :class:`~e3bench.config.validate.ConfigError` listing every problem, each naming the keyword.
    """
    from e3bench.config.run import Layer, RunConfig, build_config

    yaml_path = None
    base: dict[str, Any] = {}
    if isinstance(config, RunConfig):
        base = config.model_dump()
    elif isinstance(config, Mapping):
        base = dict(config)
    elif isinstance(config, (str, os.PathLike)):
        yaml_path = Path(config)
    elif config is not None:
        from e3bench.core.errors import E3Error

        raise E3Error(f"e3bench.run() got a {type(config).__name__} as its config",
                      "pass a RunConfig, a dict of its fields, a YAML path, or keywords")  # fmt: skip
    layers = [Layer(base, _item), Layer(fields, _keyword)]
    return build_config(yaml_path=yaml_path, layers=layers, runnable=True, run_defaults=True)


def run(config: Any = None, /, *, progress: Progress | None = None, **fields: Any) -> ResultRecord:
    """Benchmark one configuration (speed, energy and, with ``tasks=``, quality) and return its
    :class:`~e3bench.results.schema.ResultRecord`, saved where ``e3bench run`` saves it.

    ``config`` and ``fields`` as in :func:`build`; like ``e3bench run``, a run that names no
    ``tasks`` gets the default quality task (ARC-Easy, first 100 items), skipped with a warning
    in the record when its data is nowhere; ``tasks=[]``: none. ``progress`` receives the
    progress lines the CLI prints. User errors raise :class:`~e3bench.core.errors.E3Error` (nothing is written
    for a config that does not validate). When some batch sizes ran out of memory the record of
    the others is saved and :class:`~e3bench.sweep.finish.FailedBatches` is raised, carrying
    ``.record`` and ``.path``.
    """
    from e3bench.bench.runner import run_one
    from e3bench.evals.defaults import default_task_or_skip
    from e3bench.sweep.finish import failed_batches_error, finish_run

    cfg, skipped = default_task_or_skip(build(config, **fields))
    if skipped and progress is not None:
        progress(skipped)
    record = run_one(cfg, progress=progress)
    if skipped:
        record.warnings.append(skipped)
    done = finish_run(record, cfg, resumable=False)
    failed = failed_batches_error(record, done.path)
    if failed is not None:
        raise failed
    return record


def _records_in(root: Path) -> list[tuple[Path, ResultRecord]]:
    from e3bench.results import store

    found = store.scan(store.check_root(root))
    if not found.records:
        raise store.no_results_error(root, found.problems)
    for problem in found.problems:
        warnings.warn(f"e3bench: skipped {problem}", stacklevel=3)
    return found.records


def load_records(path: str | os.PathLike[str] = "results") -> list[ResultRecord]:
    """Every run record under ``path`` (a results directory, searched recursively like
    ``e3bench ls``), or the one record in ``path`` when it is a file.

    Files that look like records but cannot be read are skipped with a ``UserWarning`` each;
    :class:`~e3bench.core.errors.E3Error` when ``path`` is missing or holds no readable record.
    """
    from e3bench.results import store

    p = Path(path)
    if p.is_file():
        return [store.load(p)]
    return [rec for _, rec in _records_in(p)]


def load_record(run_id_or_path: str | os.PathLike[str], *, root: str | os.PathLike[str] = "results") -> ResultRecord:
    """One record: from its file, or by its ``run_id`` (or a unique prefix of it, or the
    config hash a sweep names its file by) under ``root``.

    :class:`~e3bench.core.errors.E3Error` when nothing or more than one record matches (the
    did-you-mean names the nearest run id).
    """
    from e3bench.core.errors import E3Error, unknown_name
    from e3bench.results import store

    p = Path(run_id_or_path)
    if p.suffix == ".json" or p.is_file():
        if not p.is_file():
            raise E3Error(f"result file {p} does not exist", "pass a record's path, or its run id")
        return store.load(p)
    key = str(run_id_or_path)
    records = _records_in(Path(root))
    exact = [r for path, r in records if key in (r.run_id, path.stem)]
    hits = exact or [r for _, r in records if r.run_id.startswith(key)]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        err = unknown_name("run id", key, _ids(records))
        raise E3Error(f"{err.problem} under {root}", err.fix)
    raise E3Error(f"{len(hits)} records under {root} match '{key}': {', '.join(_ids((('', r) for r in hits)))}",
                  "pass more of the run id, or the record's path")  # fmt: skip


def _ids(records: Iterable[tuple[Any, ResultRecord]]) -> list[str]:
    return sorted({r.run_id for _, r in records})
