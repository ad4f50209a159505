"""Terminal summary of one result record (reads the record only; measures nothing).

Text from the record (model names, paths, task names, errors, warnings) is printed literally:
rich would read ``[...]`` in it as markup (a model path holding ``[/]`` crashed the summary).
"""

from __future__ import annotations

from e3bench.core.fmt import num
from e3bench.energy.accounting import EnergySummary
from e3bench.report.tables import MISSING
from e3bench.results.schema import ResultRecord


def _f(x: float | None, spec: str = ".1f") -> str:
    return num(x, spec, none=MISSING)


def _ci(stats) -> str:
    if stats is None:
        return "-"
    if stats.ci95_low is None or stats.ci95_high is None:
        return f"{stats.mean:.1f}"
    return f"{stats.mean:.1f} ± {(stats.ci95_high - stats.ci95_low) / 2:.1f}"


def _energy_cells(e: EnergySummary | None) -> list[str]:
    if e is None or e.method == "missing":
        reason = (e.error if e is not None else None) or "no meter"
        return ["missing", "-", "-", "-", "-", reason[:30]]
    return [
        _f(e.gross_energy_j, ".2f"),
        _f(e.net_energy_j, ".2f"),
        _f(e.ept_total_j_per_token, ".4f"),
        _f(e.tokens_per_j, ".2f"),
        _f(e.co2e_g, ".4f"),
        f"{e.method}: {e.sensor}",
    ]


def print_summary(rec: ResultRecord, console) -> None:
    """Print ``rec`` to a rich ``console``: model line, speed, energy and effectiveness tables,
    warnings (a failed run: one line with its error)."""
    from rich.markup import escape as esc
    from rich.table import Table

    m = rec.model
    eff = rec.efficiency
    if m is None or eff is None:
        console.print(f"run {rec.run_id}: {rec.status} {esc(rec.error or '')}", highlight=False)
        return
    console.print(
        f"[bold]{esc(m.name)}[/bold] · {esc(m.architecture)} · {m.parameters / 1e6:.1f}M params · "
        f"{esc(str(rec.config['backend']))} {m.dtype} on {esc(m.device)} · load {eff.load_time_s:.1f} s · "
        f"peak RSS {eff.peak_rss_bytes / 2**20:.0f} MiB"
        + (f" · peak GPU {eff.peak_device_memory_bytes / 2**20:.0f} MiB" if eff.peak_device_memory_bytes else ""),
        highlight=False,
    )
    console.print(f"prompts: {esc(eff.prompt_source)}", highlight=False)
    if eff.generation:
        t = Table(title="speed (mean ± 95% CI; p50/p99 in the record)")
        for col in ("batch", "iters", "TTFT ms", "TPOT ms", "ITL p99 ms", "prefill tok/s",
                    "decode tok/s", "throughput tok/s", "roofline %"):  # fmt: skip
            t.add_column(col, justify="right")
        for g in eff.generation:
            t.add_row(
                str(g.batch_size), str(g.iterations), _ci(g.ttft_ms), _ci(g.tpot_ms),
                _f(g.itl_ms.p99 if g.itl_ms else None), _ci(g.prefill_tokens_per_s),
                _ci(g.decode_tokens_per_s), _f(g.throughput_tokens_per_s),
                _f(g.roofline_fraction * 100 if g.roofline_fraction is not None else None),
            )  # fmt: skip
        console.print(t)
    for f in eff.forward:
        console.print(
            f"forward batch {f.batch_size}: {_ci(f.latency_ms)} ms, {f.tokens_per_s:.0f} input tok/s "
            f"({f.iterations} iters)",
            highlight=False,
        )
    if eff.roofline:
        r = eff.roofline
        console.print(
            f"roofline: bandwidth {r.bandwidth_bytes_per_s / 1e9:.1f} GB/s ({esc(r.bandwidth_method)}); "
            f"weights {r.weights_bytes / 2**20:.0f} MiB per decode step",
            highlight=False,
        )
    rows = []
    for g in eff.generation:
        rows.append((f"gen bs{g.batch_size}", g.energy))
        if g.energy_cross_check:
            rows.append(("  cross-check", g.energy_cross_check))
    rows += [(f"fwd bs{f.batch_size}", f.energy) for f in eff.forward]
    rows += [(f"task {esc(t.task)}", t.energy) for t in rec.effectiveness]
    if any(e for _, e in rows):
        t = Table(title="energy (net = idle-subtracted)")
        for col in ("window", "gross J", "net J", "EPT_total J/tok", "tok/J", "CO2e g", "method"):
            t.add_column(col, justify="right" if col not in ("window", "method") else "left")
        for name, e in rows:
            t.add_row(name, *(esc(c) for c in _energy_cells(e)))
        console.print(t)
        if rec.energy:
            console.print(f"meter: {esc(rec.energy.meter_choice_reason)}", highlight=False)
    if rec.effectiveness:
        t = Table(title="effectiveness (± standard error)")
        for col in ("task", "metric", "value", "items", "examples/s"):
            t.add_column(col)
        for tr in rec.effectiveness:
            for k, v in tr.metrics.items():
                se = tr.stderr.get(k)
                t.add_row(esc(tr.task), esc(k), f"{v:.4f}" + (f" ± {se:.4f}" if se is not None else ""),
                          str(tr.n_items), f"{tr.examples_per_s:.2f}")  # fmt: skip
        console.print(t)
    for w in rec.warnings:
        console.print(f"[yellow]warning:[/yellow] {esc(w)}", highlight=False)
