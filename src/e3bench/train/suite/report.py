"""REPORT.md (and loss_curves.png when matplotlib is installed) for a training suite.

The report only reads the :class:`~e3bench.train.records.SuiteRecord`; ``rebuild(dir)`` writes it
again from ``suite.json`` at any time. Each configuration is compared with the baseline at equal
tokens, and each machine-readable claim of its TOML (``[claims]``) is set against what was
measured here, with a verdict SUPPORTED / NOT SUPPORTED / INCONCLUSIVE
(:mod:`e3bench.train.shared.claims`), beside a memory breakdown and the gradient-norm band check.
"""

from __future__ import annotations

import io

from pathlib import Path
from typing import Any

from e3bench.core.fmt import num
from e3bench.core.fsutil import atomic_write_bytes, atomic_write_text
from e3bench.train.records import ConfigResult, SuiteRecord, basis_energy_j
from e3bench.train.suite.compare import interp


def _esc(s: object) -> str:
    """A markdown table cell: no pipes, no newlines."""
    return str(s).replace("|", "\\|").replace("\n", " ")


def _mib(b: float | None) -> str:
    return num(None if b is None else b / 2**20, ".1f")


def _kib(b: float | None) -> str:
    return num(None if b is None else b / 2**10, ",.0f")


def features(c: ConfigResult) -> list[str]:
    """The suite features a configuration uses, by its spec: optimizer (when not AdamW),
    ``adamw8bit`` under Muon, ``mtp``, ``grad_ckpt``, ``async_loader``, ``collider``, and
    ``galore2`` for Muon's GaLore 2 projection."""
    s = c.spec or {}
    out = []
    opt = (s.get("optim") or {}).get("name", c.optimizer)
    if opt and opt != "adamw":
        out.append(opt)
    if (s.get("optim") or {}).get("name") in ("muon", "muon8bit") and (s.get("optim") or {}).get("muon_aux") == "adamw8bit":
        out.append("adamw8bit")
    if (s.get("mtp") or {}).get("k", 0):
        out.append("mtp")
    if (s.get("train") or {}).get("grad_checkpointing"):
        out.append("grad_ckpt")
    if (s.get("data") or {}).get("num_workers", 0):
        out.append("async_loader")
    t = s.get("train") or {}
    if t.get("collider_threshold") is not None or t.get("collider_sparsity") is not None:
        out.append("collider")
    if (s.get("optim") or {}).get("galore2_projection"):
        out.append("galore2")
    return out


