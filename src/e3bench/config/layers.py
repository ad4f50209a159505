"""The layers a run config is merged from — a YAML file < command-line flags < ``--set`` items
(< a sweep's grid values) — each with how to name a key of it in messages
(``run.yaml:3 (meter)``, ``--meter``). :func:`e3bench.config.run.build_config` merges them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e3bench.config.validate import Problem
from e3bench.config.values import ALIASES, flag_of

Locate = Callable[[str], str]


@dataclass(frozen=True)
class Layer:
    """One source of field values and how to name a key of it in messages.

    ``values``: field (or alias, or ``backend_options.<opt>``) → value; ``locate(key_path)``:
    e.g. ``"run.yaml:3 (meter)"`` or ``"--meter"``.
    """

    values: Mapping[str, Any]
    locate: Locate


def yaml_layer(path: str | Path, *, prefix: str = "") -> tuple[Layer, list[Problem]]:
    """The layer of a YAML run config (``prefix`` = ``"base."`` for a sweep's base section) and
    the problems its duplicate keys make."""
    from e3bench.config import yamlfile

    doc = yamlfile.load(path)
    return Layer(doc.data, lambda k: doc.where(prefix + k)), duplicate_problems(doc)


def duplicate_problems(doc) -> list[Problem]:
    """One problem per key given twice in a :class:`~e3bench.config.yamlfile.YamlFile`."""
    return [
        Problem(f"{doc.path}:{line} ({path})", f"key '{path}' is given twice (first at line {first})",
                "keep one of them: YAML would silently use the last")  # fmt: skip
        for path, line, first in doc.duplicates
    ]


def flags_layer(values: Mapping[str, Any]) -> Layer:
    """The layer of command-line flags (``None`` = flag not given)."""
    return Layer({k: v for k, v in values.items() if v is not None}, lambda k: flag_of(k.split(".")[0]))


def set_layer(items: list[str]) -> Layer:
    """The layer of ``--set key=value`` items (values parsed as YAML scalars)."""
    from e3bench.config.overrides import parse_set

    return Layer(parse_set(items), lambda k: f"--set {k}")


def base_layers(yaml_path: str | Path | None, flags: Mapping[str, Any]) -> tuple[list[Layer], list[Problem]]:
    """The first layers of every run config — the YAML file (when given) then the command-line
    ``flags`` — and the problems of keys the YAML gives twice. :func:`build_config` and
    ``e3bench run``'s comma lists (:func:`e3bench.cli.run.run_configs`) both start here."""
    layers: list[Layer] = []
    problems: list[Problem] = []
    if yaml_path is not None:
        layer, dups = yaml_layer(yaml_path)
        layers.append(layer)
        problems += dups
    layers.append(flags_layer(flags))
    return layers, problems


def at(locate: Locate, key: str, sub: str | None = None) -> Locate:
    """A locator for paths under field ``key`` as spelled in its layer (alias kept)."""
    field = ALIASES.get(key, key)

    def where(path: str) -> str:
        rest = path[len(field):] if path.startswith(field) else ""
        return locate(key + rest)

    return where


def where_of(origin: Mapping[str, Locate], key_path: str) -> str:
    """Where ``key_path`` (``tasks.0``, ``backend_options.n_ctx``) was set, from the locator of
    it or of its nearest parent in ``origin``; ``"<key_path> (default)"`` when nobody set it."""
    parts = key_path.split(".")
    while parts:
        loc = origin.get(".".join(parts))
        if loc is not None:
            return loc(key_path)
        parts.pop()
    return f"{key_path} (default)"
