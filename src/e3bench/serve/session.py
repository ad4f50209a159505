"""``e3bench serve`` end to end: server (given or launched) → prompts → meter and idle baseline
→ warm-up → one metered window per load level → quality tasks → the ``kind: serve`` record.

The record is written after every level, so a server that dies mid-way leaves the completed
levels on disk with the failed one and its error; the command then exits nonzero.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from e3bench.core.errors import E3Error
from e3bench.core.ids import run_id as new_run_id
from e3bench.core.ids import stable_hash, utc_now_iso
from e3bench.core.progress import Reporter, as_reporter
from e3bench.results.schema import ServeLevel, ServeRecord
from e3bench.serve import launch as launcher
from e3bench.serve.client import RequestResult, request_body, stream_one
from e3bench.serve.levels import first_error, summarize_level
from e3bench.serve.load import (ARRIVALS, Level, closed_loop, level_size_problem, open_loop, requests_for_rate,
                                schedule)

#: request errors after which a level cannot go on (the server is gone or cannot be measured)
FATAL = ("connect", "not_streaming")


@dataclass
class ServeSettings:
    """What ``e3bench serve`` was asked to do (the CLI's flags); times in seconds."""

    model: str
    url: str | None = None
    launch: str | None = None
    port: int | None = None
    concurrency: list[int] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)
    arrival: str = "poisson"
    seed: int = 0
    min_requests: int = 10
    min_seconds: float = 10.0
    warmup: int = 2
    prompt_tokens: int = 64
    max_tokens: int = 32
    prompts: str | None = None
    ignore_eos: bool = False
    slo: dict[str, float] = field(default_factory=dict)
    tasks: list[str] = field(default_factory=list)
    limit: int | None = None
    meter: str = "auto"
    idle_s: float = 5.0
    ready_timeout_s: float = 300.0
    request_timeout_s: float = 300.0
    device: str = "cpu"
    server_pid: int | None = None
    server_args: list[str] = field(default_factory=list)  # appended to a --launch command
    output_dir: Path = Path("results")
    sweep: str = "serve"

    def levels(self) -> list[Level]:
        """The load levels in order: concurrency levels, then rates."""
        return [Level("concurrency", c) for c in self.concurrency] + [Level("rate", r) for r in self.rates]

    def check(self) -> None:
        """:class:`E3Error` for settings that cannot run (all found before anything starts)."""
        if self.server_args and self.launch is None:
            raise E3Error("--server-arg is for a server e3bench launches", "drop --server-arg, or use --launch")
        if self.port is not None and self.launch is None:
            raise E3Error(f"--port {self.port} is for a server e3bench launches (a --url names its own port)",
                          "drop --port, or use --launch")  # fmt: skip
        if self.limit is not None and not self.tasks:
            raise E3Error(f"--limit {self.limit} limits --tasks, and no task was given", "drop --limit, or add --tasks")
        from e3bench.energy.meters import meter_choices

        if self.meter not in meter_choices():
            from e3bench.core.errors import unknown_name

            raise unknown_name("meter", self.meter, meter_choices())
        if (self.url is None) == (self.launch is None):
            raise E3Error("give either --url of a running server or --launch to start one",
                          "e.g. --url http://127.0.0.1:8000/v1 --model NAME, or --launch transformers --model smollm2-135m")  # fmt: skip
        if self.url is not None:
            check_url(self.url)
        if not self.levels() and not self.tasks:
            raise E3Error("no load levels and no tasks", "pass --concurrency 1,2,4 and/or --rate 0.5,1 (or --tasks)")
        if any(c < 1 for c in self.concurrency):
            raise E3Error(f"--concurrency {self.concurrency}: levels must be 1 or more", "e.g. --concurrency 1,2,4")
        for level in self.levels():
            if (problem := level_size_problem(level.kind, level.value, self.min_requests, self.min_seconds)) is not None:
                raise E3Error(problem, "lower --rate, --concurrency, --min-requests or --min-seconds")
        if self.arrival not in ARRIVALS:
            raise E3Error(f"--arrival {self.arrival!r} is unknown", f"use {' or '.join(ARRIVALS)}")
        if self.server_pid is not None:
            import psutil

            if not psutil.pid_exists(self.server_pid):
                raise E3Error(f"--server-pid {self.server_pid}: no such process",
                              "pass the pid of the server process (e.g. from `pgrep -f 'vllm serve'`)")  # fmt: skip
        for name in ("min_requests", "max_tokens", "prompt_tokens"):
            if getattr(self, name) < 1:
                raise E3Error(f"--{name.replace('_', '-')} {getattr(self, name)} must be 1 or more", "pass a positive count")
        if self.limit is not None and self.limit < 1:
            raise E3Error(f"--limit {self.limit} must be 1 or more", "pass the number of items per task, or leave --limit out")
        if self.warmup < 0:
            raise E3Error(f"--warmup {self.warmup} must be 0 or more", "pass the number of warm-up requests (0: none)")
        for flag, v, low in (("--min-seconds", self.min_seconds, 0.0), ("--idle-seconds", self.idle_s, 0.0),
                             ("--ready-timeout", self.ready_timeout_s, None), ("--request-timeout", self.request_timeout_s, None)):  # fmt: skip
            if not math.isfinite(v) or (v < 0 if low is not None else v <= 0):
                raise E3Error(f"{flag} {v:g} must be a finite number of seconds {'of 0 or more' if low is not None else 'above 0'}",
                              f"pass {flag} in seconds")  # fmt: skip
        from e3bench.core.devices import device_problem

        if (problem := device_problem(self.device)) is not None:
            raise E3Error(f"--device {problem}", "pass --device cpu or cuda (cuda:N) for the launched server")
        from e3bench.config.validate import check_output_dir

        for _, exc in check_output_dir(self.output_dir / self.sweep):
            raise exc
        try:  # made now, so that no measured level is lost to a folder that cannot be made later
            (self.output_dir / self.sweep).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise E3Error(f"cannot make the results folder {self.output_dir / self.sweep} ({exc.strerror})",
                          "choose a writable --output-dir") from None  # fmt: skip

    def identity(self) -> dict:
        """The settings as JSON (for the record and its hash)."""
        d = {k: v for k, v in self.__dict__.items() if k not in ("output_dir",)}
        return {**d, "output_dir": str(self.output_dir)}


