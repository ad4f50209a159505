"""The serving section of ``e3bench report``: ``kind: serve`` records (``e3bench serve``).

One row per session × load level: TTFT and TPOT p50/p99 (ms), achieved request rate and output
tokens/s, goodput under the session's SLOs, J/request and mean power W of the level's window;
the knee (the highest load whose goodput share is at least :data:`KNEE_SHARE`); figures:
latency–throughput curves (p50 and p99 TTFT and TPOT vs achieved rate), goodput vs offered
load, J/request vs load. Reads the stored documents only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from e3bench.core.fmt import num

#: a level meets the SLOs when at least this share of its requests did
KNEE_SHARE = 0.9

COLUMNS = ("session", "model", "level", "status", "requests_ok", "ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms",
           "tpot_p99_ms", "req_per_s", "out_tok_per_s", "goodput_share", "goodput_per_s", "j_per_request",
           "j_per_out_token", "gross_power_w", "idle_power_w", "energy_method", "client_cpu_pct")  # fmt: skip
#: the console's order of importance (``print_table``'s ``drop_order``: the last is left out first)
CONSOLE_ORDER = ("level", "status", "ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p99_ms", "out_tok_per_s",
                 "goodput_share", "j_per_request", "gross_power_w", "energy_method", "req_per_s", "idle_power_w",
                 "requests_ok", "goodput_per_s", "client_cpu_pct", "j_per_out_token")  # fmt: skip


@dataclass
class Serving:
    """The serving documents of a results directory: their level rows, knees and problems."""

    rows: list[dict] = field(default_factory=list)
    knees: list[str] = field(default_factory=list)
    quality: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.rows or self.quality)


def _stat(level: dict, key: str, q: str):
    s = level.get(key) or {}
    return s.get(q)


def level_rows(rec: dict) -> list[dict]:
    """One row (:data:`COLUMNS`) per level of serve record ``rec`` (its JSON)."""
    rows = []
    for lv in rec.get("levels") or []:
        e = lv.get("energy") or {}
        per_req = e.get("energy_per_request_j")
        out_tok = lv.get("output_tokens") or 0
        energy = e.get("net_energy_j") if e.get("net_energy_j") is not None else e.get("gross_energy_j")
        rows.append({
            "session": rec.get("run_id"), "model": rec.get("model"), "level": lv.get("label"),
            "status": lv.get("status") if lv.get("status") == "ok" else f"failed: {lv.get('error')}",
            "requests_ok": lv.get("requests_ok"),
            "ttft_p50_ms": _stat(lv, "ttft_ms", "p50"), "ttft_p99_ms": _stat(lv, "ttft_ms", "p99"),
            "tpot_p50_ms": _stat(lv, "tpot_ms", "p50"), "tpot_p99_ms": _stat(lv, "tpot_ms", "p99"),
            "req_per_s": lv.get("achieved_rate_per_s"), "out_tok_per_s": lv.get("output_tokens_per_s"),
            "goodput_share": lv.get("goodput_share") if rec.get("slo") else None,
            "goodput_per_s": lv.get("goodput_per_s") if rec.get("slo") else None,
            "j_per_request": per_req, "j_per_out_token": energy / out_tok if energy is not None and out_tok else None,
            "gross_power_w": e.get("mean_power_w"), "idle_power_w": e.get("idle_power_w"), "energy_method": _how(e),
            "client_cpu_pct": 100 * lv["client_cpu_utilisation"] if lv.get("client_cpu_utilisation") is not None else None,
        })  # fmt: skip
    return rows


def _how(e: dict) -> str | None:
    """``estimated (net)``, ``measured (gross …)``, or ``missing``: how a level's energy was had
    (the basis of J/request and J/output token; the W column is always the gross mean)."""
    if not e:
        return None
    return "missing" if e.get("method") == "missing" else f"{e.get('method')} ({e.get('basis')})"


def _who(rec: dict) -> str:
    """``model (session RUN_ID)``: two sessions of one model are told apart."""
    return f"{rec.get('model')} (session {rec.get('run_id')})"


def knee(rec: dict) -> str | None:
    """The highest load of ``rec`` whose goodput share is ≥ :data:`KNEE_SHARE`, in words (None
    without SLOs)."""
    slo = rec.get("slo") or {}
    if not slo:
        return None
    ok = [lv for lv in rec.get("levels") or [] if lv.get("status") == "ok"]
    meeting = [lv for lv in ok if (lv.get("goodput_share") or 0) >= KNEE_SHARE]
    what = ", ".join(f"{k}≤{v:g}" for k, v in slo.items())
    if not meeting:
        return f"**Serving knee** {_who(rec)}: no level met {what} for {KNEE_SHARE:.0%} of requests"
    best = max(meeting, key=lambda lv: lv.get("achieved_rate_per_s") or 0)
    return (f"**Serving knee** {_who(rec)}: knee at {best.get('label')} — {num(best.get('achieved_rate_per_s'))} "
            f"req/s with {best.get('goodput_share'):.0%} of requests within {what}")  # fmt: skip


def load_serving(others: dict[str, list[tuple[Path, dict]]]) -> Serving:
    """The serving part of a store scan (:attr:`e3bench.results.store.Scan.others`)."""
    from e3bench.results.schema import ServeRecord

    out = Serving()
    no_slo: dict[str, list[str]] = {}
    for path, data in others.get("serve", []):
        try:
            rec = ServeRecord.model_validate(data).model_dump(mode="json")
        except ValueError as exc:
            out.problems.append(f"{path}: not a readable serve record ({type(exc).__name__})")
            continue
        out.records.append(rec)
        out.rows.extend(level_rows(rec))
        if (k := knee(rec)) is not None:
            out.knees.append(k)
        else:
            no_slo.setdefault(str(rec.get("model")), []).append(rec["run_id"])
        for t in rec.get("effectiveness") or []:
            e = t.get("energy") or {}
            out.quality.append({"session": rec["run_id"], "model": rec["model"], "task": t["task"], "n_items": t["n_items"],
                                **{m: v for m, v in t["metrics"].items()}, "energy_j": e.get("gross_energy_j")})  # fmt: skip
    for model, sessions in no_slo.items():  # one line per model, not one per session
        which = f"session {sessions[0]}" if len(sessions) == 1 else f"{len(sessions)} sessions"
        out.knees.append(f"**Serving** {model} ({which}): no --slo given, so no goodput and no knee "
                         "(goodput_share is blank; pass e.g. --slo ttft_ms=500,tpot_ms=50)")  # fmt: skip
    return out


def level_table(records: Sequence[dict], *, markdown: bool = True) -> str:
    """The per-level table of ``records`` (serve record JSON) as Markdown or aligned text."""
    rows = [r for rec in records for r in level_rows(rec)]
    cols = [c for c in COLUMNS if c not in ("session", "model")]
    cells = [[c for c in cols]] + [[num(r[c]) if not isinstance(r[c], str) else r[c] for c in cols] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(cells[0]) + " |", "|" + "---|" * len(cols)]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells[1:]])
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells)


def section_md(serving: Serving) -> str:
    """The Markdown section: knees (bold: the HTML page's executive summary shows them), the
    level table per session, quality through the server."""
    if not serving:
        return ""
    parts = ["## Serving under load (e3bench serve)", "",
             "Latency (ms) from the client's clock; req/s = completed requests / level duration; goodput = share "
             "of sent requests within every SLO; J/request and J/output token from the level's metered window, "
             "net of the idle baseline (server loaded and idle) where energy_method says net; gross_power_w is "
             "the window's gross mean power, idle_power_w the baseline's.", ""]  # fmt: skip
    parts += [f"- {k}" for k in serving.knees] + ([""] if serving.knees else [])
    for rec in serving.records:
        parts += [f"### {rec['model']} — {rec['url']} ({rec['run_id']})", "", level_table([rec]), ""]
    if serving.quality:
        keys = sorted({k for q in serving.quality for k in q} - {"session", "model", "task", "n_items", "energy_j"})
        parts += ["### Quality through the server", "", "| model | task | items | " + " | ".join(keys) + " | energy J |",
                  "|" + "---|" * (len(keys) + 4)]  # fmt: skip
        parts += [f"| {q['model']} | {q['task']} | {q['n_items']} | " + " | ".join(num(q.get(k)) for k in keys)
                  + f" | {num(q.get('energy_j'))} |" for q in serving.quality]  # fmt: skip
        parts.append("")
    return "\n".join(parts)


def serving_tables(serving: Serving | None) -> list[tuple[str, list[dict], Sequence[str]]]:
    """``(heading, rows, columns)`` tables for the HTML page (empty without serve records)."""
    if not serving:
        return []
    # the session as in the figures' legends (its run id's last 6 characters): the full id is
    # in summary.md and serving.csv, and a 33-character column pushed the energy off the page
    rows = [{**r, "session": str(r["session"])[-6:]} for r in serving.rows]
    out: list[tuple[str, list[dict], Sequence[str]]] = [("Serving under load (e3bench serve)", rows, COLUMNS)]
    if serving.quality:
        cols = list(dict.fromkeys(k for q in serving.quality for k in q))
        quality = [{**q, "session": str(q["session"])[-6:]} for q in serving.quality]
        out.append(("Quality through the server (e3bench serve --tasks)", quality, cols))
    return out


def serving_figures(serving: Serving | None) -> list:
    """The serving figure: p50/p99 TTFT and TPOT vs achieved request rate, goodput share vs
    offered load, J/request vs load (one line per session and statistic; points are levels)."""
    if not serving or not serving.records:
        return []
    from e3bench.report.figures import Figure, Mark, Panel
    from e3bench.report.stats import Interval

    nan = float("nan")

    def point(v, n: int, how: str) -> Interval:
        return Interval(float(v), nan, nan, n, how)

    lat: dict[str, list[Mark]] = {"ttft_ms": [], "tpot_ms": []}
    good, joules = [], []
    for rec in serving.records:
        name = f"{rec['model']} ({rec['run_id'][-6:]})"
        for lv in (x for x in rec.get("levels") or [] if x.get("status") == "ok"):
            rate, load = lv.get("achieved_rate_per_s"), lv.get("value")
            kind = "closed" if lv.get("load") == "concurrency" else "open"
            for key, marks in lat.items():
                st = lv.get(key) or {}
                for q in ("p50", "p99"):
                    if st.get(q) is not None and rate:
                        marks.append(Mark(lv["label"], f"{name} {kind} {q}", point(st[q], st.get("n", 0), f"{q} of requests"),
                                          cat=float(rate), hover=f"{lv['label']}: {num(st[q])} ms at {num(rate)} req/s"))  # fmt: skip
            if rec.get("slo") and lv.get("goodput_share") is not None:
                lo, hi = lv.get("goodput_ci95") or (nan, nan)
                good.append(Mark(lv["label"], f"{name} {kind}", Interval(lv["goodput_share"], lo, hi, lv["requests_sent"],
                                 "Wilson score interval"), cat=float(load)))  # fmt: skip
            e = lv.get("energy") or {}
            if e.get("energy_per_request_j") is not None:
                joules.append(Mark(lv["label"], f"{name} {kind}", point(e["energy_per_request_j"], lv["requests_ok"],
                                   f"{e.get('method')}, {e.get('basis')}"), cat=float(load)))  # fmt: skip
    # points joined in load order (a saturated server's achieved rate can fall at a higher load:
    # sorted by rate, the line ran c=1 → c=4 → c=2 and showed latency falling at the top)
    latency = [p for p in (Panel("line", "TTFT vs achieved rate", "achieved requests/s", "TTFT (ms)", lat["ttft_ms"], in_order=True),
                           Panel("line", "TPOT vs achieved rate", "achieved requests/s", "TPOT (ms)", lat["tpot_ms"], in_order=True))
               if p.marks]  # fmt: skip
    hows = {m.y.method for m in joules}  # "estimated, net": on the axis when every point has the same
    j_label = f"J/request ({hows.pop()})" if len(hows) == 1 else "J/request (see the table's energy_method)"
    # log x with the levels as ticks (1, 2, 4, 8 or 0.5, 1, 2), not 1.5 or 2.5 "users"
    load = [p for p in (Panel("line", "Goodput vs load", "concurrency or offered requests/s", "share within SLOs", good,
                              log_x=True, y_from_zero=True),
                        Panel("line", "Energy per request vs load", "concurrency or offered requests/s", j_label, joules,
                              log_x=True, y_from_zero=True))
            if p.marks]  # fmt: skip
    # two figures of two panels: four side by side (each with its legend) left each plot a sliver
    out = []
    if latency:
        out.append(Figure("serving_latency", "Serving under load: latency vs achieved request rate",
                          "Points are load levels, joined in load order; p50 and p99 over each level's completed requests, from the client's "
                          "clock; TPOT = (E2E − TTFT) / (output tokens − 1).", latency))  # fmt: skip
    if load:
        title = "Serving under load: goodput and energy per request vs load" if len(load) > 1 else "Serving under load"
        out.append(Figure("serving_load", title,
                          "Points are load levels (closed loop: concurrency; open loop: offered rate); goodput = share "
                          "of sent requests within every SLO, with its Wilson 95 % interval; J/request from each level's "
                          "metered window (basis: energy_method in the table).", load))  # fmt: skip
    return out


#: what ``e3bench ls --serve`` shows by default (one row per session × level)
LS_COLUMNS = ("session", "model", "level", "status", "requests_ok", "ttft_p50_ms", "tpot_p50_ms", "req_per_s",
              "out_tok_per_s", "goodput_share", "j_per_request", "gross_power_w")  # fmt: skip
#: ``ls --serve``'s order of importance, every column of :data:`LS_COLUMNS` (``drop_order``: the
#: last is left out first, and a column not named would go before all named ones)
LS_ORDER = ("level", "session", "status", "ttft_p50_ms", "tpot_p50_ms", "out_tok_per_s", "requests_ok", "req_per_s",
            "goodput_share", "j_per_request", "model", "gross_power_w")  # fmt: skip


def serve_rows(results_dir: Path) -> tuple[list[dict], list[str]]:
    """``(level rows, problems)`` of every serve record under ``results_dir`` (for ``ls --serve``
    and ``export --format serve``); the rows carry every :data:`COLUMNS` field."""
    from e3bench.results import store

    serving = load_serving(store.scan(store.check_root(results_dir)).others)
    return serving.rows, serving.problems


def export_serving(results_dir: Path, out: Path) -> int:
    """Write the serve level rows (:data:`COLUMNS`) under ``results_dir`` to ``out`` (.csv,
    .parquet, .json, .md), atomically; returns the number of rows. :class:`E3Error` for another
    ending, a directory, an unwritable place, or no serve records."""
    from e3bench.core.errors import E3Error
    from e3bench.core.fsutil import atomic_write_bytes, write_errors
    from e3bench.report.export import FORMATS, to_json, to_markdown
    from e3bench.report.tables import to_csv, to_parquet_bytes

    out = Path(out)
    if out.is_dir():
        raise E3Error(f"cannot export to {out}: it is a directory", f"name a file, e.g. -o {out / 'serving.csv'}")
    if out.suffix not in FORMATS:
        raise E3Error(f"cannot export to '{out.suffix or out.name}'", "use a .csv, .parquet, .json or .md file name")
    rows, _ = serve_rows(results_dir)
    if not rows:
        raise E3Error(f"no e3bench serve records under {results_dir}", "run `e3bench serve -o DIR` first")
    if out.suffix == ".parquet":
        data = to_parquet_bytes(rows, COLUMNS)
    else:
        data = {".csv": to_csv, ".json": to_json, ".md": to_markdown}[out.suffix](rows, COLUMNS).encode("utf-8")
    with write_errors(out, "choose a writable -o path"):
        atomic_write_bytes(out, data)
    return len(rows)
