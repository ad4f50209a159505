"""Future-proof dependencies: no deprecated transformers API in use, no torchao import chatter in
the output, and the installed versions inside the bounds pyproject.toml declares (issue 15)."""

from __future__ import annotations

import logging
import subprocess
import sys
import warnings

import pytest

from conftest import ROOT, run_cli


@pytest.fixture(scope="module")
def decoder(tiny_models):
    from e3bench.backends.models import resolve
    from e3bench.backends.pytorch import PyTorchBackend

    b = PyTorchBackend()
    b.load(resolve(str(tiny_models["decoder"])), "fp32", "cpu")
    yield b
    b.close()


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_generate_and_scoring_emit_no_future_warning(decoder):
    """transformers 5.x renamed ``past_key_values`` to ``cache`` (the old name warns and goes in
    5.40); the scorer passed and read the old name: three FutureWarnings per scoring call."""
    from e3bench.core.api import GenParams

    hf_log = logging.getLogger("transformers")
    rec = _Records()
    hf_log.addHandler(rec)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gens = decoder.generate([decoder.encode("the quick brown fox")], GenParams(max_new_tokens=4))
            # shared-prefix groups (choices of one question) and one-context batches both use the cache
            scores = decoder.loglikelihood(
                [("the quick brown fox", " jumps"), ("the quick brown fox", " sleeps"), ("energy is", " joules")]
            )
    finally:
        hf_log.removeHandler(rec)
    assert len(gens[0].token_ids) == 4 and len(scores) == 3
    future = [str(w.message) for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))]
    assert future == []
    assert not [m for m in rec.messages if "deprecated" in m], rec.messages


def test_cache_name_follows_the_installed_transformers(decoder):
    import inspect

    from e3bench.backends.hfcache import cache_name

    params = inspect.signature(type(decoder.model).forward).parameters
    assert cache_name(decoder.model) == ("cache" if "cache" in params else "past_key_values")
    assert cache_name(decoder.model) in params


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_torchao_import_lines_are_captured_not_printed():
    """transformers imports torchao (``transformers.quantizers``), whose kernels built for other
    GPUs print "Failed to load …so" on every model load; ``import e3bench`` captures them first."""
    pytest.importorskip("torchao")
    res = _python(
        "import e3bench, logging\n"
        "from e3bench.core.quiet import captured\n"
        "import transformers.quantizers\n"
        "print('KEPT', len(captured('torchao')))\n"
        # a real error and an unrelated warning from the same logger still show
        "logging.getLogger('torchao').error('Failed to load /x/_C_real.so: a real error')\n"
        "logging.getLogger('torchao').warning('some other torchao warning')\n"
    )
    assert res.returncode == 0, res.stderr
    out = res.stdout + res.stderr
    assert "Failed to load /x/_C_real.so: a real error" in out
    assert "some other torchao warning" in out
    assert "register_constant() on Enum" not in out
    assert [ln for ln in out.splitlines() if "Failed to load" in ln and "_C_real" not in ln] == []


def test_without_e3bench_the_lines_would_show():
    """The counterpart: the same import without e3bench's capture prints them here (so the test
    above checks something); skipped where torchao's kernels all load."""
    pytest.importorskip("torchao")
    res = _python("import transformers.quantizers")
    if "Failed to load" not in res.stderr:
        pytest.skip("torchao loads all its kernels on this machine: nothing to capture")
    res2 = _python("import e3bench\nfrom e3bench.core.quiet import captured\nimport transformers.quantizers\n"
                   "print(captured('torchao'))")  # fmt: skip
    assert "Failed to load" not in res2.stderr and "Failed to load" in res2.stdout


@pytest.mark.slow
def test_train_prints_no_torchao_lines(tmp_path):
    pytest.importorskip("torchao")
    res = run_cli(
        "train", "--suite", str(ROOT / "configs/train/baseline.toml"), "--max-steps", "2",
        "--set", "model.layers=1", "--meter", "estimate", "-o", str(tmp_path), timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    out = res.stdout + res.stderr
    assert "Failed to load" not in out and "register_constant" not in out
    assert "baseline" in res.stdout


def test_installed_versions_are_inside_the_declared_bounds():
    """Every dependency with an upper bound in pyproject.toml is installed inside it here, so the
    suite tests the range it declares (a bound that nothing tests would be a guess)."""
    import re
    from importlib import metadata

    from packaging.requirements import Requirement

    tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [*meta["dependencies"], *(r for extra in meta["optional-dependencies"].values() for r in extra)]
    bounded = [Requirement(r) for r in reqs if "<" in r and not re.match(r"e3bench\b", r)]
    assert {r.name for r in bounded} >= {"transformers", "torchao", "pydantic", "typer"}
    checked = 0
    for req in bounded:
        if req.marker is not None and not req.marker.evaluate():
            continue
        try:
            version = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            continue
        assert req.specifier.contains(version, prereleases=True), f"{req.name} {version} outside {req.specifier}"
        checked += 1
    assert checked >= 4
