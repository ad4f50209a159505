"""Backends: ways to run a model (see :class:`e3bench.core.api.Backend` and :mod:`.base`)."""
