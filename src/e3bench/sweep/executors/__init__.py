"""Executors run many RunConfigs; failures come back as failed records, never as exceptions.

* ``local`` (default): each run in its own subprocess — clean memory, and a crash or OOM loses
  only that run.
* ``ray``: one Ray task per run (``num_gpus=1`` on CUDA so GPUs are exclusive).
"""

from __future__ import annotations

EXECUTORS = ("local", "ray")


def make_executor(name: str, **kwargs):
    from e3bench.core.errors import E3Error

    if name == "local":
        from e3bench.sweep.executors.local import LocalExecutor

        return LocalExecutor(**kwargs)
    if name == "ray":
        from e3bench.sweep.executors.ray import RayExecutor

        return RayExecutor(**kwargs)
    raise E3Error(f"unknown executor '{name}'", f"use one of: {', '.join(EXECUTORS)}")
