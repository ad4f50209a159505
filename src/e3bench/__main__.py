"""``python -m e3bench``: the command-line interface."""

from e3bench.cli.app import main

main()
