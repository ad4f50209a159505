"""Facts about this machine and process that several layers need (envinfo, meters, runner,
training): the CPU model string, sockets, usable CPUs, current and peak resident memory.

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


def peak_rss_bytes() -> int:
    """Peak resident set size of this process over its lifetime, bytes
    (``getrusage(RUSAGE_SELF).ru_maxrss``; Linux reports KiB, macOS bytes)."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(ru if sys.platform == "darwin" else ru * 1024)


#: how :func:`peak_rss_bytes` is obtained, for records
PEAK_RSS_METHOD = "getrusage(RUSAGE_SELF).ru_maxrss: process lifetime peak, load included"


def rss_bytes() -> int:
    """Current resident set size of this process, bytes (/proc/self/statm; the lifetime peak
    where /proc is absent)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE_BYTES
    except (OSError, ValueError, IndexError):
        return peak_rss_bytes()
