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


#: What a content key reads of a file: the first KEY_HEAD_BYTES (GGUF/safetensors header and
#: metadata), KEY_BLOCKS evenly spaced blocks of KEY_BLOCK_BYTES and the last block; files up to
#: KEY_WHOLE_BYTES are read whole. About 2 MiB per file, whatever its size.
KEY_HEAD_BYTES = 1 << 20
KEY_BLOCK_BYTES = 1 << 16
KEY_BLOCKS = 16
KEY_WHOLE_BYTES = 4 << 20


def key_ranges(size: int) -> list[tuple[int, int]]:
    """The ``(offset, length)`` byte ranges :func:`content_digest` reads of a ``size``-byte file:
    all of it up to :data:`KEY_WHOLE_BYTES`, else the header, :data:`KEY_BLOCKS` evenly spaced
    blocks and the last block."""
    if size <= KEY_WHOLE_BYTES:
        return [(0, size)]
    span = size - KEY_HEAD_BYTES - KEY_BLOCK_BYTES
    mids = [KEY_HEAD_BYTES + span * (i + 1) // (KEY_BLOCKS + 1) for i in range(KEY_BLOCKS)]
    return [(0, KEY_HEAD_BYTES), *((m, KEY_BLOCK_BYTES) for m in mids), (size - KEY_BLOCK_BYTES, KEY_BLOCK_BYTES)]


def content_digest(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's size and the byte ranges :func:`key_ranges` names: the same for
    a copy of the file (any path, modification time or owner), different when its size, header
    or any sampled block changes. A change that touches only bytes between the samples is not
    seen (a re-quantized or retrained model file differs nearly everywhere, so it is).
    Raises ``OSError`` when the file cannot be read."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        h.update(f"{size};".encode())
        for off, length in key_ranges(size):
            fh.seek(off)
            h.update(fh.read(length))
    return h.hexdigest()


def file_key(path: str | os.PathLike) -> str:
    """A cache key for a file's content: ``<stem>-<size>-h<16 hex of content_digest>``.

    Copying or reinstalling the same file (new modification time) gives the same key, so caches
    keyed by it (GGUF conversion, llama.cpp quantization) hold one entry per content."""
    path = Path(path)
    return f"{path.stem}-{path.stat().st_size}-h{content_digest(path)[:16]}"


def legacy_file_key(path: str | os.PathLike) -> str:
    """The key e3bench up to 0.x used for the same file: ``<stem>-<size>-<mtime s>`` (see
    :func:`adopt_legacy_entry`)."""
    path = Path(path)
    st = path.stat()
    return f"{path.stem}-{st.st_size}-{int(st.st_mtime)}"


#: Files of a model directory that its key covers.
_MODEL_FILE_SUFFIXES = (".json", ".safetensors", ".bin", ".model", ".txt", ".onnx", ".data")


def _model_files(path: Path) -> list[Path]:
    return [f for f in sorted(path.iterdir()) if f.is_file() and f.suffix in _MODEL_FILE_SUFFIXES]


def dir_key(path: str | os.PathLike) -> str:
    """A cache key for a model directory's content: ``<dirname>-<12 hex>`` over the names, sizes
    and :func:`content_digest` of its config, tokenizer and weight files (not their modification
    times, so a re-download or copy of the same files keeps the key)."""
    path = Path(path)
    h = hashlib.sha256()
    for f in _model_files(path):
        h.update(f"{f.name}:{f.stat().st_size}:{content_digest(f)};".encode())
    return f"{path.name}-{h.hexdigest()[:12]}"


def legacy_dir_key(path: str | os.PathLike) -> str:
    """The key e3bench up to 0.x used for the same directory (names, sizes and mtimes of its
    ``.json/.safetensors/.bin/.model/.txt`` files), see :func:`adopt_legacy_entry`."""
    path = Path(path)
    h = hashlib.sha256()
    for f in sorted(path.iterdir()):
        if f.is_file() and (f.suffix in (".json", ".safetensors", ".bin", ".model", ".txt")):
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{int(st.st_mtime)};".encode())
    return f"{path.name}-{h.hexdigest()[:12]}"


def adopt_legacy_entry(parent: str | os.PathLike, key: str, legacy: str) -> str | None:
    """Move the cache entry ``parent/legacy`` (made by an older e3bench whose keys used
    modification times) to ``parent/key`` when only the old one exists; a note saying so, or
    None. The old key was computed from the source as it is now, so the entry is exactly what the
    older e3bench would have reused: same content, no re-conversion."""
    parent = Path(parent)
    old, new = parent / legacy, parent / key
    if legacy == key or new.exists() or not old.is_dir():
        return None
    try:
        old.rename(new)
    except OSError:  # another process adopted it first, or the cache is read-only
        return None
    return f"cache entry {old.name} (keyed by file modification time by an older e3bench) renamed to {new.name}"


def stale_file_entries(parent: str | os.PathLike, path: str | os.PathLike) -> list[Path]:
    """Entries under ``parent`` an older e3bench made for a file of ``path``'s name and size under
    another modification time (``<stem>-<size>-<digits>``): copies of earlier installs of the same
    or an equally large file. Their content cannot be checked, so they are never reused; callers
    name them so the user can delete them."""
    p, parent = Path(path), Path(parent)
    prefix = f"{p.stem}-{p.stat().st_size}-"
    if not parent.is_dir():
        return []
    return sorted(d for d in parent.iterdir()
                  if d.is_dir() and d.name.startswith(prefix) and d.name[len(prefix):].isdigit())  # fmt: skip
