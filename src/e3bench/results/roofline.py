"""The roofline figures stored in a record (computed by :mod:`e3bench.bench.roofline`)."""

from __future__ import annotations

from pydantic import BaseModel


class Roofline(BaseModel):
    """Decode throughput against the memory-bandwidth bound ``batch × bandwidth / weights``."""

    bandwidth_bytes_per_s: float
    bandwidth_method: str
    #: where this run's bandwidth came from (spec / measured now / cache / re-measured: why) and,
    #: for a CPU measurement, when and with how much other load (% of all CPUs); the run's probe
    bandwidth_source: str | None = None
    bandwidth_measured_utc: str | None = None
    bandwidth_other_cpu_busy_pct: float | None = None
    bandwidth_probe_gb_s: float | None = None
    weights_bytes: int
    #: per batch size: bound on decode tokens/s and measured fraction of it
    bound_decode_tokens_per_s: dict[int, float]
    fraction_of_bound: dict[int, float]
