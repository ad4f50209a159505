"""Executors run many RunConfigs; failures come back as failed records, never as exceptions.

* ``local`` (default): each run in its own subprocess — clean memory, and a crash or OOM loses
  only that run.
* ``ray``: one Ray task per run (``num_gpus=1`` on CUDA so GPUs are exclusive).

Executors live in :data:`e3bench.core.registry.executors`. A registered executor (built-in, or
from the ``e3bench.executors`` entry-point group) is a class constructed with keyword options
whose ``map(configs)`` yields one :class:`~e3bench.results.schema.ResultRecord` per config, or
a :class:`~e3bench.sweep.claims.Held` for one another process has claimed
(:class:`e3bench.core.api.Executor`); it is given ``timeout_s=`` when the user sets a run timeout
(``--timeout-s`` / the sweep file's ``timeout_s``).
"""

from __future__ import annotations

from typing import Any

from e3bench.core.registry import executors as _registry

_registry.builtin(
    "local",
    "e3bench.sweep.executors.local:LocalExecutor",
    description="each run in its own subprocess on this machine (crash isolation)",
)
_registry.builtin(
    "ray",
    "e3bench.sweep.executors.ray:RayExecutor",
    extra="ray",
    requires=("ray",),
    description="one Ray task per run, on a local Ray instance or a cluster (--ray-address)",
)


def make_executor(name: str, **kwargs: Any):
    """The executor registered as ``name``, constructed with ``kwargs``.

    Raises the one "unknown executor" E3Error (did you mean ...) or MissingExtra (``ray``).
    """
    return _registry.create(name, **kwargs)
