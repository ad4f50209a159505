"""Trust checks of ``e3bench serve``: its figures against GuideLLM's on the same server and load,
and the latency its own client adds.

1. **Client overhead**: the test suite's streaming server (``tests/fakes/openai_server.py``,
   a separate process) with known delays (TTFT 50 ms, 10 ms between tokens): measured − known
   is what the client, the loopback and the tiny server add; then the same server with no delays
   at ``--overhead-concurrency`` workers gives the request rate the client sustains.
2. **Cross-check** (``--guidellm PATH``, a GuideLLM >= 0.8 ``guidellm`` executable, installed in
   its own environment): for each concurrency level, e3bench serve and ``guidellm run --profile
   kind=concurrent`` send ``--requests`` requests of ``--prompt-tokens`` synthetic tokens asking
   ``--max-tokens`` tokens to the same server (``--url``, ``--launch``, or the fake one); printed:
   the ratios e3bench / GuideLLM of TTFT p50, TPOT p50 (e3bench's TPOT, (E2E − TTFT) / (tokens
   − 1) per request, is GuideLLM's "inter-token latency"; GuideLLM's own "TPOT" divides the whole
   latency, TTFT included, by the tokens) and output tokens/s (target: within 10 %), with the
   mean output tokens per request and each client's CPU use (GuideLLM's process tree, sampled
   over its benchmark's own start–end window) beside them. ``--rounds N`` repeats every level
   N times, the tools' order swapped each round (drift of the machine's other load falls on both).
   ``--pin-server CPU`` (with ``--launch``): the server runs on that CPU alone (taskset, one
   torch thread) and both clients on the others, so that a client's CPU use cannot slow the
   server it measures (on a 2-core machine it did: see docs/serve.md).

    PYTHONPATH=src:tests python benchmarks/serve_crosscheck.py [--guidellm /tmp/gl/bin/guidellm]
        [--url http://127.0.0.1:8000/v1 --model NAME --tokenizer DIR | --launch transformers --model smollm2-135m]
        [--concurrency 1,2,4] [--rounds 2] [--pin-server 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))  # the fake streaming server (a test fixture)


def fake_server(ttft_s: float, itl_s: float):
    """Start the fake server as its own process; ``(process, base url)``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT / "src")])}
    proc = subprocess.Popen([sys.executable, "-m", "fakes.openai_server", "--port", "0", "--ttft", str(ttft_s),
                             "--itl", str(itl_s)], env=env, stdout=subprocess.PIPE, text=True)  # fmt: skip
    port = int(proc.stdout.readline().split()[1])
    return proc, f"http://127.0.0.1:{port}/v1"


def e3bench_level(url: str, model: str, c: int, args, out: Path):
    """One closed-loop level of e3bench serve (no meter, no idle); its ServeLevel."""
    from e3bench.serve.session import ServeSettings, run_serve

    s = ServeSettings(model=model, url=url, concurrency=[c], min_requests=args.requests, min_seconds=0, warmup=2,
                      prompt_tokens=args.prompt_tokens, max_tokens=args.max_tokens, idle_s=0, meter="none",
                      output_dir=out)  # fmt: skip
    rec, _ = run_serve(s)
    return rec.levels[0]


def overhead(args) -> None:
    """Print the latency the client adds and the request rate it sustains."""
    proc, url = fake_server(0.05, 0.01)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            lv = e3bench_level(url, "fake-model", 1, args, Path(tmp))
    finally:
        proc.kill()
        proc.wait()
    print(f"client overhead vs a server with TTFT 50 ms, ITL 10 ms ({lv.requests_ok} requests, c=1): "
          f"TTFT p50 +{lv.ttft_ms.p50 - 50:.2f} ms, ITL p50 +{lv.itl_ms.p50 - 10:.3f} ms, "
          f"TPOT p50 +{lv.tpot_ms.p50 - 10:.3f} ms; client CPU {100 * (lv.client_cpu_utilisation or 0):.0f} % of a core")  # fmt: skip
    proc, url = fake_server(0.0, 0.0)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            a = argparse.Namespace(**{**vars(args), "requests": 20 * args.overhead_concurrency})
            lv = e3bench_level(url, "fake-model", args.overhead_concurrency, a, Path(tmp))
    finally:
        proc.kill()
        proc.wait()
    print(f"client capacity: {lv.achieved_rate_per_s:.0f} requests/s, {lv.output_tokens_per_s:.0f} tokens/s at "
          f"c={args.overhead_concurrency} against a zero-delay server (client CPU "
          f"{100 * (lv.client_cpu_utilisation or 0):.0f} % of a core; the server shares the machine)")  # fmt: skip