def check_url(url: str) -> None:
    """:class:`E3Error` for a ``--url`` that is not an http(s) URL with a host (and a valid port)."""
    import httpx

    fix = "e.g. --url http://127.0.0.1:8000/v1"
    if not url.startswith(("http://", "https://")):
        raise E3Error(f"--url {url!r} is not an http(s) URL", fix)
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as exc:
        raise E3Error(f"--url {url!r} is not a valid URL ({exc})", fix) from None
    if not parsed.host:
        raise E3Error(f"--url {url!r} names no host", fix)
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise E3Error(f"--url {url!r}: port {parsed.port} is not between 1 and 65535", fix)


def run_serve(s: ServeSettings, progress: Reporter | None = None, *, log: Callable[[str], None] | None = None,
              ) -> tuple[ServeRecord, Path]:  # fmt: skip
    """Run the session; returns the record and where it was saved. Raises :class:`E3Error`
    (after saving what was measured) when a level failed or the server could not be used."""
    from e3bench.results import store

    s.check()
    rep = as_reporter(progress)
    ident = s.identity()
    rid = new_run_id(stable_hash(ident))
    rec = ServeRecord(run_id=rid, created_utc=utc_now_iso(), status="ok", url=s.url or "", model=s.model,
                      settings=ident, slo=s.slo)  # fmt: skip
    t_start = time.monotonic()
    path = store.record_path(s.output_dir, s.sweep, rid)
    with contextlib.ExitStack() as stack:
        if s.url:  # a wrong --url or --model fails before the tokenizer loads
            check_server(s.url.rstrip("/"), s.model)
        prompts, count_tokens, source = _prompts(s, rec)  # a bad --prompts fails before a server starts
        rec.settings["prompt_source"] = source
        url, model, pids = _server(s, rec, rid, stack, rep)
        rec.url = url
        window = stack.enter_context(_window(s, pids, rec))
        window.measure_idle(s.idle_s, "server loaded and idle", rep)
        rec.energy = window.run_info()
        _warm_up(s, url, model, prompts, count_tokens, rep)
        failure: str | None = None
        for i, level in enumerate(s.levels()):
            lv = _level(s, level, url, model, prompts, count_tokens, window, rep, start_index=i * 7)
            if lv.status == "failed" and rec.launch:
                lv.error = f"{lv.error} (server log: {rec.launch['log']})"
            rec.levels.append(lv)
            rec.duration_s = time.monotonic() - t_start
            store.save(rec, s.output_dir, s.sweep)  # what is measured is on disk before the next level
            if lv.status == "failed":
                failure = f"level {lv.label} failed: {lv.error}"
                break
        if failure is None and s.tasks:
            from e3bench.serve.tasks import run_tasks

            rec.effectiveness, warnings = run_tasks(s, url, model, window, rep, rid)
            rec.warnings.extend(warnings)
        if failure is not None:
            rec.status, rec.error = "failed", failure
        rec.duration_s = time.monotonic() - t_start
        store.save(rec, s.output_dir, s.sweep)
    if failure is not None:
        raise E3Error(f"{failure}; the {len(rec.levels) - 1} level(s) before it are kept in {path}",
                      "see the server's log; rerun the remaining levels once it is fixed")  # fmt: skip
    return rec, path


