"""A level's numbers from its requests: latency statistics, throughput, SLOs and goodput.

Statistics are :func:`e3bench.core.timing.summarize` (mean, p50/p90/p99, the 95 % CI of the
mean); the goodput share's interval is :func:`e3bench.report.stats.proportion_ci` (Wilson):
the one place for each.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence

from e3bench.core.errors import E3Error
from e3bench.core.timing import summarize
from e3bench.results.schema import ServeLevel, ServeRequest
from e3bench.serve.client import RequestResult
from e3bench.serve.load import Level

#: SLO names (``--slo``) and the request figure each bounds (milliseconds)
SLO_KEYS = ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms")
_SLO_ITEM = re.compile(r"^\s*([A-Za-z0-9_]+)\s*=\s*([^,=]+?)\s*$")


def parse_slo(text: str | None) -> dict[str, float]:
    """``ttft_ms=500,tpot_ms=50`` → ``{"ttft_ms": 500.0, "tpot_ms": 50.0}``. :class:`E3Error`
    naming the bad part for an unknown name, a value that is not a positive number, a repeat."""
    if text is None or not text.strip():
        return {}
    out: dict[str, float] = {}
    fix = f"write --slo as name=milliseconds pairs, e.g. ttft_ms=500,tpot_ms=50 (names: {', '.join(SLO_KEYS)})"
    for part in text.split(","):
        m = _SLO_ITEM.match(part)
        if not m:
            raise E3Error(f"--slo {text!r}: '{part.strip()}' is not name=value", fix)
        key, raw = m.groups()
        if key not in SLO_KEYS:
            hint = f" (did you mean '{key.lower()}'?)" if key.lower() in SLO_KEYS else ""
            raise E3Error(f"--slo {text!r}: unknown SLO '{key}'{hint}", fix)
        try:
            val = float(raw)
        except ValueError:
            raise E3Error(f"--slo {text!r}: {key}={raw} is not a number of milliseconds", fix) from None
        if not (val > 0 and math.isfinite(val)):
            raise E3Error(f"--slo {text!r}: {key}={raw} must be a positive number of milliseconds", fix)
        if key in out:
            raise E3Error(f"--slo {text!r}: {key} is given twice", fix)
        out[key] = val
    return out


def meets(r: RequestResult, slo: dict[str, float]) -> bool:
    """True when ``r`` completed and every SLO holds for it (ITL: its largest gap)."""
    if not r.ok:
        return False
    figures = {"ttft_ms": r.ttft_ms, "tpot_ms": r.tpot_ms, "e2e_ms": r.e2e_ms,
               "itl_ms": max(r.itl_ms) if r.itl_ms else None}  # fmt: skip
    return all(figures[k] is None or figures[k] <= v for k, v in slo.items())


def tokens_check(results: Sequence[RequestResult]) -> str | None:
    """How the server's usage counts compare with the tokenizer's over the streamed text, or
    None where one of them is missing."""
    pairs = [(r.usage_output_tokens, r.counted_output_tokens) for r in results
             if r.ok and r.usage_output_tokens is not None and r.counted_output_tokens is not None]  # fmt: skip
    if not pairs:
        return None
    su, st = sum(a for a, _ in pairs), sum(b for _, b in pairs)
    same = sum(a == b for a, b in pairs)
    return (f"server usage {su} vs tokenizer {st} output tokens over {len(pairs)} requests "
            f"({same} equal; the tokenizer re-encodes the streamed text)")  # fmt: skip


def summarize_level(level: Level, results: Sequence[RequestResult], duration_s: float, *,
                    slo: dict[str, float], arrival: str | None = None,
                    prompt_tokens: Callable[[int], int] | None = None) -> ServeLevel:  # fmt: skip
    """The :class:`ServeLevel` of ``results`` (in start order) over ``duration_s`` seconds.
    ``prompt_tokens(i)``: the tokenizer's prompt length of request i, where the server gave none."""
    from e3bench.report.stats import proportion_ci

    ok = [r for r in results if r.ok]
    errors = Counter(r.error_kind or "no_tokens" for r in results if not r.ok)
    t0 = min((r.start_s for r in results), default=0.0)
    out_tokens = sum(r.output_tokens for r in ok)
    in_tokens = sum(r.usage_prompt_tokens if r.usage_prompt_tokens is not None
                    else (prompt_tokens(i) if prompt_tokens else 0) for i, r in enumerate(results) if r.ok)  # fmt: skip
    sources = sorted({r.tokens_source for r in ok})
    dur = max(duration_s, 1e-9)
    good = sum(meets(r, slo) for r in results)
    share = good / len(results) if results else None
    ci = proportion_ci(share, len(results)) if share is not None else None
    offered = level.value if level.kind == "rate" else None
    return ServeLevel(
        load=level.kind, value=level.value, label=level.label, arrival=arrival if level.kind == "rate" else None,
        requests_sent=len(results), requests_ok=len(ok), errors_by_kind=dict(errors), duration_s=duration_s,
        offered_rate_per_s=offered, achieved_rate_per_s=len(ok) / dur, output_tokens_per_s=out_tokens / dur,
        input_tokens=int(in_tokens), output_tokens=out_tokens, tokens_source=" + ".join(sources),
        tokens_check=tokens_check(results),
        ttft_ms=summarize([r.ttft_ms for r in ok if r.ttft_ms is not None]),
        tpot_ms=summarize([r.tpot_ms for r in ok if r.tpot_ms is not None]),
        itl_ms=summarize([g for r in ok for g in r.itl_ms]),
        e2e_ms=summarize([r.e2e_ms for r in ok]),
        goodput_share=share, goodput_ci95=(ci.low, ci.high) if ci is not None else None,
        goodput_per_s=good / dur if results else None,
        requests=[ServeRequest(start_s=r.start_s - t0, ttft_ms=r.ttft_ms, e2e_ms=r.e2e_ms if r.ok else None,
                               itl_ms=r.itl_ms, output_tokens=r.output_tokens if r.ok else 0,
                               error_kind=None if r.ok else (r.error_kind or "no_tokens")) for r in results],
    )  # fmt: skip


def first_error(results: Sequence[RequestResult]) -> RequestResult | None:
    """The first failed request, or None."""
    return next((r for r in results if not r.ok), None)
