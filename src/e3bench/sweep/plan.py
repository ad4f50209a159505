"""Sweep files: a YAML grid that expands into RunConfigs, minus combinations a backend's
capabilities rule out (each skipped with its reason).

```yaml
name: smollm2-precisions        # results go to <output_dir>/<name>/
base:                           # RunConfig fields shared by every run
  max_new_tokens: 16
  batch_sizes: [1, 4]
grid:                           # cartesian product over these RunConfig fields
  model: [smollm2-135m]
  dtype: [fp32, bf16]
  backend: [pytorch]
```
"""

from __future__ import annotations

import difflib
import importlib.util
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e3bench.config.run import RunConfig, build_config, load_yaml
from e3bench.core.errors import E3Error

_TOP_KEYS = ("name", "base", "grid", "output_dir")
_FIELDS = tuple(RunConfig.model_fields)


@dataclass(frozen=True)
class Skipped:
    config: RunConfig
    reason: str


@dataclass(frozen=True)
class Plan:
    name: str
    output_dir: str
    runs: list[RunConfig]
    skipped: list[Skipped]


def _check_keys(mapping: dict[str, Any], where: str, valid: tuple[str, ...]) -> None:
    for key in mapping:
        if key not in valid:
            near = difflib.get_close_matches(str(key), valid, n=1)
            hint = f"did you mean '{near[0]}'?" if near else f"valid keys: {', '.join(valid)}"
            raise E3Error(f"unknown key '{key}' in {where}", hint)


def capability_reason(cfg: RunConfig) -> str | None:
    """Why this run cannot work here, judged from the backend's declared capabilities."""
    from e3bench.core import registry

    table = registry.entries("backend")
    if cfg.backend not in table:
        return None  # let the run itself produce the 'unknown backend' error record
    entry = table[cfg.backend]
    missing = [m for m in entry.requires if importlib.util.find_spec(m) is None]
    if missing:
        return f"backend '{cfg.backend}' not installed (pip install 'e3bench[{entry.extra or cfg.backend}]')"
    cls = registry.get("backend", cfg.backend)
    return cls.capabilities.check(device=cfg.device, precision=cfg.dtype)


def expand(path: str | Path, *, output_dir: str | None = None) -> Plan:
    data = load_yaml(path)
    where = str(path)
    _check_keys(data, where, _TOP_KEYS)
    name = str(data.get("name") or Path(path).stem)
    base = data.get("base") or {}
    grid = data.get("grid") or {}
    if not isinstance(base, dict) or not isinstance(grid, dict):
        raise E3Error(f"'base' and 'grid' in {where} must be mappings", "see docs/sweeps.md")
    _check_keys(base, f"{where} (base)", _FIELDS + ("batch_size",))
    _check_keys(grid, f"{where} (grid)", _FIELDS + ("batch_size",))
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise E3Error(f"grid key '{key}' in {where} must be a non-empty list", f"e.g. {key}: [a, b]")
    out_dir = output_dir or data.get("output_dir") or "results"
    keys = list(grid)
    runs: list[RunConfig] = []
    skipped: list[Skipped] = []
    seen: set[str] = set()
    for combo in itertools.product(*(grid[k] for k in keys)):
        fields = {**base, **dict(zip(keys, combo, strict=True)), "sweep": name, "output_dir": out_dir}
        cfg = build_config(overrides=fields)
        if cfg.config_hash() in seen:
            continue
        seen.add(cfg.config_hash())
        reason = capability_reason(cfg)
        if reason:
            skipped.append(Skipped(cfg, reason))
        else:
            runs.append(cfg)
    if not runs and not skipped:
        raise E3Error(f"sweep {where} expands to no runs", "add values under 'grid'")
    return Plan(name=name, output_dir=out_dir, runs=runs, skipped=skipped)