def _server(s: ServeSettings, rec: ServeRecord, rid: str, stack: contextlib.ExitStack, rep: Reporter):
    """``(base url, model name for requests, pids the estimate meter follows)``; launches the
    server when asked (stopped when ``stack`` closes)."""
    from e3bench.results import store

    if s.launch:
        port = launcher.pick_port(s.port)
        argv, model = launcher.command(s.launch, s.model, port, device=s.device)
        argv = [*argv, *s.server_args]  # e.g. --continuous-batching for transformers serve
        log_path = store.run_dir(s.output_dir, s.sweep) / "logs" / f"{rid}-server.log"
        with rep.stage(f"starting the server ({s.launch} serve on 127.0.0.1:{port}; log {log_path})"):
            server = stack.enter_context(launcher.launched(argv, model, port, log_path,
                                                           ready_timeout_s=s.ready_timeout_s))  # fmt: skip
        rec.launch = {"kind": s.launch, **server.info()}
        return server.url, model, [server.pid]
    url = (s.url or "").rstrip("/")  # checked by check_server before the prompts
    return url, s.model, [s.server_pid] if s.server_pid else []


def check_server(url: str, model: str) -> None:
    """:class:`E3Error` when ``url`` cannot be reached, or lists models without ``model``."""
    import httpx

    try:
        resp = httpx.get(f"{url}/models", timeout=10.0)
    except httpx.HTTPError as exc:
        raise E3Error(f"cannot reach the server at {url} ({type(exc).__name__}: {exc})",
                      "check --url (it ends in /v1) and that the server runs") from None  # fmt: skip
    if resp.status_code != 200:
        return  # not every server lists its models; the warm-up finds a wrong name
    try:
        names = [str(m.get("id")) for m in resp.json().get("data", [])]
    except (ValueError, AttributeError):
        return
    if names and model not in names:
        raise E3Error(f"the server at {url} does not serve model '{model}' (it serves: {', '.join(names[:5])})",
                      "pass one of those names with --model")  # fmt: skip


def _prompts(s: ServeSettings, rec: ServeRecord):
    """``(prompt texts, token counter or None, source)``: ``--prompts`` as in ``run`` when a
    tokenizer for the model can be loaded, else synthetic prompts of ``prompt_tokens`` words."""
    from e3bench.bench.prompts import load_prompts
    from e3bench.core.prose import SEED_TEXT

    tok = _tokenizer(s, rec)
    if tok is None:
        if s.prompts not in (None, "synthetic"):
            raise E3Error(f"--prompts {s.prompts} needs the model's tokenizer, which could not be loaded",
                          "pass --model as an alias, hub id or folder that e3bench can load")  # fmt: skip
        words = SEED_TEXT.split()
        texts = [" ".join(words[(k * 17 + i) % len(words)] for i in range(s.prompt_tokens)) for k in range(8)]
        return texts, None, f"synthetic: {s.prompt_tokens} words each (no tokenizer: word count, not tokens)"
    ps = load_prompts(lambda t: tok.encode(t, add_special_tokens=False), s.prompts, s.prompt_tokens)
    texts = [tok.decode(ids) for ids in ps.token_ids]
    return texts, (lambda t: len(tok.encode(t, add_special_tokens=False))), ps.source


def _tokenizer(s: ServeSettings, rec: ServeRecord):
    """The model's tokenizer (transformers) or None, with a warning saying why."""
    try:
        from transformers import AutoTokenizer

        from e3bench.backends.models import local_path, resolve

        path, _ = local_path(resolve(s.model))
        return AutoTokenizer.from_pretrained(path, trust_remote_code=False)  # a tokenizer never needs custom code here
    except Exception as exc:  # noqa: BLE001 - any failure means: no tokenizer, said so
        rec.warnings.append(f"no tokenizer for '{s.model}' ({type(exc).__name__}): token counts are the server's "
                            "usage, prompts are synthetic words")  # fmt: skip
        return None


@contextlib.contextmanager
def _window(s: ServeSettings, pids: list[int], rec: ServeRecord):
    """The metered window of the session; the estimate meter follows the server's processes."""
    from e3bench.energy.meters import make_meter
    from e3bench.energy.meters.null import NullMeter
    from e3bench.energy.window import MeteredWindow

    meter, why = make_meter(s.meter, device="cuda" if s.device.startswith("cuda") else "cpu")
    if getattr(meter, "name", "") == "estimate":
        meter.close()
        if pids:
            from e3bench.energy.meters.estimate import EstimateMeter

            meter, why = EstimateMeter(pids=pids), f"{why}; following the server's process tree (pid {pids[0]})"
        else:
            meter = NullMeter()
            why = f"{why}; not measured: the estimate meter needs the server's pid (--server-pid) for a --url server"
            rec.warnings.append(why)
    window = MeteredWindow(meter, meter_reason=why)
    try:
        yield window
    finally:
        window.close()


