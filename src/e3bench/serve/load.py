"""Load shapes: a closed loop at a concurrency level, an open loop at a request rate.

Closed loop (``--concurrency c``): ``c`` workers each send a request, wait for its end, send the
next; a level stops starting requests once it has at least ``min_requests`` *and* has run
``min_seconds``, then waits for those in flight. Open loop (``--rate r``): requests start at
scheduled times whatever the server's state, Poisson (exponential gaps of mean 1/r, drawn from
``random.Random(seed)``) or constant (every 1/r s); ``max(min_requests, ⌈r·min_seconds⌉)``
requests. The level's duration is first start → last end (seconds, ``core.timing.clock``).
Prompts are used in order, wrapping around.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from e3bench.core.errors import E3Error
from e3bench.core.timing import clock
from e3bench.serve.client import RequestResult

ARRIVALS = ("poisson", "constant")


@dataclass(frozen=True)
class Level:
    """One load level: ``kind`` ``concurrency`` (closed loop) or ``rate`` (open loop, requests/s)."""

    kind: str
    value: float

    @property
    def label(self) -> str:
        """``c=4`` or ``rate=0.5/s``."""
        return f"c={self.value:g}" if self.kind == "concurrency" else f"rate={self.value:g}/s"


def schedule(rate: float, n: int, arrival: str, seed: int) -> list[float]:
    """Start offsets (seconds from the level's start) of ``n`` requests at ``rate`` per second:
    Poisson (exponential gaps, ``random.Random(seed)``, first at 0) or constant (k / rate)."""
    if arrival not in ARRIVALS:
        raise E3Error(f"unknown arrival process '{arrival}'", f"use --arrival {' or '.join(ARRIVALS)}")
    if not (rate > 0 and math.isfinite(rate)):
        raise E3Error(f"request rate {rate!r} is not a positive number", "pass rates such as --rate 0.5,1,2")
    if arrival == "constant":
        return [k / rate for k in range(n)]
    rng = random.Random(seed)
    out, t = [], 0.0
    for _ in range(n):
        out.append(t)
        t += rng.expovariate(rate)
    return out


Send = Callable[[str], "asyncio.Future[RequestResult]"]


async def closed_loop(send, prompts: Sequence[str], concurrency: int, *, min_requests: int,
                      min_seconds: float, start_index: int = 0) -> tuple[list[RequestResult], float]:  # fmt: skip
    """Run ``concurrency`` workers (see module docstring); ``(results in start order, duration_s)``.
    ``send(prompt)`` is a coroutine function returning a :class:`RequestResult`."""
    results: list[tuple[int, RequestResult]] = []
    t0 = clock()
    next_i = 0
    need = max(min_requests, concurrency)  # every worker sends: a level 'c=8' of 3 requests never ran 8 at once

    async def worker() -> None:
        nonlocal next_i
        while next_i < need or clock() - t0 < min_seconds:
            i = next_i
            next_i += 1
            res = await send(prompts[(start_index + i) % len(prompts)])
            results.append((i, res))
            if res.error_kind in ("connect", "not_streaming"):
                return  # the server is gone or cannot be measured: stop this level

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return [r for _, r in sorted(results, key=lambda x: x[0])], _span(results, t0)


async def open_loop(send, prompts: Sequence[str], offsets: Sequence[float], *,
                    start_index: int = 0) -> tuple[list[RequestResult], float]:  # fmt: skip
    """Start request k at ``offsets[k]`` seconds after the level's start, whatever is in
    flight; ``(results in start order, duration_s)``."""
    t0 = clock()

    async def at(k: int, off: float) -> RequestResult:
        await asyncio.sleep(max(t0 + off - clock(), 0.0))
        return await send(prompts[(start_index + k) % len(prompts)])

    out = await asyncio.gather(*(at(k, off) for k, off in enumerate(offsets)))
    return list(out), _span(list(enumerate(out)), t0)


def _span(results: list[tuple[int, RequestResult]], t0: float) -> float:
    """First start → last end, seconds (0 for no requests)."""
    if not results:
        return 0.0
    ends = [r.end_s for _, r in results if math.isfinite(r.end_s)]
    return (max(ends) if ends else clock()) - min(min(r.start_s for _, r in results), t0)


#: the most requests one level may be asked to send (each is kept in the record)
MAX_LEVEL_REQUESTS = 100_000


def level_size_problem(kind: str, value: float, min_requests: int, min_seconds: float) -> str | None:
    """Why a level would ask for more than :data:`MAX_LEVEL_REQUESTS` requests up front (a
    rate × seconds, a concurrency, ``--min-requests``), or None."""
    n = requests_for_rate(value, min_requests, min_seconds) if kind == "rate" else max(min_requests, int(value))
    if n <= MAX_LEVEL_REQUESTS:
        return None
    what = (f"--rate {value:g}/s over --min-seconds {min_seconds:g}" if kind == "rate"
            else f"--concurrency {value:g}" if value >= min_requests else f"--min-requests {min_requests}")  # fmt: skip
    return f"{what} asks one level for {n:.3g} requests (at most {MAX_LEVEL_REQUESTS})"


def requests_for_rate(rate: float, min_requests: int, min_seconds: float) -> int:
    """How many requests an open-loop level sends: ``max(min_requests, ⌈rate·min_seconds⌉)``."""
    return max(min_requests, math.ceil(rate * min_seconds))
