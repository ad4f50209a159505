"""Facts about this machine and process that several layers need (envinfo, meters, runner,
training): the CPU model string, sockets, usable CPUs, the one thread count of a run
(:func:`resolve_threads`), current and peak resident memory (the
lifetime peak, and the peak of one phase: :class:`PeakRss`).

Pure standard library, one implementation each, so the roofline cache (keyed by CPU model) and
the TDP table (looked up by CPU model) always agree.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from functools import lru_cache

_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@lru_cache(maxsize=1)
def cpu_model_name() -> str:
    """The CPU model string: /proc/cpuinfo ``model name`` (or ``cpu model`` / ``Hardware`` on
    other architectures), ``sysctl machdep.cpu.brand_string`` on macOS, else ``platform``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("model name", "cpu model", "hardware") and value.strip():
                    return value.strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            out = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"],
                capture_output=True, text=True, timeout=2, check=False,
            ).stdout.strip()  # fmt: skip
            if out:
                return out
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown"


def cpu_sockets() -> int:
    """Distinct ``physical id`` values in /proc/cpuinfo (1 when unknown)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            ids = {line.split(":", 1)[1].strip() for line in f if line.startswith("physical id")}
    except OSError:
        return 1
    return max(len(ids), 1)


def usable_logical_cpus() -> int:
    """Logical CPUs this process may run on (scheduler affinity), else all of them."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):
        return max(os.cpu_count() or 1, 1)


def physical_cores_available() -> int:
    """Physical cores this process may run on: the distinct (``physical id``, ``core id``) pairs
    of /proc/cpuinfo among the logical CPUs of its scheduler affinity (what PyTorch's default
    thread count is); where /proc/cpuinfo does not say, psutil's physical count capped at the
    usable logical CPUs. At least 1."""
    usable = usable_logical_cpus()
    try:
        allowed = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        allowed = None
    cores: set[tuple[str, str]] = set()
    proc: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in [*f, "\n"]:
                key, _, value = line.partition(":")
                key = key.strip()
                if key:
                    proc[key] = value.strip()
                    continue
                if "processor" in proc and "core id" in proc and proc["processor"].isdigit():
                    if allowed is None or int(proc["processor"]) in allowed:
                        cores.add((proc.get("physical id", "0"), proc["core id"]))
                proc = {}
    except OSError:
        pass
    if cores:
        return max(1, min(len(cores), usable))
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except ImportError:
        physical = None
    return max(1, min(physical or usable, usable))


#: how :func:`resolve_threads` found the count, per source (kept in the record)
THREADS_SOURCES = {
    "user": "set by --threads",
    "environment": "OMP_NUM_THREADS of the environment",
    "resolved": "physical cores available to this process (scheduler affinity, /proc/cpuinfo core ids)",
    "resolved_spare": "physical cores available to this process but one (kept for loader workers and samplers)",
}


def resolve_threads(
    requested: int | None = None, environ: dict[str, str] | None = None, spare_cores: int = 0
) -> tuple[int, str]:
    """The one thread count of a run, for every backend, executor and trainer, and its source (a
    key of :data:`THREADS_SOURCES`): ``requested`` (``--threads``) when set, else a positive
    ``OMP_NUM_THREADS`` of ``environ`` (this process's environment; the executors set it for
    each run), else :func:`physical_cores_available` less ``spare_cores`` (at least 1).

    ``spare_cores`` is for callers whose own process needs a core beside torch's pool: training
    keeps one for its loader workers and memory/usage samplers — with every core in the OpenMP
    pool one descheduled thread stalls each parallel region (on 2 shared cores at load 10 the
    default model trained at 467 tokens/s with 2 threads and 3,383 with 1)."""
    if requested:
        return int(requested), "user"
    n = env_threads(os.environ if environ is None else environ)
    if n is not None:
        return n, "environment"
    if spare_cores > 0:
        return max(1, physical_cores_available() - spare_cores), "resolved_spare"
    return physical_cores_available(), "resolved"