def guidellm_level(exe: str, url: str, model: str, tokenizer: str, c: int, args, out: Path) -> dict:
    """One GuideLLM concurrent benchmark; its metrics dict (successful requests)."""
    target = url[: -len("/v1")] if url.endswith("/v1") else url
    path = out / f"guidellm-c{c}.json"
    # a fixed output length makes GuideLLM send ignore_eos, which transformers serve refuses (422):
    # there, both tools only cap the output (max_tokens), as e3bench serve does without --ignore-eos
    backend = f"kind=openai_http,target={target},model={model},request_format=/v1/chat/completions"
    data = f"kind=synthetic_text,prompt_tokens={args.prompt_tokens}"
    if args.no_ignore_eos:
        backend = f"{backend},max_tokens={args.max_tokens}"
    else:
        data = f"{data},output_tokens={args.max_tokens}"
    cmd = [exe, "run", "--backend", backend, "--profile", f"kind=concurrent,streams={c}", "--data", data,
           "--tokenizer", f"kind=huggingface_auto,model={tokenizer}",
           "--constraint", f"kind=max_requests,count={args.requests}",
           "--output", f"kind=json,path={path}", "--disable-console"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=out, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cpu = tree_cpu_series(proc)
    if proc.wait() != 0:
        raise SystemExit(f"guidellm failed (status {proc.returncode}): {' '.join(cmd)}")
    b = json.loads(path.read_text())["benchmarks"][0]
    m = {k: b["metrics"][k]["successful"] for k in ("time_to_first_token_ms", "inter_token_latency_ms",
                                                     "output_tokens_per_second", "output_token_count")}  # fmt: skip
    m["client_cpu_pct"] = cpu_in_window(cpu, b["start_time"], b["end_time"])
    return m


def tree_cpu_series(proc: subprocess.Popen, every_s: float = 0.1) -> list[tuple[float, float]]:
    """``(epoch s, CPU s so far)`` of ``proc`` and its descendants, sampled until it exits (the
    list fills in a thread; CPU of descendants that already exited is lost, so the window's
    figure is a lower bound when workers come and go inside it)."""
    import psutil

    series: list[tuple[float, float]] = []
    root = psutil.Process(proc.pid)

    def sample() -> None:
        while proc.poll() is None:
            total = 0.0
            try:
                for p in [root, *root.children(recursive=True)]:
                    try:
                        t = p.cpu_times()
                        total += t.user + t.system
                    except psutil.Error:
                        pass
            except psutil.Error:
                break
            series.append((time.time(), total))
            time.sleep(every_s)

    threading.Thread(target=sample, daemon=True).start()
    return series


def cpu_in_window(series: list[tuple[float, float]], t0: float, t1: float) -> float | None:
    """% of one core the sampled tree used between epoch times t0 and t1 (None: too few samples)."""
    inside = [(t, c) for t, c in series if t0 <= t <= t1]
    if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
        return None
    return 100 * (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])


