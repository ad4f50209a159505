"""e3bench: efficiency, energy and effectiveness of small language models from one run."""

from importlib import metadata as _metadata

from e3bench.core.quiet import capture_import_chatter as _capture_import_chatter

# torchao's "Failed to load …so" lines are printed when transformers imports it: keep them (see
# e3bench.core.quiet.captured) out of every command's output from the first import on
_capture_import_chatter()

try:
    __version__ = _metadata.version("e3bench")
except _metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"
