"""Cache keys are content keys: a reinstalled (re-timestamped) copy of the same model file hits the
same cache entry; a change to the bytes the key samples misses; entries an older e3bench keyed
by modification time are adopted when they match and named (not silently orphaned) otherwise."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from e3bench.backends.models import gguf_cache_dir, load_converted_gguf
from e3bench.core.api import ModelSpec
from e3bench.core.fsutil import (
    KEY_BLOCK_BYTES,
    dir_key,
    file_key,
    key_ranges,
    legacy_dir_key,
    legacy_file_key,
)

SIZE = 9 * 2**20 + 12345  # over KEY_WHOLE_BYTES: the key samples


def _file(path: Path, seed: int = 0) -> Path:
    import random

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(random.Random(seed).randbytes(SIZE))
    return path


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _reinstall(src: Path, dst: Path) -> Path:
    """A copy with a different modification time (what pip reinstalling the wheel does)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    st = src.stat()
    os.utime(dst, (st.st_atime + 86400, st.st_mtime + 86400))
    return dst


def test_file_key_is_the_same_for_a_copy_with_another_mtime(tmp_path):
    a = _file(tmp_path / "a" / "m.gguf")
    b = _reinstall(a, tmp_path / "b" / "m.gguf")
    assert legacy_file_key(a) != legacy_file_key(b)  # the old key split them: one 513 MB copy each
    assert file_key(a) == file_key(b)
    assert file_key(a).startswith(f"m-{SIZE}-h")


@pytest.mark.parametrize("which", ["header", "middle block", "last block"])
def test_file_key_changes_when_one_sampled_byte_changes(tmp_path, which):
    a = _file(tmp_path / "a" / "m.gguf")
    ranges = key_ranges(SIZE)
    off, length = {"header": ranges[0], "middle block": ranges[len(ranges) // 2], "last block": ranges[-1]}[which]
    assert length in (KEY_BLOCK_BYTES, 2**20) and len(ranges) == 18
    b = _reinstall(a, tmp_path / "b" / "m.gguf")
    _flip(b, off + length // 2)
    assert file_key(a) != file_key(b)


def test_small_files_are_keyed_whole(tmp_path):
    a = tmp_path / "m.gguf"
    a.write_bytes(bytes(1000))
    k = file_key(a)
    _flip(a, 777)
    assert key_ranges(1000) == [(0, 1000)] and file_key(a) != k


def test_dir_key_ignores_mtimes_and_sees_content(tiny_models, tmp_path):
    src = tiny_models["decoder"]
    copy = tmp_path / src.name
    shutil.copytree(src, copy)
    for f in copy.iterdir():
        os.utime(f, (1_000_000, 1_000_000))
    assert legacy_dir_key(copy) != legacy_dir_key(src)
    assert dir_key(copy) == dir_key(src)
    weights = next(copy.glob("*.safetensors"))
    _flip(weights, key_ranges(weights.stat().st_size)[-1][0])
    assert dir_key(copy) != dir_key(src)


def _spec(gguf: Path) -> ModelSpec:
    return ModelSpec(name=str(gguf), source="gguf", path=str(gguf.parent), gguf_file=gguf.name)


def _fake_entry(entry: Path, model_dir: Path) -> None:
    """A complete converted copy (the tiny decoder stands in for the dequantised weights)."""
    shutil.copytree(model_dir, entry)
    (entry / "e3bench-converted.json").write_text(json.dumps({"source_gguf": "x"}))


def test_reinstalled_gguf_hits_the_same_conversion_entry(tiny_models, tmp_path):
    """The conversion (never run here: the file is not a real GGUF) is found again after the
    file is reinstalled with a new mtime; a GGUF with one changed sampled byte misses."""
    cache = str(tmp_path / "cache")
    first = _file(tmp_path / "site1" / "m.gguf")
    entry = gguf_cache_dir(_spec(first), cache)
    _fake_entry(entry, tiny_models["decoder"])
    again = _reinstall(first, tmp_path / "site2" / "m.gguf")
    path, cached, notes = load_converted_gguf(_spec(again), cache)
    assert (path, cached, notes) == (entry, True, [])
    changed = _reinstall(first, tmp_path / "site3" / "m.gguf")
    _flip(changed, key_ranges(SIZE)[3][0])
    assert gguf_cache_dir(_spec(changed), cache) != entry
    with pytest.raises(Exception, match="GGUF"):  # a miss: it tries to convert the (fake) file
        load_converted_gguf(_spec(changed), cache)


def test_entries_keyed_by_mtime_are_adopted_or_named(tiny_models, tmp_path):
    """An older e3bench's entry for the file as it is now (same mtime) is renamed to the content
    key and reused; entries for earlier installs (other mtimes) are named with their size."""
    cache = tmp_path / "cache"
    gguf = _file(tmp_path / "site" / "m.gguf")
    parent = gguf_cache_dir(_spec(gguf), str(cache)).parent
    _fake_entry(parent / legacy_file_key(gguf), tiny_models["decoder"])
    earlier = parent / f"m-{SIZE}-1700000000"
    _fake_entry(earlier, tiny_models["decoder"])
    path, cached, notes = load_converted_gguf(_spec(gguf), str(cache))
    assert cached and path == gguf_cache_dir(_spec(gguf), str(cache)) and path.is_dir()
    assert not (parent / legacy_file_key(gguf)).exists()
    assert f"{legacy_file_key(gguf)} (keyed by file modification time by an older e3bench) renamed to {path.name}" in notes[0]
    mb = sum(f.stat().st_size for f in earlier.rglob("*") if f.is_file()) / 1e6
    assert len(notes) == 2 and f"in {earlier.parent}: {earlier.name}" in notes[1] and f"free {mb:.0f} MB" in notes[1], notes
    assert "1 older cache entry for a file named m.gguf" in notes[1] and "is not reused" in notes[1], notes
    assert earlier.is_dir()  # named, never deleted behind the user's back


def test_onnx_entry_keyed_by_mtimes_is_adopted_once(tiny_models, tmp_path):
    """``onnx/<legacy dir key>/fp32`` (an older e3bench's export of these very files) moves to the
    content key, so the ~200 s export is not redone; a second call finds nothing to adopt."""
    from e3bench.core.fsutil import adopt_legacy_entry

    src = tiny_models["decoder"]
    (tmp_path / legacy_dir_key(src) / "fp32").mkdir(parents=True)
    note = adopt_legacy_entry(tmp_path, dir_key(src), legacy_dir_key(src))
    assert (tmp_path / dir_key(src) / "fp32").is_dir() and not (tmp_path / legacy_dir_key(src)).exists()
    assert note and legacy_dir_key(src) in note and dir_key(src) in note
    assert adopt_legacy_entry(tmp_path, dir_key(src), legacy_dir_key(src)) is None
