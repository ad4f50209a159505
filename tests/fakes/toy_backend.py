"""A registered test backend for config validation: a typed ``Options`` model and narrow
capabilities (cpu; fp32 and int8). Never loads anything."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from e3bench.core import registry
from e3bench.core.api import Capabilities


class ToyBackend:
    """Registered as ``toy`` by :func:`registered`."""

    name: ClassVar[str] = "toy"
    capabilities: ClassVar[Capabilities] = Capabilities(
        devices=frozenset({"cpu"}), precisions=frozenset({"fp32", "int8"}), architectures=frozenset({"decoder-only"})
    )

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        width: int = 8
        mode: str = "fast"


@contextlib.contextmanager
def registered() -> Iterator[type[ToyBackend]]:
    """Register :class:`ToyBackend` as backend ``toy`` for the duration of the block."""
    registry.backends.register("toy", ToyBackend)
    try:
        yield ToyBackend
    finally:
        registry.backends.unregister("toy")
