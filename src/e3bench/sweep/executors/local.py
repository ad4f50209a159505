"""Each run in a fresh Python subprocess: clean memory and thread state per run, and a crash,
OOM kill or segfault loses only that run (recorded as a failed record with the stderr tail).

Every run is claimed first (:mod:`e3bench.sweep.claims`), so two sweeps on one folder share the
work; it runs under the thread settings of :func:`~e3bench.sweep.executors.worker.run_env` and
is killed (with everything it started) after ``timeout_s``, which becomes a failed record whose
reason starts with ``timeout:``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import IO

from e3bench.config.run import RunConfig
from e3bench.results import store
from e3bench.results.schema import ResultRecord
from e3bench.sweep.claims import Claim, Held, acquire
from e3bench.sweep.finish import finish_run, resumable_path

#: the run timeout when neither ``--timeout-s`` nor the sweep file's ``timeout_s`` sets one
DEFAULT_TIMEOUT_S = 4 * 3600.0


class LocalExecutor:
    """Runs each config in a fresh ``python -m e3bench.sweep.executors.worker`` subprocess
    (``in_process=True``: in this process, for tests and debugging, no timeout).

    ``timeout_s``: seconds a run may take before it is killed (None or 0: no limit).
    ``threads``: the ``OMP_NUM_THREADS`` of the environment the sweep was started in, None when
    it had none (default: read from this process's environment, which is the sweep's when this
    process is the sweep; the Ray executor passes its driver's). See
    :func:`~e3bench.sweep.executors.worker.run_env`.
    ``on_step``: called with each step the running run reports (its ``· loading ...``,
    ``· generation, batch 4 ...`` lines, without the dot), as it reports it: what the sweep
    shows as the current configuration's step.
    """

    def __init__(self, *, in_process: bool = False, timeout_s: float | None = DEFAULT_TIMEOUT_S,
                 threads: int | None | str = "environment", on_step: Callable[[str], None] | None = None) -> None:  # fmt: skip
        from e3bench.core.host import env_threads

        self.on_step = on_step
        self.in_process = in_process
        self.timeout_s = timeout_s or None
        self.threads = env_threads(os.environ) if threads == "environment" else threads

    def run(self, cfg: RunConfig) -> ResultRecord | Held:
        """Claim and run one config; its record (ok, or failed with the reason) is saved and
        returned, or :class:`~e3bench.sweep.claims.Held` when another process has it."""
        try:
            claim = acquire(store.claim_path(cfg.output_dir, cfg.sweep, cfg.config_hash()), timeout_s=self.timeout_s)
        except OSError as exc:
            return self._failed(cfg, f"cannot claim the run in {cfg.output_dir}: {exc}")
        if not isinstance(claim, Claim):
            return Held(cfg, f"running in another process ({claim.describe()})")
        try:
            path = resumable_path(cfg)
            done = _completed(path)
            if done is not None:  # finished by another sweep since this one was planned
                return Held(cfg, "completed by another process meanwhile")
            return self._run_claimed(cfg, path)
        finally:
            claim.release()

    def _run_claimed(self, cfg: RunConfig, path) -> ResultRecord:
        if self.in_process:
            from e3bench.sweep.executors.worker import run_and_store

            return run_and_store(cfg)
        from e3bench.sweep.executors.worker import run_env

        with subprocess.Popen(
            [sys.executable, "-m", "e3bench.sweep.executors.worker", cfg.model_dump_json()],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=run_env(cfg, self.threads, os.environ),
        ) as proc:  # fmt: skip
            # read both pipes as the run writes them (its steps reach on_step as they happen)
            readers = [_Reader(proc.stdout), _Reader(proc.stderr, self.on_step)]
            try:
                proc.wait(timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                _kill_tree(proc)
                proc.wait()
                return self._failed(cfg, f"timeout: the run took longer than its {self.timeout_s:g} s limit and was "
                                         "killed (set --timeout-s, or timeout_s in the sweep file)")  # fmt: skip
            except BaseException:  # Ctrl-C / SIGTERM of the sweep alone: its run must not outlive it
                _kill_tree(proc)  # (an orphaned run kept going unclaimed, so another sweep ran it too)
                raise
            finally:
                for r in readers:
                    r.join()
            stderr = readers[1].text()
        if proc.returncode == 0 and path.exists():
            return store.load(path)
        return self._failed(cfg, _crash_detail(proc.returncode, stderr))

    def _failed(self, cfg: RunConfig, detail: str) -> ResultRecord:
        from e3bench.bench import envinfo
        from e3bench.results.schema import failed_record

        rec = failed_record(cfg, detail, envinfo.collect(sample_cpu=False))
        finish_run(rec, cfg, resumable=True)
        return rec

    def map(self, configs: Sequence[RunConfig]) -> Iterator[ResultRecord | Held]:
        """Run ``configs`` one after another, yielding each record (or Held) as it is kept."""
        for cfg in configs:
            yield self.run(cfg)


class _Reader:
    """Drains one pipe of the run in a thread (so the run never blocks on a full pipe), keeping
    its text; with ``on_step``, each ``· step`` line goes to it as it arrives."""

    def __init__(self, pipe: IO[str] | None, on_step: Callable[[str], None] | None = None) -> None:
        self.lines: list[str] = []
        self.on_step = on_step
        self.thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self.thread.start()

    def _read(self, pipe: IO[str] | None) -> None:
        if pipe is None:
            return
        for line in pipe:
            self.lines.append(line)
            if self.on_step is not None and line.startswith("· "):
                try:
                    self.on_step(line[2:].rstrip("\n"))
                except Exception:  # noqa: BLE001 - showing progress must never lose the run
                    self.on_step = None

    def join(self) -> None:
        """Wait until the pipe is closed (the run and what it started have exited)."""
        self.thread.join(timeout=30)

    def text(self) -> str:
        """Everything read."""
        return "".join(self.lines)


def _completed(path) -> ResultRecord | None:
    """The ``ok`` record at ``path``, if one is there (readable, current schema)."""
    if not path.exists():
        return None
    try:
        rec = store.load(path)
    except Exception:  # noqa: BLE001 - an unreadable record is not a completed run
        return None
    return rec if rec.status == "ok" else None


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc`` and every process it started (servers, compilers), children first."""
    import psutil

    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    for p in children:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    proc.kill()


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
