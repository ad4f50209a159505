"""e3bench serve against a real tiny streaming server (tests/fakes/openai_server.py): measured
TTFT / ITL / TPOT against the server's known delays, the arrival schedule, goodput arithmetic,
the record in the store, and the serving section of the report."""

from __future__ import annotations

import asyncio
import json
import statistics
from pathlib import Path

import pytest

from fakes.openai_server import FakeConfig, serve_in_thread

from e3bench.core.errors import E3Error
from e3bench.results import store
from e3bench.serve.client import RequestResult, request_body, stream_one
from e3bench.serve.levels import parse_slo, summarize_level
from e3bench.serve.load import Level, closed_loop, schedule
from e3bench.serve.session import ServeSettings, run_serve


def settings(url: str, tmp_path, **kw) -> ServeSettings:
    base = dict(model="fake-model", url=url, concurrency=[1], min_requests=6, min_seconds=0.2, warmup=1,
                max_tokens=12, idle_s=0.0, meter="none", output_dir=tmp_path)  # fmt: skip
    base.update(kw)
    return ServeSettings(**base)


def test_stream_one_times_the_servers_known_delays():
    """TTFT ≈ the server's 80 ms, every gap ≈ its 20 ms, TPOT = (E2E − TTFT)/(n − 1), usage read."""
    import httpx

    async def go():
        async with httpx.AsyncClient(timeout=10) as client:
            return [await stream_one(client, f"{url}/chat/completions", request_body("fake-model", "a b c", max_tokens=10))
                    for _ in range(3)]  # fmt: skip

    with serve_in_thread(FakeConfig(ttft_s=0.08, itl_s=0.02)) as (url, _):
        results = asyncio.run(go())
    for r in results:
        assert r.ok and r.error_kind is None
        assert r.usage_output_tokens == 10 and r.usage_prompt_tokens == 3 and r.tokens_source == "server usage"
        assert 78 <= r.ttft_ms <= 110
        assert len(r.itl_ms) == 9
        assert 18 <= statistics.median(r.itl_ms) <= 26
        assert r.tpot_ms == pytest.approx((r.e2e_ms - r.ttft_ms) / 9)
        assert 18 <= r.tpot_ms <= 26
        assert r.text == " ".join(f"w{i}" for i in range(10))


def test_closed_loop_keeps_concurrency_and_stopping_rule():
    """c=3 for ≥7 requests: 7..9 requests (workers finish their last), throughput ≈ 3 / E2E."""
    import httpx

    async def go():
        async with httpx.AsyncClient(timeout=10) as client:

            async def send(p):
                return await stream_one(client, f"{url}/chat/completions", request_body("fake-model", p, max_tokens=5))

            return await closed_loop(send, ["x y"], 3, min_requests=7, min_seconds=0.0)

    with serve_in_thread(FakeConfig(ttft_s=0.05, itl_s=0.01)) as (url, _):
        results, duration = asyncio.run(go())
    assert 7 <= len(results) <= 9 and all(r.ok for r in results)
    e2e = statistics.mean(r.e2e_ms for r in results) / 1e3
    assert len(results) / duration == pytest.approx(3 / e2e, rel=0.35)


def test_schedule_poisson_is_seeded_and_has_the_asked_rate():
    a, b = schedule(2.0, 4000, "poisson", 7), schedule(2.0, 4000, "poisson", 7)
    assert a == b and a[0] == 0.0
    assert schedule(2.0, 4000, "poisson", 8) != a
    gaps = [y - x for x, y in zip(a, a[1:])]
    assert statistics.mean(gaps) == pytest.approx(0.5, rel=0.05)
    assert statistics.stdev(gaps) == pytest.approx(0.5, rel=0.08)  # exponential: sd = mean
    assert schedule(4.0, 3, "constant", 0) == [0.0, 0.25, 0.5]
    with pytest.raises(E3Error, match="arrival"):
        schedule(1.0, 3, "bursty", 0)


