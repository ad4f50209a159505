"""What survives ``kill -9`` (docs/guarantees.md): a process killed while writing a file or
building a folder leaves the previous complete version or the new complete one, never a partial
file where a complete one is expected; leftovers are hidden temporaries that readers skip."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from conftest import ROOT

SIZE = 4 << 20  # 4 MiB per write: long enough that a kill lands inside one

WRITER = f"""
import sys
from pathlib import Path
from e3bench.core.fsutil import atomic_dir, atomic_write_bytes
target, kind = Path(sys.argv[1]), sys.argv[2]
print("ready", flush=True)
i = 0
while True:
    data = bytes([65 + i % 2]) * {SIZE}
    if kind == "file":
        atomic_write_bytes(target, data)
    else:
        with atomic_dir(target) as tmp:
            for name in ("a.bin", "b.bin"):
                (tmp / name).write_bytes(data)
    i += 1
"""


def _kill_mid_write(target: Path, kind: str, rounds: int = 6) -> Iterator[list[Path]]:
    """Start a writer that rewrites ``target`` forever, ``kill -9`` it at a random moment,
    ``rounds`` times; returns the paths left next to ``target`` after each kill."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    rng = random.Random(0)
    for _ in range(rounds):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target), kind], stdout=subprocess.PIPE, env=env)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.3, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        yield sorted(target.parent.iterdir())


def _whole(data: bytes) -> bool:
    return len(data) == SIZE and data in (b"A" * SIZE, b"B" * SIZE)


def test_kill9_during_a_file_write_leaves_the_old_or_the_new_file(tmp_path):
    """Records, samples, reports, exports and cache manifests go through ``atomic_write_bytes``:
    after each ``kill -9`` the file is one complete version; the only other files are hidden
    temporaries, which the result store never reads."""
    from e3bench.results.store import json_files

    target = tmp_path / "record.json"
    target.write_bytes(b"A" * SIZE)
    for left in _kill_mid_write(target, "file"):
        assert _whole(target.read_bytes())
        assert all(p == target or p.name.startswith(".record.json.") for p in left), left
        assert list(json_files(tmp_path)) == [target]


def test_kill9_during_a_folder_build_leaves_a_complete_folder(tmp_path):
    """Checkpoints and model caches go through ``atomic_dir``: the new folder is built in a
    hidden sibling, so a kill leaves the previous complete folder in place; in the instant
    between the two renames of the swap it is the hidden ``.<name>.old<pid>``, still complete."""
    target = tmp_path / "ckpt"
    target.mkdir()
    for name in ("a.bin", "b.bin"):
        (target / name).write_bytes(b"A" * SIZE)
    for left in _kill_mid_write(target, "dir"):
        # the target, or (killed between the two renames) the previous one under its hidden name
        candidates = [target] if target.exists() else [p for p in left if p.name.startswith(".ckpt.old")]
        assert any(_complete(d) for d in candidates), left
        assert all(p.name.startswith(".ckpt.") for p in left if p != target), left


def _complete(d: Path) -> bool:
    a, b = d / "a.bin", d / "b.bin"
    return a.is_file() and b.is_file() and _whole(a.read_bytes()) and a.read_bytes() == b.read_bytes()


SRC = ROOT / "src" / "e3bench"
WRITERS = {"write_text", "write_bytes", "savefig", "save_pretrained", "to_csv", "to_parquet", "save"}
#: writes that are atomic by another route (module: why)
ATOMIC_ELSEWHERE = {
    "core/fsutil.py": "the atomic writers themselves",
    "sweep/claims.py": "a claim is written to a temporary name and hard-linked into place (os.link)",
    "backends/onnx_export.py": "writes only into the folder onnxrt builds with atomic_dir (argv)",
    "core/host.py": "/proc/self/clear_refs, not a file on disk",
    "serve/launch.py": "the launched server's log, which the server process appends to as it runs (a stream kept "
                       "for the user: no result is read from it)",
}


def test_every_file_write_in_src_is_atomic():
    """The kind, everywhere: in ``src/e3bench`` a file is written only through
    ``core.fsutil`` (``atomic_write_*``), into the temporary folder of an ``atomic_dir``
    (``tmp / ...``), or into an in-memory buffer. Before: ``train``'s loss_curves.png was
    ``savefig(path)`` (a kill -9 left half a PNG)."""
    import ast

    bad = []
    for path in sorted(SRC.rglob("*.py")):
        rel = str(path.relative_to(SRC))
        if rel in ATOMIC_ELSEWHERE:
            continue
        text = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            if isinstance(f, ast.Name) and f.id == "open":
                mode = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "mode"), None)
                if isinstance(mode, ast.Constant) and set(str(mode.value)) & set("wax+"):
                    bad.append(f"{rel}:{node.lineno} open(..., {mode.value!r})")
                continue
            if not (isinstance(f, ast.Attribute) and f.attr in WRITERS):
                continue
            if f.attr == "save" and not (isinstance(f.value, ast.Name) and f.value.id == "torch"):
                continue  # only torch.save writes a file among the .save(...) calls
            where = f.value if f.attr in ("write_text", "write_bytes") else node.args[1 if f.attr == "save" else 0]
            target = ast.get_source_segment(text, where) or ""
            if not target.startswith(("tmp", "str(tmp)", "buf")):
                bad.append(f"{rel}:{node.lineno} {ast.get_source_segment(text, node)[:80]}")
    assert bad == []