def crosscheck(args) -> None:
    """Print e3bench / GuideLLM ratios per concurrency level."""
    import contextlib

    from e3bench.serve import launch

    proc = None
    url, model, tokenizer = args.url, args.model, args.tokenizer
    stack = contextlib.ExitStack()
    if args.launch:  # the same launcher as e3bench serve --launch
        port = launch.free_port()
        argv, model = launch.command(args.launch, args.model, port)
        env = None
        if args.pin_server is not None:  # the server on one CPU, this process and its children on the rest
            others = sorted(os.sched_getaffinity(0) - {args.pin_server})
            if not others:
                raise SystemExit(f"--pin-server {args.pin_server}: no CPU left for the clients")
            argv = ["taskset", "-c", str(args.pin_server), *argv]
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            os.sched_setaffinity(0, others)
            print(f"server pinned to CPU {args.pin_server} (1 torch thread); clients on CPU {others}")
        log = Path(tempfile.mkdtemp()) / "server.log"
        server = stack.enter_context(launch.launched(argv, model, port, log, ready_timeout_s=600, env=env))
        url = server.url
    elif url is None:
        proc, url = fake_server(0.05, 0.01)
        model = "fake-model"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            print(f"{'level':>9} {'TTFT p50 ms (e3/GL)':>21} {'TPOT p50 ms (e3/GL)':>21} {'out tok/s (e3/GL)':>21} "
                  f"{'tok/req (e3/GL)':>15} {'client CPU %':>13}  ratios TTFT TPOT tok/s")  # fmt: skip
            ratios: dict[int, list[tuple[float, ...]]] = {c: [] for c in args.concurrency}
            for r in range(args.rounds):
                for c in args.concurrency:
                    def ours_run(c=c):
                        return e3bench_level(url, model, c, args, Path(tmp))

                    def gl_run(c=c):
                        return guidellm_level(args.guidellm, url, model, tokenizer, c, args, Path(tmp))

                    if r % 2 == 0:
                        ours, gl = ours_run(), gl_run()
                    else:
                        gl, ours = gl_run(), ours_run()
                    pairs = [(ours.ttft_ms.p50, gl["time_to_first_token_ms"]["median"]),
                             (ours.tpot_ms.p50, gl["inter_token_latency_ms"]["median"]),
                             (ours.output_tokens_per_s, gl["output_tokens_per_second"]["mean"])]  # fmt: skip
                    cells = [f"{a:8.2f} / {b:8.2f}" for a, b in pairs]
                    toks = f"{ours.output_tokens / max(ours.requests_ok, 1):5.1f} / {gl['output_token_count']['mean']:5.1f}"
                    gl_cpu = gl["client_cpu_pct"]
                    cpu = f"{100 * (ours.client_cpu_utilisation or 0):4.0f} / {gl_cpu:4.0f}" if gl_cpu is not None else "n/a"
                    rs = tuple(a / b if b else float("nan") for a, b in pairs)
                    ratios[c].append(rs)
                    label = f"c={c}" + (f" r{r + 1}" if args.rounds > 1 else "")
                    print(f"{label:>9} {cells[0]:>21} {cells[1]:>21} {cells[2]:>21} {toks:>15} {cpu:>13}  "
                          + " ".join(f"{x:.3f}" for x in rs), flush=True)  # fmt: skip
            if args.rounds > 1:
                for c, rows in ratios.items():
                    med = [statistics.median(col) for col in zip(*rows)]
                    print(f"{'c=' + str(c):>9} median ratios over {len(rows)} rounds: TTFT {med[0]:.3f} TPOT {med[1]:.3f} "
                          f"tok/s {med[2]:.3f}")  # fmt: skip
    finally:
        stack.close()
        if proc is not None:
            proc.kill()
            proc.wait()


def main() -> None:
    """Command line (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--guidellm", help="path of a guidellm executable (GuideLLM >= 0.8); without it only the overhead")
    ap.add_argument("--url", help="server to cross-check on (default: the fake server, TTFT 50 ms, ITL 10 ms)")
    ap.add_argument("--launch", help="start the server to cross-check on (transformers|llamacpp|vllm) with --model")
    ap.add_argument("--skip-overhead", action="store_true", help="only the cross-check")
    ap.add_argument("--no-ignore-eos", action="store_true",
                    help="GuideLLM caps the output with max_tokens instead of asking a fixed length (ignore_eos), for "
                         "servers that refuse ignore_eos (transformers serve; implied by --launch transformers)")
    ap.add_argument("--model", default="fake-model")
    ap.add_argument("--tokenizer", help="tokenizer folder or hub id for GuideLLM's synthetic prompts")
    ap.add_argument("--concurrency", default="1,2,4", type=lambda s: [int(x) for x in s.split(",")])
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--overhead-concurrency", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=1, help="repeat each level, the tools' order swapped each round")
    ap.add_argument("--pin-server", type=int, metavar="CPU",
                    help="with --launch: run the server on this CPU alone, the clients on the others")
    args = ap.parse_args()
    args.no_ignore_eos = args.no_ignore_eos or args.launch == "transformers"
    if not args.skip_overhead:
        overhead(args)
    if args.guidellm:
        if not args.tokenizer:
            from e3bench.backends.models import local_path, resolve

            args.tokenizer = local_path(resolve("smollm2-135m"))[0]
        crosscheck(args)


if __name__ == "__main__":
    main()