def render(record: SuiteRecord, *, plot_file: str | None = None) -> str:
    """REPORT.md's text for ``record``; ``plot_file`` (relative) is embedded when given."""
    base = next((c for c in record.configs if c.name == record.baseline), None)
    lines: list[str] = []
    add = lines.append
    add(f"# Training-efficiency suite {record.suite_id}")
    add("")
    m = record.manifest
    tok = record.tokenizer
    corpus = record.corpus
    add(f"- corpus: `{corpus.get('source')}` ({corpus.get('train_chars', 0):,} train / "
        f"{corpus.get('val_chars', 0):,} validation characters, contiguous held-out tail)")
    add(f"- tokenizer: {tok.get('kind')} trained locally, vocab {tok.get('vocab_size')}, "
        f"{tok.get('train_tokens', 0):,} train tokens ({tok.get('chars_per_token')} chars/token)")
    if base and base.spec:
        ms = base.spec.get("model", {})
        add(f"- model: Llama-style decoder from config, {base.parameters:,} parameters "
            f"(hidden {ms.get('hidden_size')}, {ms.get('layers')} layers, {ms.get('heads')} heads, "
            f"seq_len {ms.get('seq_len')}), random init with seed {base.spec.get('train', {}).get('seed')}")
    add(f"- device: {record.device}, {record.precision}; CPU {m.cpu_model} "
        f"({m.cpu_affinity_cores or m.cpu_cores_logical} cores, torch threads {m.torch_threads})"
        + (f"; GPU {m.gpus[0].name}" if m.gpus else ""))
    run = record.energy
    add(f"- energy: {run.meter_choice_reason if run else 'not recorded'}")
    idle = run.idle if run else None
    if idle and idle.power_w is not None:
        add(f"- idle baseline: {idle.power_w:.2f} W ({idle.method}, "
            f"{idle.sensor}); energy below is **net** of idle where the basis says so")
    add(f"- baseline: `{record.baseline}`; suite wall time {record.duration_s:.0f} s")
    for w in record.warnings:
        add(f"- ⚠ {w}")
    add("")
    add("## Comparison with the baseline")
    add("")
    add("| config | status | optimizer | steps | final val loss | best val loss | Δ val loss @ equal tokens "
        "| token efficiency | tokens/s (median step) | × base | opt. state KiB | × base | peak RSS Δ MiB | energy J "
        "| J/token | grad-norm p50 / max (spikes) |")
    add("|" + "---|" * 16)
    for c in record.configs:
        v = c.vs_baseline or {}
        e = c.train_energy
        ej = basis_energy_j(e)
        gn = c.grad_norm.stats if c.grad_norm else None
        spikes = len(c.grad_norm.spikes) if c.grad_norm else 0
        rss = None if c.memory is None else c.memory.peak_rss_bytes - c.memory.rss_start_bytes
        is_base = c is base
        add(
            f"| {c.name} | {c.status} | {c.optimizer or '–'} | {c.steps} | {num(c.final_val_loss, '.3f')} "
            f"| {num(c.best_val_loss, '.3f')} | {'(ref)' if is_base else num(v.get('delta_val_loss_at_equal_tokens'), '+.3f')} "
            f"| {'1.00' if is_base else num(v.get('token_efficiency'), '.2f')} | {num(c.tokens_per_s_median_step, ',.0f')} "
            f"| {'1.00' if is_base else num(v.get('tokens_per_s_median_step_ratio'), '.2f')} | {_kib(c.optimizer_state_bytes)} "
            f"| {'1.00' if is_base else num(v.get('optimizer_state_ratio'), '.2f')} | {_mib(rss)} "
            f"| {num(ej, ',.1f')} | {num(None if e is None else e.ept_total_j_per_token, '.2e')} "
            f"| {num(None if gn is None else gn.p50, '.2f')} / {num(None if gn is None else gn.max, '.2f')} ({spikes}) |"
        )
    add("")
    add("Δ val loss: this config's validation loss minus the baseline's at the same number of training tokens "
        "(negative = better). Token efficiency: baseline tokens ÷ tokens this config needed to reach the "
        "baseline's final validation loss (> 1 = more data-efficient; – = never reached). tokens/s: tokens per "
        "step ÷ median step time (robust to bursts of load from other processes; the mean over all steps is "
        "`tokens_per_s` in suite.json); training steps only, device synchronised every step. Optimizer state: bytes of every tensor "
        "in the optimizer state after the last step. Peak RSS Δ: peak resident memory during the config minus RSS "
        "at its start. Energy: training windows only, "
        + (f"{be.method} ({be.sensor}), basis {be.basis}." if base and (be := base.train_energy) else ".")
    )
    if any(c.memory and c.memory.peak_device_memory_bytes for c in record.configs):
        add("")
        add("| config | peak GPU memory MiB (max_memory_allocated) | reserved MiB |")
        add("|---|---|---|")
        for c in record.configs:
            if c.memory:
                add(f"| {c.name} | {_mib(c.memory.peak_device_memory_bytes)} | {_mib(c.memory.device_memory_reserved_bytes)} |")
    add("")
    lines.extend(claims_section(record))
    lines.extend(memory_section(record))
    add("## Validation loss at equal tokens")
    add("")
    if base and base.val_loss_curve:
        names = [c.name for c in record.configs if c.val_loss_curve]
        add("| tokens | " + " | ".join(names) + " |")
        add("|---|" + "---|" * len(names))
        for p in base.val_loss_curve:
            row = [f"{p.tokens:,}"]
            for c in record.configs:
                if c.val_loss_curve:
                    row.append(num(interp(c.val_loss_curve, p.tokens), '.3f'))
            add("| " + " | ".join(row) + " |")
    add("")
    if plot_file:
        add(f"![loss curves]({plot_file})")
        add("")
    add("## Configurations")
    add("")
    for c in record.configs:
        feats = ", ".join(features(c)) or "—"
        add(f"- **{c.name}** ({c.file or 'n/a'}; features: {feats}): {c.description or ''} {c.optimizer_detail}".rstrip())
        if c.reason:
            add(f"  - {c.status}: {c.reason}")
        for w in c.warnings:
            add(f"  - ⚠ {w}")
        if c.grad_norm and c.grad_norm.spikes:
            add("  - gradient-norm spikes (step, norm): " + ", ".join(f"({s}, {n:.2f})" for s, n in c.grad_norm.spikes[:10]))
    add("")
    add("Raw data: `suite.json` in this directory (loss curves, per-step timing summary, energy, memory).")
    return "\n".join(lines) + "\n"


