"""Keep third-party chatter (load reports, progress bars, import-time warnings) out of e3bench's
output: a run prints its own progress lines and tables, and user errors are one line."""

from __future__ import annotations

import contextlib
import functools
import logging
import re

#: loggers that warn at import or load time about things the user cannot act on: torchao about
#: optional kernels built for other GPUs (mxfp8, cutlass sm90a), torch's pytree about enum
#: registration deprecated inside torchao.
_NOISY_LOGGERS = ("torchao", "torch.utils._pytree")


#: logger → pattern of the import-time lines :func:`capture_import_chatter` keeps out of the output:
#: torchao's compiled kernels built for other GPUs / torch versions ("Failed to load …so", "Skipping
#: import of cpp extensions") and torch's pytree deprecation about torchao's enums. transformers
#: imports torchao whenever it is installed (``transformers.quantizers``), so these lines appeared
#: in every command that loads a model, ``e3bench train`` included, before any quieting ran.
_IMPORT_CHATTER = {
    "torchao": re.compile(r"(Failed to load \S+\.so\b|Skipping import of cpp extensions)"),
    "torch.utils._pytree": re.compile(r"is an Enum subclass .*register_constant\(\) on Enum subclasses is deprecated", re.S),
}
#: where captured lines go instead (``logging.basicConfig(level=logging.DEBUG)`` shows them)
CAPTURED_LOGGER = "e3bench.captured"


class _Capture(logging.Filter):
    """Drops the known import-time lines of one logger, keeping their text; everything else —
    other warnings, and every ERROR or worse, even a matching one — passes untouched."""

    def __init__(self, logger: str, pattern: re.Pattern[str]) -> None:
        super().__init__()
        self.logger = logger
        self.pattern = pattern
        self.lines: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        msg = record.getMessage()
        if not self.pattern.search(msg):
            return True
        self.lines.append(msg)
        logging.getLogger(CAPTURED_LOGGER).debug("%s: %s", self.logger, msg)
        return False


_captures: dict[str, _Capture] = {}


def capture_import_chatter() -> None:
    """Keep the known import-time lines of :data:`_IMPORT_CHATTER` out of the output (idempotent;
    called when ``e3bench`` is imported, before any third-party import can print them). They are
    kept: :func:`captured` returns them, and they are re-logged at DEBUG on ``e3bench.captured``."""
    for name, pattern in _IMPORT_CHATTER.items():
        if name not in _captures:
            _captures[name] = _Capture(name, pattern)
            logging.getLogger(name).addFilter(_captures[name])


def captured(logger: str = "torchao") -> list[str]:
    """The lines :func:`capture_import_chatter` kept from ``logger`` so far (for error messages)."""
    cap = _captures.get(logger)
    return list(cap.lines) if cap else []


def quiet_libraries() -> None:
    """Silence transformers' load reports and bars and the noisy loggers above (errors still show)."""
    capture_import_chatter()
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


#: libraries with their own progress-bar switch: (module, is-on check, turn off, turn on)
_SWITCHED = (
    ("datasets", lambda m: m.is_progress_bar_enabled(), "disable_progress_bars", "enable_progress_bars"),
    ("huggingface_hub.utils", lambda m: not m.are_progress_bars_disabled(), "disable_progress_bars",
     "enable_progress_bars"),
)  # fmt: skip


@contextlib.contextmanager
def bars_off(*modules: str):
    """No third-party progress bars for the duration: the ``tqdm`` each of ``modules`` imported
    (``from tqdm import tqdm``, called directly, ignoring any switch) is swapped for a disabled
    one, as is ``tqdm.tqdm`` (for code that imports it inside a function), and the bars of
    ``datasets`` and ``huggingface_hub`` are switched off when they are loaded (by then or by
    ``modules``). e3bench shows its own progress. A module that is not installed is skipped;
    everything is put back afterwards."""
    import importlib
    import sys

    with contextlib.ExitStack() as stack:
        for name in (*modules, "tqdm"):
            try:
                mod = importlib.import_module(name)
            except ImportError:
                continue
            bar = getattr(mod, "tqdm", None)
            if callable(bar) and not isinstance(bar, functools.partial):
                setattr(mod, "tqdm", functools.partial(bar, disable=True))
                stack.callback(setattr, mod, "tqdm", bar)
        for lib, is_on, off, on in _SWITCHED:
            mod = sys.modules.get(lib)
            if mod is not None and hasattr(mod, off) and is_on(mod):
                getattr(mod, off)()
                stack.callback(getattr(mod, on))
        yield


def gguf_progress_off():
    """transformers' GGUF de-quantizing loop calls tqdm directly, ignoring its own progress-bar
    switch (seen with transformers 5.17): :func:`bars_off` for its module."""
    return bars_off("transformers.modeling_gguf_pytorch_utils")
