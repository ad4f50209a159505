"""Build the test suite's tiny random-weights models (Llama, T5, BERT) into a folder, for runs that
need a local encoder-decoder without the hub (configs/sweeps/architectures-cpu.yaml):

    python scripts/tiny_models.py results/fixtures     # -> results/fixtures/tiny-t5, tiny-llama, tiny-bert

Each folder holds ``e3bench-fixture.json``, so the architecture comparison labels its numbers as a
fixture's. The builder is ``tests/fakes/testing.build_tiny_models`` (the suite's own fixtures);
rebuilding an existing, current folder does nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main(argv: list[str]) -> int:
    """Build the tiny models into the one folder named by ``argv``; 2 on a wrong command line."""
    if len(argv) != 1:
        print("usage: python scripts/tiny_models.py FOLDER", file=sys.stderr)
        return 2
    from fakes.testing import build_tiny_models

    for kind, path in build_tiny_models(Path(argv[0])).items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
