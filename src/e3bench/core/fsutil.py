"""Crash-safe file and directory writes, and cache keys for files and model directories.

One implementation of each, used by the result store, the model caches (GGUF conversion, ONNX
export, vLLM checkpoints) and training checkpoints: a crash never leaves a half-written file or
directory where a complete one is expected.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` via a temporary sibling + fsync + ``os.replace``.

    Raises ``OSError`` when the directory cannot be created or written; the target is then
    untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Build a directory in a fresh temporary sibling and swap it into ``target`` on success.

    ``with atomic_dir(t) as tmp: write files into tmp``. If the body raises, the temporary
    directory is removed and ``target`` keeps whatever it held before. A previous ``target`` is
    replaced only after the new one is complete.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
    tmp.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def file_key(path: str | os.PathLike) -> str:
    """A cache key that changes when the file changes: ``<stem>-<size>-<mtime s>``."""
    path = Path(path)
    st = path.stat()
    return f"{path.stem}-{st.st_size}-{int(st.st_mtime)}"


def dir_key(path: str | os.PathLike) -> str:
    """A cache key for a model directory: the names, sizes and mtimes of its config, tokenizer
    and weight files, hashed: ``<dirname>-<12 hex>``."""
    path = Path(path)
    h = hashlib.sha256()
    for f in sorted(path.iterdir()):
        if f.is_file() and (f.suffix in (".json", ".safetensors", ".bin", ".model", ".txt")):
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{int(st.st_mtime)};".encode())
    return f"{path.name}-{h.hexdigest()[:12]}"
