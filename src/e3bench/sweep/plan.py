"""Sweep files: a YAML grid that expands into RunConfigs, minus combinations a backend's
capabilities rule out (each skipped with its reason).

```yaml
name: smollm2-precisions        # results go to <output_dir>/<name>/
timeout_s: 3600                 # optional: a run taking longer is killed → failed record
base:                           # RunConfig fields shared by every run
  max_new_tokens: 16
  batch_sizes: [1, 4]
grid:                           # cartesian product over these RunConfig fields
  model: [smollm2-135m]
  dtype: [fp32, bf16]
  backend: [pytorch]
```

Every combination is built with :func:`e3bench.config.run.build_config`, so a typo anywhere
(a key, a meter, a region, a task, a backend option) fails the whole sweep before any run starts,
with one line per problem naming the YAML line.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e3bench.config import yamlfile
from e3bench.config.run import ALIASES, FIELDS, Layer, RunConfig, build_config, duplicate_problems
from e3bench.config.validate import ConfigError, Problem, raise_problems, unrunnable_reason
from e3bench.core.errors import E3Error, unknown_name

_TOP_KEYS = ("name", "base", "grid", "output_dir", "timeout_s", "architectures")  # the last: sweep.architectures


@dataclass(frozen=True)
class Skipped:
    """A combination this installation cannot run, and why (backend missing, capabilities)."""

    config: RunConfig
    reason: str


@dataclass(frozen=True)
class Plan:
    """An expanded sweep: ``runs`` to execute (deduplicated by config hash) and ``skipped``;
    ``timeout_s``: the file's run timeout (None: not set there; 0: no limit)."""

    name: str
    output_dir: str
    runs: list[RunConfig]
    skipped: list[Skipped]
    timeout_s: float | None = None


def capability_reason(cfg: RunConfig) -> str | None:
    """Why this run cannot work here, judged from the backend's declared capabilities."""
    return unrunnable_reason(cfg.backend, cfg.device, cfg.dtype)


def _key_problems(doc: yamlfile.YamlFile, mapping: dict[str, Any], prefix: str, valid: tuple[str, ...]) -> list[Problem]:
    out = []
    for key in mapping:
        if key not in valid:
            err = unknown_name("key", str(key), valid, fix=f"valid keys: {', '.join(valid)}")
            out.append(Problem(doc.where(f"{prefix}{key}"), err.problem, err.fix))
    return out


def expand(path: str | Path, *, output_dir: str | None = None,
           extra: Callable[[str, Any], dict[str, Any]] | None = None) -> Plan:
    """Read sweep file ``path`` and build every combination of ``grid`` over ``base``.

    ``output_dir`` overrides the file's; ``extra(key, value)`` gives more fields for a grid value
    (an architecture comparison's few-shot tasks for each model, none for an encoder:
    :mod:`e3bench.sweep.architectures`). Raises :class:`~e3bench.config.validate.ConfigError`
    with every problem (unknown keys, bad values, unknown names, duplicate keys), each at its
    line; an empty file or a grid that expands to nothing is an :class:`E3Error`.
    """
    doc = yamlfile.load(path, what="sweep file", hint="check the path given to e3bench sweep")
    where = str(path)
    data = doc.data
    if not data:
        raise E3Error(f"sweep file {where} is empty", "give it at least 'grid:' (see docs/sweeps.md)")
    problems = duplicate_problems(doc) + _key_problems(doc, data, "", _TOP_KEYS)
    name = str(data.get("name") or Path(path).stem)
    base = data.get("base") or {}
    grid = data.get("grid") or {}
    if not isinstance(base, dict) or not isinstance(grid, dict):
        raise E3Error(f"'base' and 'grid' in {where} must be mappings", "see docs/sweeps.md")
    fields = FIELDS + tuple(ALIASES)
    problems += _key_problems(doc, base, "base.", fields) + _key_problems(doc, grid, "grid.", fields)
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            problems.append(Problem(doc.where(f"grid.{key}"), f"grid key '{key}' must be a non-empty list",
                                    f"e.g. {key}: [a, b]"))  # fmt: skip
    timeout_s = data.get("timeout_s")
    if timeout_s is not None and (isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float))
                                  or not math.isfinite(timeout_s) or timeout_s < 0):  # fmt: skip
        problems.append(Problem(doc.where("timeout_s"), f"timeout_s must be a number of seconds ≥ 0 (got {timeout_s!r})",
                                "e.g. timeout_s: 3600 (0: no limit)"))  # fmt: skip
    raise_problems(problems)
    out_dir = output_dir or data.get("output_dir") or "results"
    base_layer = Layer(base, lambda k: doc.where(f"base.{k}"))
    fixed = Layer({"sweep": name, "output_dir": out_dir}, lambda k: doc.where("name" if k == "sweep" else k))
    axes = [[_grid_layer(doc, k, i, v, extra) for i, v in enumerate(grid[k])] for k in grid]
    runs, skipped, found = combine([base_layer], axes, [fixed])
    problems += found
    raise_problems(problems)
    if not runs and not skipped:
        raise E3Error(f"sweep {where} expands to no runs", "add values under 'grid'")
    return Plan(name=name, output_dir=out_dir, runs=runs, skipped=skipped,
                timeout_s=None if timeout_s is None else float(timeout_s))  # fmt: skip


def combine(before: list[Layer], axes: list[list[Layer]], after: list[Layer], *, runnable: bool = False,
            run_defaults: bool = False) -> tuple[list[RunConfig], list[Skipped], list[Problem]]:  # fmt: skip
    """Every combination of one layer from each of ``axes``, between the ``before`` and ``after``
    layers, built with :func:`~e3bench.config.run.build_config` (``runnable``, ``run_defaults``
    passed on): the configs to run (in order, one per config hash), those this installation
    cannot run (with the reason) and every problem found. Used by sweep files and by
    ``e3bench run``'s comma lists (``--prompt-tokens 64,128``)."""
    runs: list[RunConfig] = []
    skipped: list[Skipped] = []
    problems: list[Problem] = []
    seen: set[str] = set()
    for combo in itertools.product(*axes):
        try:
            cfg = build_config(layers=[*before, *combo, *after], runnable=runnable, run_defaults=run_defaults)
        except ConfigError as exc:
            problems += exc.problems
            continue
        if cfg.config_hash() in seen:
            continue
        seen.add(cfg.config_hash())
        reason = capability_reason(cfg)
        if reason:
            skipped.append(Skipped(cfg, reason))
        else:
            runs.append(cfg)
    return runs, skipped, list(dict.fromkeys(problems))


def _grid_layer(doc: yamlfile.YamlFile, key: str, index: int, value: Any, extra=None) -> Layer:
    """One grid value as a layer (with the fields ``extra(key, value)`` adds, named at the value's
    line); ``tasks.0`` of that value is named ``grid.tasks.<index>.0``."""

    def locate(path: str) -> str:
        rest = path[len(key):] if path.startswith(key) else ""
        return doc.where(f"grid.{key}.{index}{rest}")

    return Layer({key: value, **(extra(key, value) if extra else {})}, locate)
