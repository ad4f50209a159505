"""Trust checks of ``e3bench serve``: its figures against GuideLLM's on the same server and load,
and the latency its own client adds.

1. **Client overhead**: the test suite's streaming server (``tests/fakes/openai_server.py``,
   a separate process) with known delays (TTFT 50 ms, 10 ms between tokens): measured − known
   is what the client, the loopback and the tiny server add; then the same server with no delays
   at ``--overhead-concurrency`` workers gives the request rate the client sustains.
2. **Cross-check** (``--guidellm PATH``, a GuideLLM >= 0.8 ``guidellm`` executable, installed in
   its own environment): for each concurrency level, e3bench serve and ``guidellm run --profile
   kind=concurrent`` send ``--requests`` requests of ``--prompt-tokens`` synthetic tokens asking
   ``--max-tokens`` tokens to the same server (``--url``, or the fake one); printed: the ratios
   e3bench / GuideLLM of TTFT p50, inter-token latency p50 (e3bench's TPOT p50; GuideLLM's
   "TPOT" divides the whole latency, TTFT included, by the tokens, so ITL is the like figure)
   and output tokens/s (target: within 10 %).

    PYTHONPATH=src:tests python benchmarks/serve_crosscheck.py [--guidellm /tmp/gl/bin/guidellm]
        [--url http://127.0.0.1:8000/v1 --model NAME --tokenizer DIR | --launch transformers --model smollm2-135m]
        [--concurrency 1,2,4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
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
    subprocess.run(cmd, check=True, cwd=out, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    m = json.loads(path.read_text())["benchmarks"][0]["metrics"]
    return {k: m[k]["successful"] for k in ("time_to_first_token_ms", "inter_token_latency_ms", "output_tokens_per_second")}


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
        server = stack.enter_context(launch.launched(argv, model, port, Path(tempfile.mkdtemp()) / "server.log"))
        url = server.url
    elif url is None:
        proc, url = fake_server(0.05, 0.01)
        model = "fake-model"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            print(f"{'level':>6} {'TTFT p50 ms (e3/GL)':>24} {'ITL p50 ms (e3/GL)':>22} {'out tok/s (e3/GL)':>22}  ratios")
            for c in args.concurrency:
                ours = e3bench_level(url, model, c, args, Path(tmp))
                gl = guidellm_level(args.guidellm, url, model, tokenizer, c, args, Path(tmp))
                pairs = [(ours.ttft_ms.p50, gl["time_to_first_token_ms"]["median"]),
                         (ours.itl_ms.p50, gl["inter_token_latency_ms"]["median"]),
                         (ours.output_tokens_per_s, gl["output_tokens_per_second"]["mean"])]  # fmt: skip
                cells = [f"{a:9.2f} / {b:9.2f}" for a, b in pairs]
                ratios = " ".join(f"{a / b:.3f}" if b else "n/a" for a, b in pairs)
                print(f"{'c=' + str(c):>6} {cells[0]:>24} {cells[1]:>22} {cells[2]:>22}  {ratios}")
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
