"""Environments for tests that run the real CLI in subprocesses (sweeps, their workers).

``plugin_env(folder)`` makes :class:`fakes.testing.FakeBackend` a real installed plugin backend
named ``fake`` for every Python process started with the returned environment: it writes a
``*.dist-info`` with an ``e3bench.backends`` entry point into ``folder`` and puts ``folder``,
``tests/`` and ``src/`` on ``PYTHONPATH`` (the sweep and each of its worker subprocesses find it
through the registry's entry points, as they would a pip-installed plugin).

``hide`` names top-level modules that must look uninstalled in those processes (a
``sitecustomize`` sets ``sys.modules[name] = None``: ``importlib.util.find_spec`` returns None
and ``import`` fails), e.g. ``torchao`` for the README's default setup.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def plugin_env(folder: Path, *, hide: tuple[str, ...] = ()) -> dict[str, str]:
    """``os.environ`` plus the PYTHONPATH that installs the ``fake`` backend (and hides ``hide``)."""
    folder.mkdir(parents=True, exist_ok=True)
    info = folder / "e3bench_test_fakes-1.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: e3bench-test-fakes\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[e3bench.backends]\nfake = fakes.testing:FakeBackend\n")
    if hide:
        (folder / "sitecustomize.py").write_text(
            "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in hide)
        )
    paths = [str(folder), str(ROOT / "tests"), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
