"""The one way to build a backend from configuration: :func:`make_backend`.

``make_backend("llamacpp", {"n_ctx": 4096}, cache_dir=None, threads=2)`` looks the name up in
:data:`e3bench.core.registry.backends`, validates the options with the backend's own ``Options``
model (pydantic, ``extra="forbid"``) through :func:`e3bench.core.registry.check_options` — the
same check and wording config validation uses — and constructs
``cls(options, cache_dir=..., threads=...)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from e3bench.core import registry
from e3bench.core.api import Backend


def validate_options(name: str, cls: Any, options: Mapping[str, Any] | None) -> BaseModel | None:
    """``cls.Options`` validated from ``options`` (a dict from YAML / ``--set``); None for a
    (plugin) backend class without an ``Options`` model, which then takes no options.

    Raises the first problem as E3Error: a run option (``cache_dir``, ``threads``) among
    backend options, an unknown key, or a bad value (naming key and value and listing the
    backend's options with their types, defaults and descriptions).
    """
    from e3bench.backends.base import NoOptions

    model = getattr(cls, "Options", None)
    validated, errors = registry.check_options(
        "backend", name, model or NoOptions, options, reserved=registry.BACKEND_RUN_OPTIONS
    )
    if errors:
        raise errors[0][1]
    return validated if model is not None else None


def make_backend(
    name: str, options: Mapping[str, Any] | None = None, *, cache_dir: str | None = None, threads: int | None = None
) -> Backend:
    """The backend registered as ``name``, built with validated ``options``.

    Raises E3Error for an unknown name (with a did-you-mean), :class:`~e3bench.core.errors.MissingExtra`
    for a missing extra (naming the ``pip install``), or a bad option (see :func:`validate_options`).
    """
    cls = registry.backends.get(name)
    return cls(validate_options(name, cls, options), cache_dir=cache_dir, threads=threads)
