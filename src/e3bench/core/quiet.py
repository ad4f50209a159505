"""Keep third-party chatter (load reports, progress bars, import-time warnings) out of e3bench's
output: a run prints its own progress lines and tables, and user errors are one line."""

from __future__ import annotations

import contextlib
import functools
import logging

#: loggers that warn at import or load time about things the user cannot act on: torchao about
#: optional kernels built for other GPUs (mxfp8, cutlass sm90a), torch's pytree about enum
#: registration deprecated inside torchao.
_NOISY_LOGGERS = ("torchao", "torch.utils._pytree")


def quiet_libraries() -> None:
    """Silence transformers' load reports and bars and the noisy loggers above (errors still show)."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


@contextlib.contextmanager
def gguf_progress_off():
    """transformers' GGUF de-quantizing loop calls tqdm directly, ignoring its own progress-bar
    switch (seen with transformers 5.17); swap in a disabled bar for the duration."""
    try:
        import transformers.modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:
        yield
        return
    bar = getattr(gguf_utils, "tqdm", None)
    if bar is None:
        yield
        return
    gguf_utils.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = bar
