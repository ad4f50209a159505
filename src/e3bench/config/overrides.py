"""The one ``--set key=value`` parser (run configs, sweeps, and the training suite's TOML configs).

>>> parse_set(["max_new_tokens=64", "backend_options.n_ctx=4096", "tasks=mmlu,hellaswag"])
{'max_new_tokens': 64, 'backend_options.n_ctx': 4096, 'tasks': 'mmlu,hellaswag'}
>>> parse_model_args("revision=v1.0,dtype=bfloat16,chat_template=off")
{'revision': 'v1.0', 'dtype': 'bf16', 'chat_template': 'off'}
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


#: lm-eval's ``--model_args`` keys e3bench understands → the run-config field each sets
MODEL_ARGS: dict[str, str] = {
    "pretrained": "model",
    "revision": "revision",
    "trust_remote_code": "trust_remote_code",
    "chat_template": "chat_template",
    "apply_chat_template": "chat_template",
    "dtype": "dtype",
    "device": "device",
}
#: lm-eval / torch dtype spellings → e3bench's precision names
_LM_EVAL_DTYPES = {"float32": "fp32", "float16": "fp16", "half": "fp16", "bfloat16": "bf16"}
MODEL_ARGS_EXAMPLE = "revision=main,trust_remote_code=true,chat_template=off"


def parse_model_args(value: Any) -> dict[str, Any]:
    """lm-eval-style model arguments — ``"revision=main,trust_remote_code=true"`` or a mapping
    (YAML ``model_args: {revision: main}``) — as ``{run-config field: value}``
    (:data:`MODEL_ARGS`; ``dtype=bfloat16`` → ``bf16``). Values stay text for the schema to
    check (``chat_template=off`` is False, as pydantic reads booleans).

    Raises :class:`E3Error` (one line listing the known keys) for an unknown key, for an
    item without ``=``, and for two keys that set one field (``dtype=bf16,dtype=fp32``,
    ``chat_template`` with ``apply_chat_template``): lm-eval would silently keep the last.
    """
    if isinstance(value, Mapping):
        items = [(str(k).strip(), v) for k, v in value.items()]
    elif isinstance(value, str):
        items = []
        for part in (p.strip() for p in value.split(",")):
            if not part:
                continue
            key, eq, raw = part.partition("=")
            if not eq or not key.strip():
                raise E3Error(f"--model-args expects key=value items separated by commas, got '{part}'",
                              f"e.g. --model-args {MODEL_ARGS_EXAMPLE}")  # fmt: skip
            items.append((key.strip(), raw.strip()))
    else:
        raise E3Error(f"model_args must be key=value text or a mapping, got {value!r}", f"e.g. {MODEL_ARGS_EXAMPLE}")
    out: dict[str, Any] = {}
    given: dict[str, str] = {}  # field -> the key that set it (a second one is refused, not last-wins)
    for key, raw in items:
        field = MODEL_ARGS.get(key.lower())
        if field is None:
            raise E3Error(f"unknown model argument '{key}' (known: {', '.join(MODEL_ARGS)})",
                          "backend options go in --backend-option key=value; run settings have their own flags")  # fmt: skip
        if field in given:
            first = given[field]
            what = (f"model argument '{key}' is given twice" if first.lower() == key.lower()
                    else f"model arguments '{first}' and '{key}' both set {field}")  # fmt: skip
            raise E3Error(what, f"give {field} once")
        given[field] = key
        if field == "dtype" and isinstance(raw, str):
            raw = _LM_EVAL_DTYPES.get(raw.lower(), raw)
        if field == "revision" and raw is not None:
            raw = str(raw)
        out[field] = raw
    return out