def env_threads(environ) -> int | None:
    """The positive ``OMP_NUM_THREADS`` of ``environ`` (a mapping of environment variables), else None."""
    try:
        n = int(environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        return None
    return n if n > 0 else None


_peak_before_reset_bytes = 0  # the lifetime peak as it was before the last reset_peak_rss()


def peak_rss_bytes() -> int:
    """Peak resident set size of this process over its lifetime, bytes
    (``getrusage(RUSAGE_SELF).ru_maxrss``; Linux reports KiB, macOS bytes). Linux resets
    ru_maxrss together with VmHWM (:func:`reset_peak_rss`); the peak from before a reset is
    remembered, so this stays the lifetime peak."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return max(int(ru if sys.platform == "darwin" else ru * 1024), _peak_before_reset_bytes)


#: how :func:`peak_rss_bytes` is obtained, for records
PEAK_RSS_METHOD = "getrusage(RUSAGE_SELF).ru_maxrss: process lifetime peak, load included"


def hwm_rss_bytes() -> int | None:
    """The resident-set high-water mark since the last reset (``VmHWM`` in /proc/self/status),
    bytes; None where /proc is absent."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset the resident-set high-water mark to the current RSS (Linux >= 4.0: write "5" to
    /proc/self/clear_refs). Returns False where that is not possible. The lifetime peak is
    kept for :func:`peak_rss_bytes`."""
    global _peak_before_reset_bytes
    before = peak_rss_bytes()
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        return False
    _peak_before_reset_bytes = max(_peak_before_reset_bytes, before)
    hwm, now = hwm_rss_bytes(), rss_bytes()
    return hwm is not None and hwm <= max(now, 1) * 1.05 + 4 * 2**20  # really reset


def release_free_memory() -> bool:
    """Collect garbage and hand freed heap memory back to the OS (glibc ``malloc_trim(0)``), so
    that RSS reflects what is still in use — e.g. after an in-process GGUF conversion, whose
    freed buffers glibc would otherwise keep resident. Returns whether ``malloc_trim`` ran."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return False
    return True


class PeakRss:
    """The peak resident set size of one phase of this process, bytes.

    ``start()`` resets the kernel's high-water mark (:func:`reset_peak_rss`) and ``stop()``
    reads it (``VmHWM``): exact, no thread. Where the reset is not possible, a daemon thread
    samples RSS every ``interval_s`` instead (a peak shorter than that can be missed).
    ``method`` says which was used.
    """

    def __init__(self, interval_s: float = 0.05) -> None:
        self.interval_s = interval_s
        self.method = ""
        self._peak = 0
        self._stop = None
        self._thread = None

    def start(self) -> None:
        """Begin the phase (the current RSS is its floor)."""
        import threading

        if reset_peak_rss():
            self.method = "VmHWM after a reset via /proc/self/clear_refs (exact high-water mark)"
            return
        self.method = f"RSS sampled every {self.interval_s * 1000:.0f} ms (high-water mark reset unavailable)"
        self._peak = rss_bytes()
        self._stop = threading.Event()

        def run() -> None:
            while not self._stop.wait(self.interval_s):
                self._peak = max(self._peak, rss_bytes())

        self._thread = threading.Thread(target=run, name="e3bench-peak-rss", daemon=True)
        self._thread.start()

    def stop(self) -> int:
        """End the phase; return its peak RSS in bytes."""
        if self._thread is None:
            hwm = hwm_rss_bytes()
            return hwm if hwm is not None else rss_bytes()
        self._stop.set()
        self._thread.join(timeout=1.0)
        self._thread = None
        return max(self._peak, rss_bytes())


def rss_bytes() -> int:
    """Current resident set size of this process, bytes (/proc/self/statm; the lifetime peak
    where /proc is absent)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE_BYTES
    except (OSError, ValueError, IndexError):
        return peak_rss_bytes()
