"""The measured loops of a speed run: generation (decoders, encoder-decoders) and a single
forward pass (encoder-only), each at one batch size inside one metered window.

Stopping rule: after ``warmup_iters`` untimed iterations (outside any meter window), measure
until at least ``min_iters`` iterations AND at least ``min_seconds``, capped by
``max_seconds`` once two iterations exist: a batch size the cap cut short says so in its result
(``cut_by_max_seconds``) and in the record's warnings. The clock is read here, never by the backend:
TTFT is read inside the backend's per-token callback (:class:`~e3bench.core.timing.TokenClock`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from e3bench.bench.prompts import PromptSet
from e3bench.energy.window import MeteredWindow
from e3bench.core.api import Backend, GenParams
from e3bench.core.progress import Reporter, Stage
from e3bench.core.timing import TokenClock, clock, summarize
from e3bench.results.schema import BatchResult, ForwardResult, RawSamples


@dataclass(frozen=True)
class StoppingRule:
    """How long to measure one batch size (iterations, seconds)."""

    warmup_iters: int = 1
    min_iters: int = 5
    min_seconds: float = 5.0
    max_seconds: float = 120.0

    def warmup(self, step: Callable[[int], None], after: Callable[[], None] = lambda: None) -> None:
        """Run ``warmup_iters`` steps with negative indices (-1, -2, ...): not recorded;
        ``after()`` follows each (progress)."""
        for i in range(self.warmup_iters):
            step(-1 - i)
            after()

    def measure(self, step: Callable[[int], None],
                after: Callable[[int, float], None] = lambda n, s: None) -> tuple[int, float, str | None]:  # fmt: skip
        """Run steps 0, 1, ... until the rule is met; return (iterations, seconds, cut) where
        ``cut`` is None when ``min_iters`` and ``min_seconds`` were both reached, else the
        one-line account of how the ``max_seconds`` cap cut the measurement short.
        ``after(iterations, seconds)`` follows each step that does not end the measurement
        (progress; outside the step's own timing)."""
        n, t0 = 0, clock()
        while True:
            step(n)
            n += 1
            elapsed = clock() - t0
            if n >= self.min_iters and elapsed >= self.min_seconds:
                return n, clock() - t0, None
            if elapsed >= self.max_seconds and n >= 2:
                return n, clock() - t0, self.cut_note(n, elapsed)
            after(n, elapsed)

    def outlook(self, n: int, elapsed_s: float) -> tuple[int, float]:
        """(iterations the rule will have run when it stops, seconds left), projected from ``n``
        iterations in ``elapsed_s``: it stops at the first iteration end with both ``min_iters``
        and ``min_seconds`` reached, or past ``max_seconds`` with two iterations."""
        if n <= 0 or elapsed_s <= 0:
            return self.min_iters, max(0.0, self.min_seconds - elapsed_s)
        per = elapsed_s / n
        end_s = min(max(self.min_seconds, self.min_iters * per), max(self.max_seconds, 2 * per))
        total = max(n, math.ceil(end_s / per - 1e-9))
        return total, max(0.0, total * per - elapsed_s)

    def cut_note(self, n: int, elapsed_s: float) -> str:
        """How the cap cut a measurement of ``n`` iterations over ``elapsed_s`` seconds."""
        short = []
        if n < self.min_iters:
            short.append(f"{n} of --min-iters {self.min_iters} iterations")
        if elapsed_s < self.min_seconds:
            short.append(f"{elapsed_s:.1f} s of --min-seconds {self.min_seconds:g} s")
        return (
            f"cut by the --max-seconds cap ({self.max_seconds:g} s): measured {' and '.join(short)}; "
            "statistics rest on fewer samples than asked (raise --max-seconds, or lower --min-iters)"
        )


def _measured(window: MeteredWindow, name: str, step: Callable[[int], None], rule: StoppingRule,
              progress: Reporter | None, label: str, warmup: Callable[[Stage], Callable[[], None]] | None = None):  # fmt: skip
    """Warm up (untimed, outside the window), then measure ``step`` by ``rule`` in the metered
    window ``name``; each shown as a stage of ``progress`` (iterations done of those the rule
    will run, projected from the mean iteration so far, and the ETA to its stop; before the
    first timed iteration ends, projected from the warm-up's pace). ``warmup``
    (given the warm-up's stage) counts the warm-up finer than by iterations (generation: by
    tokens, which nothing times) and returns what to call after each iteration.

    Returns ``(metered, warmup_s)``: the window's result and the wall seconds of the warm-up
    iterations (each ``step`` synchronizes at both ends; None without a warm-up), kept apart
    from every timed sample: a backend's one-off work for new shapes (compilation) lands here."""
    progress = progress or Reporter()
    pace = None  # seconds per warm-up iteration: the measured stage's ETA until its first iteration ends
    warmup_s = None
    if rule.warmup_iters > 0:
        unit = "iterations" if warmup is None else "tokens"
        with progress.stage(f"warm-up ({label})", total=rule.warmup_iters, unit=unit) as st:
            t0 = clock()
            rule.warmup(step, after=st.advance if warmup is None else warmup(st))
            warmup_s = clock() - t0
            pace = st.elapsed_s() / rule.warmup_iters
    with progress.stage(label, total=rule.min_iters, unit="iterations") as st:
        if pace:
            total, eta = rule.outlook(1, pace)
            st.update(total=total, eta_s=eta + pace)

        def after(n: int, elapsed_s: float) -> None:
            total, eta = rule.outlook(n, elapsed_s)
            st.update(completed=n, total=total, eta_s=eta)

        metered = window.run(name, lambda: rule.measure(step, after=after))
        st.update(completed=metered.result[0], total=metered.result[0], eta_s=0)
    return metered, warmup_s


def prime(backend: Backend, ps: PromptSet, *, encoder_only: bool, max_new_tokens: int, seed: int) -> float:
    """One untimed, unmetered request (batch 1): lazily mapped weights become resident and the
    first request's one-off allocations happen, so that an idle baseline metered afterwards sees
    the model as the measured iterations will (safetensors are memory-mapped: after ``load``
    most weights are not yet in RSS, and on a GPU the first call sets up its workspaces).
    Returns its wall seconds (synchronized at both ends; a compiling backend compiles here)."""
    ids = ps.batch(1, offset=0)
    backend.synchronize()
    t0 = clock()
    if encoder_only:
        backend.forward(ids)
    else:
        backend.generate(ids, GenParams(max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, ignore_eos=True, seed=seed))
    backend.synchronize()
    return clock() - t0


def generation(
    backend: Backend,
    window: MeteredWindow,
    ps: PromptSet,
    batch: int,
    *,
    max_new_tokens: int,
    seed: int,
    rule: StoppingRule,
    warnings: list[str],
    progress: Reporter | None = None,
) -> BatchResult:
    """Fixed-length generation (``min_new_tokens = max_new_tokens``, EOS ignored) at ``batch``.

    TTFT = request handed over → first token callback; TPOT = (E2E − TTFT) / (n_out − 1);
    ITL = gaps between token callbacks; energy covers exactly the measured iterations and is
    split into prefill/decode by the (start, first token, end) interval of each iteration.
    A backend that never calls ``on_token`` gets no TTFT/TPOT/ITL and a warning.
    """
    params = GenParams(max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, ignore_eos=True, seed=seed)
    tc = TokenClock()
    raw = RawSamples()
    intervals: list[tuple[float, float, float]] = []
    in_tokens: list[int] = []

    warm: list[Stage] = []  # the warm-up's stage while it runs: counted by tokens

    def warm_token(n: int) -> None:
        tc(n)
        warm[0].update(completed=done_tokens[0] + n)

    done_tokens = [0]

    def warmup(st: Stage) -> Callable[[], None]:
        warm.append(st)
        st.update(total=rule.warmup_iters * max_new_tokens)

        def after() -> None:
            done_tokens[0] += max_new_tokens
            st.update(completed=done_tokens[0])

        return after

    def step(i: int) -> None:
        batch_ids = ps.batch(batch, offset=max(i, 0) * batch)
        backend.synchronize()
        tc.start()
        gens = backend.generate(batch_ids, params, on_token=warm_token if i < 0 and warm else tc)
        backend.synchronize()
        t_end = clock()
        if i < 0:
            return  # warm-up
        n_out = min(len(g.token_ids) for g in gens) if gens else 0
        raw.e2e_ms.append((t_end - tc.t_start) * 1e3)
        raw.output_tokens.append(n_out)
        if tc.stamps:
            raw.ttft_ms.append(tc.ttft_s * 1e3)
            raw.itl_ms.append([g * 1e3 for g in tc.itl_s()])
            intervals.append((tc.t_start, tc.stamps[0], t_end))
        in_tokens.append(sum(len(x) for x in batch_ids))

    metered, warmup_s = _measured(window, f"generate-bs{batch}", step, rule, progress,
                        f"generation, batch {batch}: {max_new_tokens} tokens per request", warmup)
    n, measured_s, cut = metered.result
    ttft_s = [t / 1e3 for t in raw.ttft_ms]
    e2e_s = [t / 1e3 for t in raw.e2e_ms]
    if len(ttft_s) != len(e2e_s):
        ttft_s = []
        warnings.append(f"bs{batch}: backend gave no per-token callbacks; TTFT/TPOT/ITL unavailable")
    tpot = [(e - t) / (o - 1) for e, t, o in zip(e2e_s, ttft_s, raw.output_tokens, strict=False) if o > 1]
    prefill = [n_in / t for n_in, t in zip(in_tokens, ttft_s, strict=False) if t > 0]
    decode = [
        batch * (o - 1) / (e - t)
        for e, t, o in zip(e2e_s, ttft_s, raw.output_tokens, strict=False)
        if o > 1 and e > t
    ]
    total_out = batch * sum(raw.output_tokens)
    total_in = sum(in_tokens)
    energy, cross = window.summaries(
        metered, input_tokens=total_in, output_tokens=total_out, requests=n * batch, intervals=intervals
    )
    return BatchResult(
        batch_size=batch,
        iterations=n,
        measured_s=measured_s,
        min_iters_asked=rule.min_iters,
        cut_by_max_seconds=cut,
        warmup_s=warmup_s,
        input_tokens_per_request_mean=total_in / max(1, n * batch),
        output_tokens_per_request=sum(raw.output_tokens) / max(1, n),
        e2e_ms=summarize(raw.e2e_ms),
        ttft_ms=summarize(raw.ttft_ms),
        tpot_ms=summarize([x * 1e3 for x in tpot]),
        itl_ms=summarize([g for it in raw.itl_ms for g in it]),
        prefill_tokens_per_s=summarize(prefill),
        decode_tokens_per_s=summarize(decode),
        throughput_tokens_per_s=total_out / sum(e2e_s),
        requests_per_s=n * batch / sum(e2e_s),
        raw=raw,
        energy=energy,
        energy_cross_check=cross,
    )


def forward(backend: Backend, window: MeteredWindow, ps: PromptSet, batch: int, *, rule: StoppingRule,
            progress: Reporter | None = None) -> ForwardResult:  # fmt: skip
    """Latency of one forward pass over ``batch`` prompts (encoder-only models), and its
    energy per input token."""
    lat: list[float] = []
    in_tokens: list[int] = []

    def step(i: int) -> None:
        ids = ps.batch(batch, offset=max(i, 0) * batch)
        backend.synchronize()
        t0 = clock()
        backend.forward(ids)
        backend.synchronize()
        if i >= 0:
            lat.append((clock() - t0) * 1e3)
            in_tokens.append(sum(len(x) for x in ids))

    metered, warmup_s = _measured(window, f"forward-bs{batch}", step, rule, progress, f"forward latency, batch {batch}")
    n, measured_s, cut = metered.result
    energy, cross = window.summaries(metered, input_tokens=sum(in_tokens), output_tokens=0, requests=n * batch)
    return ForwardResult(
        batch_size=batch,
        iterations=n,
        measured_s=measured_s,
        min_iters_asked=rule.min_iters,
        cut_by_max_seconds=cut,
        warmup_s=warmup_s,
        input_tokens_per_request_mean=sum(in_tokens) / max(1, n * batch),
        latency_ms=summarize(lat),
        tokens_per_s=sum(in_tokens) / (sum(lat) / 1e3),
        raw_latency_ms=lat,
        energy=energy,
        energy_cross_check=cross,
    )
