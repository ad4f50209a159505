"""The one way to build a backend from configuration: :func:`make_backend`.

``make_backend("llamacpp", {"n_ctx": 4096}, cache_dir=None, threads=2)`` looks the name up in
:mod:`e3bench.core.registry`, validates the options with the backend's own ``Options`` model
(pydantic, ``extra="forbid"``) and constructs ``cls(options, cache_dir=..., threads=...)``.
:func:`validate_options` is the same check without constructing anything, for config-time
validation; :func:`describe_options` is the list printed when a key is wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from e3bench.core import registry
from e3bench.core.api import Backend
from e3bench.core.errors import E3Error

#: Options every run passes from its own fields; backend_options may not set them.
RUN_OPTIONS = {"cache_dir": "--cache-dir", "threads": "--threads"}


def describe_options(options_model: type[BaseModel]) -> str:
    """``"n_ctx (int, default 2048): context length ...; n_batch (...)"`` or a "no options" line."""
    parts = []
    for key, f in options_model.model_fields.items():
        kind = getattr(f.annotation, "__name__", None) or str(f.annotation).replace("typing.", "")
        desc = f": {f.description}" if f.description else ""
        parts.append(f"{key} ({kind}, default {f.default!r}){desc}")
    return "; ".join(parts) if parts else "it takes no options"


def validate_options(name: str, cls: Any, options: Mapping[str, Any] | None) -> BaseModel:
    """``cls.Options`` validated from ``options`` (a dict from YAML / ``--set``).

    Raises E3Error naming the bad key and value and listing the backend's options, and for
    run options (``cache_dir``, ``threads``) put among backend options.
    """
    options = dict(options or {})
    for key in options:
        if key in RUN_OPTIONS:
            raise E3Error(f"backend_options.{key} is a run option", f"use {RUN_OPTIONS[key]} instead")
    model: type[BaseModel] = cls.Options
    try:
        return model.model_validate(options)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err.get("loc", ())) or "?"
        listing = f"its options: {describe_options(model)}"
        if err.get("type") == "extra_forbidden":
            raise E3Error(f"backend '{name}' has no option '{key}'", listing) from None
        msg = err.get("msg", "invalid").removeprefix("Value error, ")
        raise E3Error(
            f"backend '{name}' option {key}={err.get('input')!r} is invalid: {msg}", listing
        ) from None


def make_backend(
    name: str, options: Mapping[str, Any] | None = None, *, cache_dir: str | None = None, threads: int | None = None
) -> Backend:
    """The backend registered as ``name``, built with validated ``options``.

    Raises E3Error for an unknown name (with a did-you-mean), a missing extra (naming the
    ``pip install``), or a bad option (see :func:`validate_options`).
    """
    cls = registry.get("backend", name)
    return cls(validate_options(name, cls, options), cache_dir=cache_dir, threads=threads)