def _claim_value(r: dict, key: str) -> str:
    v = r.get(key)
    if v is None:
        return "–"
    unit = r.get("unit")
    below = "< " if key == "measured" and r.get("bound") == "upper" else ""  # never reached: a bound
    if r.get("mode") == "ratio":
        return f"{below}{v:+.1f} %" if key == "measured" else f"±{v:.1f} %"
    fmt = ".3f" if unit == "nats" else ".1f"
    return (f"{v:{'+' if r.get('mode') == 'delta' else ''}{fmt}}" if key == "measured" else f"±{v:{fmt}}") + (
        f" {unit}" if unit not in ("count",) else "")  # fmt: skip


def claims_section(record: SuiteRecord) -> list[str]:
    """REPORT.md's claims table: one row per claim — claim, measured value ± uncertainty, seeds,
    verdict SUPPORTED / NOT SUPPORTED / INCONCLUSIVE and why (see :mod:`e3bench.train.shared.claims`)."""
    if not record.claims:
        return []
    out = ["## Claims", "",
           "| config | metric | claim | direction | measured | ± (95 %) | seeds | verdict | why |",
           "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in record.claims:
        out.append(f"| {r['config']} | {r['metric']} | {_esc(r['claim'])} | {r['direction']} | {_claim_value(r, 'measured')} "
                   f"| {_claim_value(r, 'uncertainty')} | {r.get('seeds', 0)} | **{r['verdict']}** | {_esc(r.get('why', ''))} |")  # fmt: skip
    n = {v: sum(r["verdict"] == v for r in record.claims) for v in ("SUPPORTED", "NOT SUPPORTED", "INCONCLUSIVE")}
    out += ["", (f"{n['SUPPORTED']} supported, {n['NOT SUPPORTED']} not supported, {n['INCONCLUSIVE']} inconclusive. "
                 f"Ratio metrics: % change against `{record.baseline}` (run of the same round), or against the "
                 f"configuration a claim names after `vs`; delta: difference; otherwise the configuration's own "
                 f"value; `<` before a value: an upper bound. Seeds run: {', '.join(map(str, record.seeds))}"
                 + ("" if len(record.seeds) > 1 else " (one seed: uncertainty is each metric's one-run noise; "
                    "`--seeds 3` measures it)") + ". Time and energy are compared only between runs whose load from "
                 "other processes differs by ≤ 0.5 cores (recorded below)."), ""]  # fmt: skip
    return out


def memory_section(record: SuiteRecord) -> list[str]:
    """Memory breakdown, gradient-norm band, Collider sparsity, backward time, GPU
    utilization and machine load per configuration (first round)."""
    rows = [c for c in record.configs if c.memory_breakdown]
    if not rows:
        return []
    out = ["## Memory breakdown, gradients, load", "",
           "| config | weights MiB | gradients MiB | optimizer state MiB | activations MiB | total MiB "
           "| grad norm in band (steps) | below / above | spikes | tokens filtered | backward ms (p50) "
           "| GPU util mean / p10 % | other-process load (cores) |",
           "|" + "---|" * 13]  # fmt: skip
    for c in rows:
        b = c.memory_breakdown or {}
        g = c.grad_norm_band or {}
        share = g.get("share_in_band")
        gu = c.gpu_utilization or {}
        col = c.collider or {}
        out.append(
            f"| {c.name} | {_mib(b.get('weights_bytes'))} | {_mib(b.get('gradients_bytes'))} "
            f"| {_mib(b.get('optimizer_state_bytes'))} | {_mib(b.get('activations_bytes'))} | {_mib(b.get('total_bytes'))} "
            f"| {num(None if share is None else 100 * share, '.0f')} % ({g.get('steps', 0)}) "
            f"| {g.get('below', '–')} / {g.get('above', '–')} | {g.get('spikes', '–')} "
            f"| {num(None if col.get('token_sparsity') is None else 100 * col['token_sparsity'], '.1f')}"
            f"{' %' if col.get('token_sparsity') is not None else ''} "
            f"| {num(None if c.backward_time_ms is None else c.backward_time_ms.p50, '.1f')} "
            f"| {num(gu.get('mean'), '.0f')} / {num(gu.get('p10'), '.0f')} "
            f"| {num((c.load or {}).get('other_cores'), '.2f')} |"
        )
    b0 = rows[0].memory_breakdown or {}
    band = (rows[0].grad_norm_band or {}).get("band", [0.5, 5.0])
    out += ["", f"Weights, gradients and optimizer state: bytes of the tensors. Activations: {b0.get('method', '')}. "
            f"Gradient-norm band {band[0]:g}–{band[1]:g} (train.grad_norm_band): global L2 norm before clipping, "
            "every step. Tokens filtered: Collider's achieved share (mean over steps). Backward: median backward-pass "
            "time per step, device synchronised around it. GPU utilization: NVML, CUDA only. Load: cores kept busy by "
            "other processes while the configuration trained.", ""]  # fmt: skip
    return out


def plot_curves(record: SuiteRecord, path: Path) -> bool:
    """Write the training and validation loss curves to ``path`` (PNG); False without
    matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for c in record.configs:
        if c.train_loss_curve:
            ax1.plot([p.tokens for p in c.train_loss_curve], [p.loss for p in c.train_loss_curve], label=c.name, lw=1)
        if c.val_loss_curve:
            ax2.plot([p.tokens for p in c.val_loss_curve], [p.loss for p in c.val_loss_curve], marker="o", ms=3,
                     label=c.name, lw=1.2)
    ax1.set_title("training loss (next-token, mean over 5 steps)")
    ax2.set_title("validation loss")
    for ax in (ax1, ax2):
        ax.set_xlabel("training tokens")
        ax.set_ylabel("cross-entropy (nats/token)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())  # a kill -9 never leaves half a PNG
    return True


def write_report(record: SuiteRecord, out_dir: Path, *, plot: bool = True) -> Path:
    """Write ``out_dir/REPORT.md`` (and ``loss_curves.png`` when ``plot`` and matplotlib is
    installed); return the report's path."""
    png = out_dir / "loss_curves.png"
    has_plot = plot_curves(record, png) if plot else False
    text = render(record, plot_file=png.name if has_plot else None)
    path = out_dir / "REPORT.md"
    atomic_write_text(path, text)
    return path


def rebuild(out_dir: str | Path, *, plot: bool = True) -> Path:
    """Write the report again from ``out_dir/suite.json``; return the report's path."""
    out_dir = Path(out_dir)
    record = SuiteRecord.model_validate_json((out_dir / "suite.json").read_text(encoding="utf-8"))
    return write_report(record, out_dir, plot=plot)


def summary_rows(record: SuiteRecord) -> list[dict[str, Any]]:
    """One compact row per configuration (console table, ``e3bench report``): status, final
    validation loss, Δ at equal tokens, tokens/s, optimizer state KiB, energy J, and its claims'
    verdicts (``"3 SUPPORTED, 1 INCONCLUSIVE"``)."""
    rows = []
    for c in record.configs:
        v = c.vs_baseline or {}
        rows.append({
            "config": c.name, "status": c.status, "final_val_loss": c.final_val_loss,
            "delta": v.get("delta_val_loss_at_equal_tokens"),
            "tokens_per_s": c.tokens_per_s_median_step or c.tokens_per_s,
            "opt_state_kib": None if c.optimizer_state_bytes is None else c.optimizer_state_bytes / 1024,
            "energy_j": basis_energy_j(c.train_energy),
            "claims": claim_summary(record, c.name),
        })  # fmt: skip
    return rows


def claim_summary(record: SuiteRecord, name: str) -> str:
    """The verdict counts of configuration ``name``'s claims (empty without claims)."""
    verdicts = [r["verdict"] for r in record.claims if r["config"] == name]
    return ", ".join(f"{verdicts.count(v)} {v}" for v in ("SUPPORTED", "NOT SUPPORTED", "INCONCLUSIVE") if v in verdicts)
