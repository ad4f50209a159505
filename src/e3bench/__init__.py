"""e3bench: efficiency, energy and effectiveness of small language models from one run.

The Python API (docs/api.md); every name is imported on first use, so ``import e3bench`` loads
no torch, transformers or pydantic:

* :func:`run` — ``e3bench run`` as a function: config → runner → store, returns the
  :class:`ResultRecord` (user errors raise :class:`E3Error` with the CLI's one-line message);
* :func:`load_records` / :func:`load_record` — stored records, by folder, file or run id;
* :func:`measure` — a context manager that meters your own code with e3bench's meters
  (time, energy with its method and sensor, CO2e with its source);
* :class:`RunConfig`, :class:`ResultRecord`, :class:`MeasureResult`, :class:`E3Error`.
"""

from importlib import metadata as _metadata
from typing import TYPE_CHECKING

from e3bench.core.quiet import capture_import_chatter as _capture_import_chatter

# torchao's "Failed to load …so" lines are printed when transformers imports it: keep them (see
# e3bench.core.quiet.captured) out of every command's output from the first import on
_capture_import_chatter()

try:
    __version__ = _metadata.version("e3bench")
except _metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"

#: public name → module that defines it (imported lazily by __getattr__)
_LAZY = {
    "run": "e3bench.pyapi",
    "build": "e3bench.pyapi",
    "load_records": "e3bench.pyapi",
    "load_record": "e3bench.pyapi",
    "measure": "e3bench.metering",
    "Measurement": "e3bench.metering",
    "MeasureResult": "e3bench.metering",
    "RunConfig": "e3bench.config.run",
    "ResultRecord": "e3bench.results.schema",
    "E3Error": "e3bench.core.errors",
}
__all__ = [
    "__version__", "run", "build", "load_records", "load_record", "measure", "Measurement", "MeasureResult",
    "RunConfig", "ResultRecord", "E3Error",
]  # fmt: skip

if TYPE_CHECKING:
    from e3bench.config.run import RunConfig
    from e3bench.core.errors import E3Error
    from e3bench.metering import MeasureResult, Measurement, measure
    from e3bench.pyapi import build, load_record, load_records, run
    from e3bench.results.schema import ResultRecord


def __getattr__(name: str):
    """Import the public API names on first use (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'e3bench' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The module's names, the lazy API included."""
    return sorted({*globals(), *_LAZY})
