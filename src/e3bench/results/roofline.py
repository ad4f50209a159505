"""The roofline figures stored in a record (computed by :mod:`e3bench.bench.roofline`)."""

from __future__ import annotations

from pydantic import BaseModel


class Roofline(BaseModel):
    """Decode throughput against the memory-bandwidth bound ``batch × bandwidth / weights``.

    ``weights_bytes`` is the bytes one decode step reads, counted by ``weights_rule`` (the one
    rule of ``e3bench.core.decodebytes``: each weight once, an embedding lookup as one row, tied
    embeddings once, KV cache not included; records before it: the backend's own count, which
    for ONNX counted a tied table twice). A measured fraction above 1 is impossible: it is kept
    in ``over_bound`` (not in ``fraction_of_bound``) and ``measurement_error`` says why.
    """

    bandwidth_bytes_per_s: float
    bandwidth_method: str
    #: where this run's bandwidth came from (spec / measured now / cache / re-measured: why) and,
    #: for a CPU measurement, when and with how much other load (% of all CPUs); the run's probe
    bandwidth_source: str | None = None
    bandwidth_measured_utc: str | None = None
    bandwidth_other_cpu_busy_pct: float | None = None
    bandwidth_probe_gb_s: float | None = None
    weights_bytes: int
    weights_rule: str | None = None
    #: per batch size: bound on decode tokens/s and measured fraction of it (only fractions <= 1)
    bound_decode_tokens_per_s: dict[int, float]
    fraction_of_bound: dict[int, float]
    #: per batch size: measured fractions above 1 (a measurement error, not a fraction)
    over_bound: dict[int, float] = {}
    measurement_error: str | None = None