def _client(s: ServeSettings, n: int):
    import httpx

    return httpx.AsyncClient(timeout=httpx.Timeout(s.request_timeout_s, connect=10.0),
                             limits=httpx.Limits(max_connections=max(n, 1), max_keepalive_connections=max(n, 1)))  # fmt: skip


def _sender(s: ServeSettings, client, url: str, model: str, count_tokens):
    async def send(prompt: str) -> RequestResult:
        body = request_body(model, prompt, max_tokens=s.max_tokens, ignore_eos=s.ignore_eos)
        return await stream_one(client, f"{url}/chat/completions", body, count_tokens=count_tokens)

    return send


def _warm_up(s: ServeSettings, url: str, model: str, prompts, count_tokens, rep: Reporter) -> None:
    """``s.warmup`` requests, one after another, outside any window; the first failure of a
    kind that no level could survive (refused, 4xx, 5xx, not streaming) stops the session."""
    if s.warmup < 1:
        return

    async def go() -> list[RequestResult]:
        async with _client(s, 1) as client:
            send = _sender(s, client, url, model, count_tokens)
            return [await send(prompts[i % len(prompts)]) for i in range(s.warmup)]

    with rep.stage(f"warm-up: {s.warmup} request(s)"):
        results = asyncio.run(go())
    bad = first_error(results)
    if bad is not None and bad.error_kind is not None:
        raise E3Error(f"the server at {url} failed the warm-up request: {bad.error}",
                      _fix(bad.error_kind))  # fmt: skip


def _fix(kind: str) -> str:
    return {
        "http_4xx": "check --model (the name the server serves) and the URL",
        "http_5xx": "the server failed: see its log",
        "not_streaming": "use a server that streams (stream: true, text/event-stream); e3bench times tokens as they arrive",
        "connect": "check --url and that the server runs",
        "timeout": "raise --request-timeout, or lower --max-tokens",
        "bad_chunk": "point --url at an OpenAI-compatible server (its stream sends chat.completion.chunk objects)",
    }.get(kind, "see the server's log")


def _level(s: ServeSettings, level: Level, url: str, model: str, prompts, count_tokens, window, rep: Reporter,
           *, start_index: int) -> ServeLevel:  # fmt: skip
    """Run and meter one level; a level whose requests show the server gone is marked failed."""
    n = int(level.value) if level.kind == "concurrency" else 256

    async def go():
        async with _client(s, n) as client:
            send = _sender(s, client, url, model, count_tokens)
            if level.kind == "concurrency":
                return await closed_loop(send, prompts, int(level.value), min_requests=s.min_requests,
                                         min_seconds=s.min_seconds, start_index=start_index)  # fmt: skip
            k = requests_for_rate(level.value, s.min_requests, s.min_seconds)
            return await open_loop(send, prompts, schedule(level.value, k, s.arrival, s.seed), start_index=start_index)

    with rep.stage(f"load level {level.label}: ≥{s.min_requests} requests and ≥{s.min_seconds:g} s"):
        cpu0 = time.process_time()
        with window.open(level.label) as m:
            results, duration = asyncio.run(go())
        cpu_s = time.process_time() - cpu0
    lens = [count_tokens(p) for p in prompts] if count_tokens else None
    lv = summarize_level(level, results, duration, slo=s.slo, arrival=s.arrival,
                         prompt_tokens=(lambda i: lens[(start_index + i) % len(lens)]) if lens else None)  # fmt: skip
    lv.energy = window.summarize(m.reading, input_tokens=lv.input_tokens, output_tokens=lv.output_tokens,
                                 requests=lv.requests_ok)  # fmt: skip
    lv.client_cpu_s = cpu_s
    lv.client_cpu_utilisation = cpu_s / m.elapsed_s if m.elapsed_s > 0 else None
    fatal = [r for r in results if r.error_kind in FATAL or r.error_kind == "stream_broken"]
    if fatal and (lv.requests_ok == 0 or any(r.error_kind in FATAL for r in fatal)):
        lv.status, lv.error = "failed", f"{fatal[0].error} ({len(fatal)} of {len(results)} requests)"
    elif lv.requests_ok == 0:
        bad = first_error(results)
        why = (bad.error or "the server streamed no text (0 tokens)") if bad else "no requests"
        lv.status, lv.error = "failed", f"no request completed: {why}"
    return lv

