"""Each run in a fresh Python subprocess: clean memory and thread state per run, and a crash,
OOM kill or segfault loses only that run (recorded as a failed record with the stderr tail)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence

from e3bench.config.run import RunConfig
from e3bench.results import store
from e3bench.results.schema import ResultRecord
from e3bench.sweep.finish import finish_run, resumable_path


class LocalExecutor:
    """Runs each config in a fresh ``python -m e3bench.sweep.executors.worker`` subprocess
    (``in_process=True``: in this process, for tests and debugging); ``timeout_s`` caps a run."""

    def __init__(self, *, in_process: bool = False, timeout_s: float | None = None) -> None:
        self.in_process = in_process
        self.timeout_s = timeout_s

    def run(self, cfg: RunConfig) -> ResultRecord:
        """Run one config; its record (ok, or failed with the reason) is saved and returned."""
        if self.in_process:
            from e3bench.sweep.executors.worker import run_and_store

            return run_and_store(cfg)
        path = resumable_path(cfg)
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "e3bench.sweep.executors.worker", cfg.model_dump_json()],
                capture_output=True,
                text=True,
                timeout=self.timeout_s,
                env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
            )
            ok = proc.returncode == 0 and path.exists()
            detail = "" if ok else _crash_detail(proc.returncode, proc.stderr)
        except subprocess.TimeoutExpired:
            ok, detail = False, f"run exceeded the executor timeout of {self.timeout_s:g} s"
        if ok:
            return store.load(path)
        from e3bench.bench import envinfo
        from e3bench.results.schema import failed_record

        rec = failed_record(cfg, detail, envinfo.collect(sample_cpu=False))
        finish_run(rec, cfg, resumable=True)
        return rec

    def map(self, configs: Sequence[RunConfig]) -> Iterator[ResultRecord]:
        """Run ``configs`` one after another, yielding each record as it is kept."""
        for cfg in configs:
            yield self.run(cfg)


def _crash_detail(code: int, stderr: str) -> str:
    tail = " | ".join(ln for ln in stderr.strip().splitlines()[-3:] if ln.strip())
    if code < 0:
        import signal

        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        why = f"run process killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    else:
        why = f"run process exited with status {code}"
    return f"{why}: {tail}" if tail else why