def _req(start, ttft_ms, gaps_ms, tokens=None, error=None):
    t = [start + ttft_ms / 1e3]
    for g in gaps_ms:
        t.append(t[-1] + g / 1e3)
    r = RequestResult(start_s=start, token_times_s=[] if error else t, end_s=t[-1], usage_output_tokens=tokens)
    r.error_kind = error
    return r


def test_goodput_counts_sent_requests_meeting_every_slo():
    """4 requests over 2 s: one fails, one misses TTFT, one misses TPOT, one meets both → share
    1/4, goodput 0.5/s; rates and token throughput over the level's duration."""
    rs = [_req(0.0, 100, [10, 10, 10], 4), _req(0.1, 900, [10, 10], 3), _req(0.2, 100, [80, 80], 3),
          _req(0.3, 0, [], error="http_5xx")]  # fmt: skip
    lv = summarize_level(Level("concurrency", 2), rs, 2.0, slo=parse_slo("ttft_ms=500,tpot_ms=50"))
    assert lv.requests_sent == 4 and lv.requests_ok == 3 and lv.errors_by_kind == {"http_5xx": 1}
    assert lv.goodput_share == 0.25 and lv.goodput_per_s == 0.5
    assert lv.achieved_rate_per_s == 1.5 and lv.output_tokens_per_s == 5.0
    assert lv.ttft_ms.p50 == pytest.approx(100) and lv.tpot_ms.max == pytest.approx(80)
    lo, hi = lv.goodput_ci95
    assert lo < 0.25 < hi


@pytest.mark.parametrize("bad, says", [("ttft_ms", "not name=value"), ("ttft=5", "unknown SLO"),
                                       ("ttft_ms=abc", "not a number"), ("ttft_ms=-1", "positive"),
                                       ("ttft_ms=1,ttft_ms=2", "twice")])  # fmt: skip
def test_malformed_slo_is_one_clear_error(bad, says):
    with pytest.raises(E3Error, match=says):
        parse_slo(bad)


def test_session_record_in_the_store_with_levels_and_energy_of_the_server(tmp_path):
    """Two closed levels and a constant-rate level, estimate meter following this process's pid
    (the in-thread server): the record is a kind=serve document the store scan hands over."""
    import os

    with serve_in_thread(FakeConfig(ttft_s=0.03, itl_s=0.005)) as (url, _):
        s = settings(url, tmp_path, concurrency=[1, 2], rates=[20.0], arrival="constant",
                     slo={"ttft_ms": 500.0}, meter="estimate", server_pid=os.getpid(), idle_s=0.3)  # fmt: skip
        rec, path = run_serve(s)
    assert [lv.label for lv in rec.levels] == ["c=1", "c=2", "rate=20/s"]
    assert all(lv.status == "ok" and lv.requests_ok >= 6 and lv.goodput_share == 1.0 for lv in rec.levels)
    assert rec.levels[2].offered_rate_per_s == 20.0
    e = rec.levels[0].energy
    assert e.method == "estimated" and e.gross_energy_j > 0 and e.requests == rec.levels[0].requests_ok
    assert "process tree" in rec.energy.meter_choice_reason or "pid" in rec.energy.meter_choice_reason
    scan = store.scan(tmp_path)
    assert [p for p, _ in scan.others["serve"]] == [path]
    assert json.loads(path.read_text())["kind"] == "serve"


