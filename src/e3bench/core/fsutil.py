"""Crash-safe file and directory writes, file modes, safe path components, and cache keys for
files and model directories.

One implementation of each, used by the result store, the report, the model caches (GGUF
conversion, ONNX export, vLLM checkpoints) and training checkpoints: a crash never leaves a
half-written file or directory where a complete one is expected, and what e3bench writes gets the
permissions the user's umask gives any new file (teammates on a shared server can read results),
not the private mode of the temporary file it was built in.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from e3bench.core.errors import E3Error

#: Longest file-name component most file systems accept, in bytes (ext4, XFS, APFS, NTFS: 255).
NAME_MAX = 255


def current_umask() -> int:
    """The process umask (e.g. ``0o022``), read without changing it where Linux allows
    (``/proc/self/status``); elsewhere via ``os.umask`` set-and-restore."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _chmod_like_new(path: str | os.PathLike, base: int) -> None:
    """Give ``path`` the mode ``base & ~umask`` (what ``open``/``mkdir`` would have given it)."""
    os.chmod(path, base & ~current_umask())


def make_parents(path: str | os.PathLike) -> None:
    """Create ``path``'s parent folders. Raises ``NotADirectoryError`` naming the file when one
    of them is a file (``mkdir`` would say "File exists"), other ``OSError`` as ``mkdir`` does."""
    parent = Path(path).parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        for p in (parent, *parent.parents):
            if p.exists() and not p.is_dir():
                raise NotADirectoryError(20, "Not a directory", str(p)) from None
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary sibling + fsync + ``os.replace``; the file gets
    mode ``0o666 & ~umask`` like any newly created file (not ``mkstemp``'s private ``0o600``).

    Raises ``OSError`` when the directory cannot be created or written, or ``path`` is a
    directory; the target is then untouched and no temporary file is left behind.
    """
    path = Path(path)
    make_parents(path)
    if path.is_dir():
        raise IsADirectoryError(21, "Is a directory", str(path))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:200]}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        _chmod_like_new(tmp, 0o666)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically, see :func:`atomic_write_bytes`.

    Raises ``OSError`` when the directory cannot be created or written; the target is then
    untouched.
    """
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def write_errors(target: str | os.PathLike, fix: str, what: str = "write") -> Iterator[None]:
    """Turn an ``OSError`` raised in the body into one :class:`E3Error` line:
    ``cannot <what> <target>: <reason> (<file>)`` with ``fix``. For commands whose output place
    the user chose (``report -o``, ``export -o``): a bad place is a user error, not a traceback."""
    try:
        yield
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        name = Path(str(exc.filename or "")).name
        own_temp = name.startswith(f".{Path(target).name[:200]}.") and name.endswith(".tmp")
        shown = exc.filename and str(exc.filename) != str(target) and not own_temp
        where = f" ({exc.filename})" if shown else ""
        raise E3Error(f"cannot {what} {target}: {reason}{where}", fix) from None


def component_problem(name: str) -> str | None:
    """Why ``name`` cannot be used as one file or folder name inside a folder e3bench writes to
    (None when it can): empty, ``.``/``..``, a path separator or absolute path, a control
    character (NUL, newline, ...), or longer than :data:`NAME_MAX` bytes in UTF-8."""
    if not isinstance(name, str) or not name:
        return "it is empty"
    if name in (".", ".."):
        return f"{name!r} names a folder, not a new one inside it"
    if "/" in name or "\\" in name:
        return "it contains a path separator ('/' or '\\')"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        return "it contains a control character (newline, tab, NUL, ...)"
    if len(name.encode("utf-8")) > NAME_MAX:
        return f"it is longer than {NAME_MAX} bytes"
    return None


def safe_component(name: str, what: str) -> str:
    """``name`` unchanged when :func:`component_problem` finds nothing; else :class:`E3Error`
    naming ``what`` (e.g. ``"sweep name"``) and the value. The last check before a name becomes a
    path, behind the validation where the name is given."""
    problem = component_problem(name)
    if problem is not None:
        raise E3Error(f"{what} {name!r} cannot be used as a folder or file name: {problem}",
                      "use a plain name such as 'my-sweep' (letters, digits, '-', '_', '.')")  # fmt: skip
    return name


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Build a directory in a fresh temporary sibling and swap it into ``target`` on success.

    ``with atomic_dir(t) as tmp: write files into tmp``. If the body raises, the temporary
    directory is removed and ``target`` keeps whatever it held before. A previous ``target`` is
    replaced only after the new one is complete. The directory gets mode ``0o777 & ~umask`` like
    any new folder (not ``mkdtemp``'s private ``0o700``).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        yield tmp
        _chmod_like_new(tmp, 0o777)
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
