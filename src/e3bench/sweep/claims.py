"""Claims: a sweep configuration is run by one process at a time, even when two sweeps (or two
Ray workers) share one output folder.

Before running a configuration an executor claims it: it writes ``<sweep>/.claims/<hash>.claim``
(:func:`e3bench.results.store.claim_path`) atomically — a temporary file with the holder's pid,
host, process start time, claim time and run timeout, then ``os.link`` to the claim name, which
fails when the name exists (atomic on local file systems and NFS). Whoever finds a live claim
skips the configuration and says who holds it (:class:`Held`). A claim is **stale**, and taken
over, when

* its process is gone: same host, and the pid is not alive or belongs to a process started at
  another time (a reused pid); or
* it is older than its run timeout plus :data:`GRACE_S` (any host: the holder would have killed
  the run by then).

Taking over goes through a short-lived ``.break`` lock, so two processes never both take the
same stale claim. The claim is deleted (released) once the run's record is written.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: seconds a claim may outlive its run timeout before any host treats it as stale, and the age
#: after which a left-over ``.break`` lock (its taker died mid-takeover) is removed
GRACE_S = 60.0


def _start_time(pid: int) -> float | None:
    """When process ``pid`` started (epoch seconds), or None when no such process exists."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return None


@dataclass(frozen=True)
class Holder:
    """Who holds a claim, as written in the claim file."""

    pid: int
    host: str
    process_started: float | None
    claimed_at: float  # epoch seconds
    timeout_s: float | None

    def describe(self) -> str:
        """``pid 123 on host-a since 2026-11-30 11:02:03 UTC``."""
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.claimed_at))
        return f"pid {self.pid} on {self.host} since {when}"

    def stale_reason(self, now: float | None = None) -> str | None:
        """Why this claim no longer protects a running run (None: it is live)."""
        now = time.time() if now is None else now
        if self.timeout_s and now - self.claimed_at > self.timeout_s + GRACE_S:
            return f"older than its run timeout of {self.timeout_s:g} s"
        if self.host == platform.node():
            started = _start_time(self.pid)
            if started is None:
                return "its process is gone"
            if self.process_started is not None and abs(started - self.process_started) > 1.0:
                return "its pid now belongs to another process"
        return None


@dataclass(frozen=True)
class Held:
    """A configuration this process did not run: another process holds its claim, or finished it
    meanwhile. ``by`` says which (one line)."""

    config: Any  # the RunConfig
    by: str


class Claim:
    """A claim this process holds; :meth:`release` deletes it (idempotent)."""

    def __init__(self, path: Path, took_over: str | None = None) -> None:
        self.path = path
        self.took_over = took_over  # the stale holder this claim replaced, described

    def release(self) -> None:
        """Delete the claim file (nothing happens when it is already gone)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def read_holder(path: Path) -> Holder | None:
    """The holder written in claim file ``path``; None when the file is gone. A file that
    cannot be parsed counts as held by an unknown process claimed at its modification time, stale
    after twice :data:`GRACE_S` (claims are written whole, so such a file was damaged later)."""
    try:
        text = path.read_text()
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return None
    try:
        d = json.loads(text)
        return Holder(int(d["pid"]), str(d["host"]), d.get("process_started"), float(d["claimed_at"]),
                      d.get("timeout_s"))  # fmt: skip
    except (ValueError, KeyError, TypeError):
        return Holder(-1, "?", None, mtime, GRACE_S)


def _write_claim(path: Path, timeout_s: float | None) -> bool:
    """Create claim ``path`` with this process as holder; False when it already exists."""
    body = {"pid": os.getpid(), "host": platform.node(), "process_started": _start_time(os.getpid()),
            "claimed_at": time.time(), "timeout_s": timeout_s}  # fmt: skip
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    tmp.write_text(json.dumps(body))
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def acquire(path: Path, *, timeout_s: float | None) -> Claim | Holder:
    """Claim ``path`` for this process: a :class:`Claim` (taking over a stale one), or the live
    :class:`Holder` of someone else's claim. Raises ``OSError`` when the folder is not writable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(5):  # another process may release or take over between our steps
        if _write_claim(path, timeout_s):
            return Claim(path)
        holder = read_holder(path)
        if holder is None:
            continue  # released meanwhile: try again
        why = holder.stale_reason()
        if why is None:
            return holder
        taken = _take_over(path, holder, timeout_s)
        if taken is not None:
            return Claim(path, took_over=f"{holder.describe()} ({why})")
    holder = read_holder(path)
    return holder if holder is not None else Holder(-1, "?", None, time.time(), None)


def _take_over(path: Path, stale: Holder, timeout_s: float | None) -> Claim | None:
    """Replace the stale claim ``stale`` by ours under the ``.break`` lock; None when another
    process is taking it over or it changed meanwhile."""
    lock = path.with_name(path.name + ".break")
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        with contextlib.suppress(FileNotFoundError):
            if time.time() - lock.stat().st_mtime > GRACE_S:
                os.unlink(lock)  # its taker died mid-takeover
        return None
    os.close(fd)
    try:
        if read_holder(path) != stale:
            return None  # released or taken over by someone else meanwhile
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return Claim(path) if _write_claim(path, timeout_s) else None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