def test_report_has_the_serving_section(tmp_path):
    from e3bench.report.serving import load_serving, section_md

    import os

    with serve_in_thread(FakeConfig(ttft_s=0.02, itl_s=0.002)) as (url, _):
        run_serve(settings(url, tmp_path, concurrency=[1, 2], slo={"ttft_ms": 1000.0}, meter="estimate",
                           server_pid=os.getpid(), idle_s=0.3))  # fmt: skip
    serving = load_serving(store.scan(tmp_path).others)
    assert [r["level"] for r in serving.rows] == ["c=1", "c=2"]
    md = section_md(serving)
    assert "## Serving under load" in md and "knee at c=2" in md
    from e3bench.report.render import build_report

    rep = build_report(tmp_path)
    page = (rep.out_dir / "report.html").read_text()
    assert "<b>Serving knee</b>" in page  # in the page's executive summary
    assert {"plots/serving_latency.png", "plots/serving_load.png", "serving.csv"} <= set(rep.files)
    head = (rep.out_dir / "serving.csv").read_text().splitlines()[0].split(",")
    assert "gross_power_w" in head and "idle_power_w" in head and "j_per_request" in head
    # goodput and J/request are ratio quantities: their axes start at 0 in the PNG and the page
    from e3bench.report import interactive, plots
    from e3bench.report.serving import serving_figures

    spec = next(f for f in serving_figures(serving) if f.name == "serving_load")
    assert [p.y_label.split(" ")[0] for p in spec.panels] == ["share", "J/request"]
    fig = plots.draw(spec)
    assert [ax.get_ylim()[0] for ax in fig.axes if ax.get_ylabel()] == [0.0, 0.0]
    lay = interactive.figure_json(spec)["layout"]
    assert [v.get("rangemode") for k, v in sorted(lay.items()) if k.startswith("yaxis")] == ["tozero", "tozero"]


def test_ls_and_export_list_the_serve_levels(tmp_path):
    """A folder of serve sessions only: `ls` lists its levels (as `ls --serve`), `export --format
    serve` writes one row per level with the measured values."""
    from typer.testing import CliRunner

    from e3bench.cli.app import app

    with serve_in_thread(FakeConfig(ttft_s=0.02, itl_s=0.002)) as (url, _):
        rec, _ = run_serve(settings(url, tmp_path, concurrency=[1, 3]))
    runner = CliRunner()
    for args in (["ls", str(tmp_path)], ["ls", str(tmp_path), "--serve"]):
        res = runner.invoke(app, [*args, "--format", "json"])
        assert res.exit_code == 0, res.output
        rows = json.loads(res.stdout)
        assert [(r["session"], r["level"], r["requests_ok"]) for r in rows] == [
            (rec.run_id, "c=1", rec.levels[0].requests_ok), (rec.run_id, "c=3", rec.levels[1].requests_ok)]
        assert rows[1]["ttft_p50_ms"] == pytest.approx(rec.levels[1].ttft_ms.p50)
    # at 80 columns the session id (a name to copy) is whole on one line, or its column is left out
    res = runner.invoke(app, ["ls", str(tmp_path), "--serve"], env={"COLUMNS": "80"})
    assert res.exit_code == 0, res.output
    assert max(len(line) for line in res.stdout.splitlines()) <= 80
    assert res.stdout.count(rec.run_id) == 2 and "c=3" in res.stdout  # session and level kept (they were left out first)
    from e3bench.report.serving import COLUMNS, CONSOLE_ORDER, LS_COLUMNS, LS_ORDER

    assert sorted(LS_ORDER) == sorted(LS_COLUMNS)  # a column not ranked would be left out before all ranked ones
    assert sorted(CONSOLE_ORDER) == sorted(c for c in COLUMNS if c not in ("session", "model"))
    out = tmp_path / "serving.csv"
    res = runner.invoke(app, ["export", str(tmp_path), "--format", "serve", "-o", str(out)])
    assert res.exit_code == 0 and "wrote 2 rows" in res.output
    lines = out.read_text().splitlines()
    assert lines[0].startswith("session,model,level,status") and len(lines) == 3


