"""The roofline figures stored in a record (computed by :mod:`e3bench.bench.roofline`)."""

from __future__ import annotations

from pydantic import BaseModel


class Roofline(BaseModel):
    """Decode throughput against the memory-bandwidth bound ``batch × bandwidth / weights``."""

    bandwidth_bytes_per_s: float
    bandwidth_method: str
    weights_bytes: int
    #: per batch size: bound on decode tokens/s and measured fraction of it
    bound_decode_tokens_per_s: dict[int, float]
    fraction_of_bound: dict[int, float]
