"""The code layout's rules that are not import rules (those are lint-imports' contracts in
pyproject.toml, run by scripts/test.sh): small modules, test doubles outside the package."""

from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "e3bench"
MAX_LINES = 450


def test_every_module_is_small():
    big = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines (split them by concept): {big}"


def test_the_package_ships_no_test_doubles():
    names = {p.stem for p in SRC.rglob("*.py")}
    assert not names & {"testing", "vllm_fake", "lmeval_local", "fakes"}
    text = "\n".join(p.read_text() for p in SRC.rglob("*.py"))
    assert "FakeBackend" not in text and "import fakes" not in text