@pytest.mark.slow
def test_transformers_serve_with_the_bundled_model(tmp_path):
    """The real thing: `transformers serve` launched with smollm2-135m, one short level; the
    server's usage counts agree with the tokenizer's, and the server is gone afterwards."""
    pytest.importorskip("fastapi")
    pytest.importorskip("openai")
    from e3bench.serve.launch import port_free

    s = ServeSettings(model="smollm2-135m", launch="transformers", concurrency=[2], min_requests=2, min_seconds=0,
                      warmup=1, max_tokens=4, prompt_tokens=16, idle_s=0.5, meter="estimate", output_dir=tmp_path)  # fmt: skip
    rec, path = run_serve(s)
    (lv,) = rec.levels
    assert lv.status == "ok" and lv.requests_ok >= 2 and lv.tokens_source == "server usage"
    assert lv.output_tokens == 4 * lv.requests_ok
    assert lv.ttft_ms.p50 > 0 and lv.energy.method == "estimated" and lv.energy.gross_energy_j > 0
    assert "server usage" in (lv.tokens_check or "")
    assert port_free(rec.launch["port"]) and (tmp_path / "serve" / "logs").is_dir()


def test_estimate_meter_follows_the_given_process_tree_not_this_one():
    """A child burning CPU for ~1 s while this process sleeps: the meter following the child's
    parent (a shell, so the burner is a grandchild) sees the CPU time; the default meter
    (this process) sees none of it."""
    import subprocess
    import sys
    import time

    from e3bench.energy.meters.estimate import EstimateMeter

    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 1.0: pass\n"
    proc = subprocess.Popen(["/bin/sh", "-c", f"{sys.executable} -c '{burn}'"])
    follow, own = EstimateMeter(pids=[proc.pid], sample_interval_s=0.05), EstimateMeter(sample_interval_s=0.05)
    cpu0 = time.process_time()  # this process's own CPU (the samplers' threads): all 'own' may see
    try:
        for m in (follow, own):
            m.begin("w")
        proc.wait(30)
        time.sleep(0.2)
        r_follow, r_own = follow.end("w"), own.end("w")
    finally:
        follow.close()
        own.close()
    k = follow.power_model.logical_cpus
    cpu_follow = r_follow.details["mean_utilisation"] * k * r_follow.duration_s
    cpu_own = r_own.details["mean_utilisation"] * k * r_own.duration_s
    assert 0.6 <= cpu_follow <= 1.3, cpu_follow  # the grandchild's 1 s of CPU (its exit is counted too)
    # none of the child's second; under load this process's own sampler threads cost up to ~0.5 s of
    # CPU, so the bound is what this process really used (a fixed 0.2 s failed at load 16)
    assert cpu_own < 0.2 + (time.process_time() - cpu0), cpu_own
    assert f"pid {proc.pid}" in r_follow.details["utilisation_scope"]
    # CPU energy only: the RAM term follows RSS, and this test process's RSS (torch imported by the
    # tests before it) can outweigh the tiny burner's, so total_j does not order the two
    assert r_follow.energy_j["cpu"] > r_own.energy_j["cpu"]


def test_knee_lines_name_the_session_and_no_slo_is_said_once_per_model():
    """18 sessions without --slo printed 18 identical 'no --slo given' lines, and two knees of
    one model could not be told apart: the knee names its session, the no-SLO line is one per model."""
    from e3bench.report.serving import knee, load_serving

    def rec(rid, slo):
        lv = {"status": "ok", "label": "c=1", "goodput_share": 1.0, "achieved_rate_per_s": 2.0}
        return {"run_id": rid, "model": "m", "slo": slo, "levels": [lv]}

    assert "m (session A)" in knee(rec("A", {"ttft_ms": 500.0}))
    from e3bench.results.schema import ServeRecord

    docs = [ServeRecord(run_id=f"S{i}", created_utc="2026-12-01T00:00:00Z", status="ok", url="u", model="m",
                        settings={}, slo={}).model_dump(mode="json") for i in range(3)]  # fmt: skip
    serving = load_serving({"serve": [(Path(f"/x/S{i}.json"), d) for i, d in enumerate(docs)]})
    assert serving.knees == ["**Serving** m (3 sessions): no --slo given, so no goodput and no knee "
                             "(goodput_share is blank; pass e.g. --slo ttft_ms=500,tpot_ms=50)"]  # fmt: skip
