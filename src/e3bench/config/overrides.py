"""The one ``--set key=value`` parser (run configs, sweeps, and the training suite's TOML configs).

>>> parse_set(["max_new_tokens=64", "backend_options.n_ctx=4096", "tasks=mmlu,hellaswag"])
{'max_new_tokens': 64, 'backend_options.n_ctx': 4096, 'tasks': 'mmlu,hellaswag'}
>>> apply_overrides({"train": {"max_steps": 100}}, parse_set(["train.max_steps=5"], scalar=toml_scalar))
{'train': {'max_steps': 5}}

Keys stay dotted paths (``section.key``); values are parsed as scalars of the config's own
language (:func:`yaml_scalar` for run/sweep YAML, :func:`toml_scalar` for TOML suites), so
``4`` is an int, ``true`` a bool, ``[1, 2]`` a list and anything unparsable the raw string.
An item without ``=`` is an :class:`E3Error` naming the flag and an example.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from e3bench.core.errors import E3Error

Scalar = Callable[[str], Any]


def yaml_scalar(raw: str) -> Any:
    """``raw`` as a YAML value (``4`` → 4, ``true`` → True, ``null`` → None, ``[1, 2]`` → list);
    an empty or unparsable string stays the string itself."""
    import yaml

    if not raw.strip():
        return raw
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def toml_scalar(raw: str) -> Any:
    """``raw`` as a TOML value (``4``, ``1e-3``, ``true``, ``"text"``, ``[1, 2]``); a bare word
    that is not TOML stays the string itself."""
    try:
        import tomllib
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        import tomli as tomllib

    try:
        return tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        return raw.strip()


def parse_set(
    items: Iterable[str], *, scalar: Scalar = yaml_scalar, flag: str = "--set", example: str = "max_new_tokens=64"
) -> dict[str, Any]:
    """``["a=1", "b.c=x"]`` → ``{"a": 1, "b.c": "x"}`` in order given (a later item wins).

    Raises :class:`E3Error` for an item without ``=`` or with an empty key.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise E3Error(f"{flag} expects key=value, got '{item}'", f"e.g. {flag} {example}")
        out[key] = scalar(raw)
    return out


def apply_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any], *, max_depth: int | None = None,
                    flag: str = "--set") -> dict[str, Any]:  # fmt: skip
    """A deep copy of ``data`` with each dotted key of ``overrides`` set (sections created).

    ``max_depth`` limits the dots (2 = ``section.key``). Raises :class:`E3Error` when a key has
    too many parts or walks through a value that is not a section (a mapping).
    """
    out = copy.deepcopy(dict(data))
    for key, value in overrides.items():
        parts = key.split(".")
        if max_depth is not None and len(parts) > max_depth:
            raise E3Error(f"{flag} '{key}' has too many dots", "use section.key=value")
        node = out
        for i, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                where = ".".join(parts[: i + 1])
                raise E3Error(f"{flag} {key}: '{where}' is not a section", "use section.key=value")
        node[parts[-1]] = value
    return out
