"""e3bench: efficiency, energy and effectiveness of small language models from one run."""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("e3bench")
except _metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"
