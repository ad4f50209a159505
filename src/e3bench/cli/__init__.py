"""Command line: one module per command group, wired in :mod:`e3bench.cli.app`."""
