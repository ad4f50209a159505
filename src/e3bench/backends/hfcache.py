"""The key/value-cache argument of a Hugging Face model, by the name the installed transformers uses.

transformers renamed the ``past_key_values`` argument and output field of its models to ``cache``
(the old name warns with a ``FutureWarning`` and is removed in 5.40). e3bench supports both
sides of the rename, so every call that passes or reads a cache goes through these two helpers:
the name is read from the model's own ``forward`` signature, never guessed from a version number.
"""

from __future__ import annotations

import inspect
from typing import Any

#: the argument / output field name before and after transformers' rename
OLD, NEW = "past_key_values", "cache"


def cache_name(model: Any) -> str:
    """``"cache"`` when ``model.forward`` takes ``cache`` (new transformers), else
    ``"past_key_values"``; cached on the model object."""
    name = getattr(model, "_e3bench_cache_name", None)
    if name is None:
        try:
            params = inspect.signature(type(model).forward).parameters
        except (TypeError, ValueError):  # a forward without a signature: the long-standing name
            params = {}
        name = NEW if NEW in params else OLD
        try:
            model._e3bench_cache_name = name
        except AttributeError:
            pass
    return name


def cache_kw(model: Any, cache: Any) -> dict[str, Any]:
    """``{<name>: cache}`` to pass a key/value cache to ``model(...)``."""
    return {cache_name(model): cache}


def cache_of(model: Any, out: Any) -> Any:
    """The key/value cache in ``model``'s output ``out`` (None when it returned none)."""
    return getattr(out, cache_name(model), None)


def cache_layers(cache: Any) -> list[tuple[Any, Any]]:
    """Per layer ``(keys, values)``, each ``[batch, kv heads, length, head dim]``, of a key/value
    cache: a ``DynamicCache`` (``layers`` since transformers 4.54, ``key_cache``/``value_cache``
    before) or the legacy tuple of per-layer pairs."""
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    if hasattr(cache, "key_cache"):
        return list(zip(cache.key_cache, cache.value_cache, strict=True))
    return [(kv[0], kv[1]) for kv in cache]


def cache_from_layers(model: Any, layers: list[tuple[Any, Any]]) -> Any:
    """A ``DynamicCache`` holding ``layers`` (as :func:`cache_layers` returns them) for ``model``."""
    from transformers import DynamicCache

    if hasattr(DynamicCache, "from_legacy_cache"):  # transformers 4.x
        return DynamicCache.from_legacy_cache(tuple(layers))
    return DynamicCache(ddp_cache_data=layers, config=model.config)
