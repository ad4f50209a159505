"""Fan runs out on a Ray cluster: one task per run, ``num_gpus=1`` for CUDA runs so each GPU is
exclusive (CPU runs ask for ``cpus_per_run`` CPUs). Records stream back as tasks finish and are
written into the same store by the driver, so resume works exactly as with the local executor.

``address=None`` starts a local Ray instance (``ray.init(num_cpus=...)``); pass ``"auto"`` or a
``ray://`` URL for a cluster.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence

from e3bench.config.run import RunConfig
from e3bench.core.devices import device_index, device_kind
from e3bench.core.errors import E3Error, require
from e3bench.results.schema import ResultRecord
from e3bench.sweep.claims import Held
from e3bench.sweep.executors.local import DEFAULT_TIMEOUT_S
from e3bench.core.host import env_threads
from e3bench.sweep.finish import finish_run


def _remote_run(cfg_json: str, timeout_s: float | None, threads: int | None) -> str:
    """Executed on a Ray worker: claim and run in a subprocess there too (crash isolation, the
    driver's thread settings instead of Ray's ``OMP_NUM_THREADS=1``, the timeout); returns the
    record as JSON, or ``{"held": "<why>"}`` when another process has the configuration."""
    import json

    from e3bench.config.run import RunConfig
    from e3bench.sweep.claims import Held
    from e3bench.sweep.executors.local import LocalExecutor

    cfg = RunConfig.model_validate_json(cfg_json)
    # The worker writes into its own copy of the output dir only if it shares the filesystem;
    # the driver is the one that stores the record it gets back.
    out = LocalExecutor(timeout_s=timeout_s, threads=threads).run(cfg)
    return json.dumps({"held": out.by}) if isinstance(out, Held) else out.model_dump_json()


class RayExecutor:
    """One Ray task per config; ``address`` of a cluster (None: start a local instance with
    ``num_cpus``), ``cpus_per_run`` CPUs reserved per task (CUDA runs also take one GPU,
    Ray's choice: ``cuda:N`` with N > 0 is refused before anything starts),
    ``timeout_s`` per run (as the local executor's). Runs get the thread settings of the
    driver's environment (:func:`~e3bench.sweep.executors.worker.run_env`), not Ray's."""

    def __init__(self, *, address: str | None = None, cpus_per_run: float = 1.0, num_cpus: int | None = None,
                 timeout_s: float | None = DEFAULT_TIMEOUT_S) -> None:  # fmt: skip
        self.address = address
        self.cpus_per_run = cpus_per_run
        self.num_cpus = num_cpus
        self.timeout_s = timeout_s or None

    def map(self, configs: Sequence[RunConfig]) -> Iterator[ResultRecord | Held]:
        """Submit every config, then yield records as tasks finish (a lost task → failed record;
        a configuration another process holds → :class:`~e3bench.sweep.claims.Held`)."""
        pinned = sorted({c.device for c in configs if (device_index(c.device) or 0) > 0})
        if pinned:  # Ray gives each task one GPU of its choice, visible in the task as cuda:0
            raise E3Error(f"--executor ray places each run on a GPU of Ray's choosing; --device {pinned[0]} "
                          "names a GPU by index, which inside a Ray task does not exist",
                          "use --device cuda with the ray executor, or the local executor for a given GPU")  # fmt: skip
        ray = require("ray", "ray", "--executor ray")
        threads = env_threads(os.environ)  # the driver's, before Ray sets its own
        started_here = not ray.is_initialized()
        if started_here:
            if self.address:
                ray.init(address=self.address, log_to_driver=False)
            else:
                ray.init(num_cpus=self.num_cpus, include_dashboard=False, log_to_driver=False)
        try:
            fn = ray.remote(_remote_run)
            pending = {}
            for cfg in configs:
                opts = {"num_gpus": 1, "num_cpus": self.cpus_per_run} if device_kind(cfg.device) == "cuda" else {
                    "num_cpus": self.cpus_per_run
                }
                pending[fn.options(**opts).remote(cfg.model_dump_json(), self.timeout_s, threads)] = cfg
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                ref = done[0]
                cfg = pending.pop(ref)
                try:
                    text = ray.get(ref)
                    if text.startswith('{"held"'):
                        yield Held(cfg, json.loads(text)["held"])
                        continue
                    rec = ResultRecord.model_validate_json(text)
                except Exception as exc:  # noqa: BLE001 - a lost worker is a failed run, not a crash
                    from e3bench.bench import envinfo
                    from e3bench.results.schema import failed_record

                    rec = failed_record(cfg, f"ray task failed: {type(exc).__name__}: {exc}"[:500],
                                        envinfo.collect(sample_cpu=False))
                # the worker node already logged to the trackers: the driver only keeps the record
                finish_run(rec, cfg, resumable=True, trackers=False)
                yield rec
        finally:
            if started_here:
                ray.shutdown()
