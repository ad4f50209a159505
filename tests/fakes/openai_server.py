"""A real, tiny, streaming OpenAI-compatible server for the serving tests (stdlib only).

It listens on 127.0.0.1 (a free port unless one is given), answers ``GET /v1/models``,
``GET /health`` and ``POST /v1/chat/completions`` / ``POST /v1/completions`` the way vLLM,
llama.cpp's ``llama-server`` and ``transformers serve`` do when asked to stream: HTTP/1.1
chunked ``text/event-stream``, one ``data: {json}`` line per token chunk, a last chunk carrying
``usage`` when the request has ``stream_options.include_usage``, then ``data: [DONE]``.

Its timing is known: the first token is sent ``ttft_s`` after the request body was read, each
next one ``itl_s`` after the previous, so a client's measured TTFT and ITL can be checked
against them. Faults for the fault tests (``mode``): ``ok``, ``error500`` / ``error400`` (every
completion request answers that status), ``nostream`` (one JSON body, no SSE), ``die_after=N``
(the process exits hard while streaming request N+1: a server dying mid-level), ``raw``
(``raw_events`` streamed verbatim: garbage chunks).

Run it as a process: ``python -m fakes.openai_server --port 0 --ttft 0.05 --itl 0.01`` prints
``READY <port>`` once it listens (tests read that line), or in a thread: :func:`serve_in_thread`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class FakeConfig:
    """What the fake server does: its model name, delays (seconds), reply and fault mode."""

    model: str = "fake-model"
    ttft_s: float = 0.05
    itl_s: float = 0.01
    #: the reply, one whitespace-separated word per token; cut to the request's max_tokens
    reply: str = " ".join(f"w{i}" for i in range(64))
    mode: str = "ok"
    #: prompt logprobs are never offered (log-likelihood tasks must be refused)
    usage: bool = True
    #: fault ``raw``: these ``data:`` payloads are streamed verbatim (garbage a broken server sends)
    raw_events: tuple[str, ...] = ()


class _State:
    def __init__(self, cfg: FakeConfig) -> None:
        self.cfg = cfg
        self.lock = threading.Lock()
        self.completions = 0
        self.bodies: list[dict] = []


def _prompt_words(body: dict) -> int:
    if "messages" in body:
        return sum(len(str(m.get("content", "")).split()) for m in body["messages"])
    return len(str(body.get("prompt", "")).split())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-openai/1"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the stdlib's name
        return None

    @property
    def state(self) -> _State:
        return self.server.state  # type: ignore[attr-defined]

    def _json(self, status: int, obj: dict) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            self._json(200, {"object": "list", "data": [{"id": self.state.cfg.model, "object": "model"}]})
        elif self.path == "/health":
            self._json(200, {"status": "ok"})
        else:
            self._json(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        t_read = time.monotonic()
        length = int(self.headers.get("Content-Length", "0"))
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self._json(400, {"error": {"message": "body is not JSON"}})
            return
        chat = self.path.endswith("/chat/completions")
        if not (chat or self.path.endswith("/completions")):
            self._json(404, {"error": {"message": f"no route {self.path}"}})
            return
        cfg = self.state.cfg
        with self.state.lock:
            self.state.completions += 1
            n_req = self.state.completions
            self.state.bodies.append(body)
        if body.get("model") != cfg.model:  # vLLM's answer to an unknown model
            self._json(404, {"error": {"message": f"The model `{body.get('model')}` does not exist.",
                                       "type": "NotFoundError", "code": 404}})  # fmt: skip
            return
        if cfg.mode in ("error500", "error400"):
            status = int(cfg.mode[-3:])
            self._json(status, {"error": {"message": f"fake server answers {status}"}})
            return
        words = cfg.reply.split()[: int(body.get("max_tokens") or body.get("max_completion_tokens") or 16)]
        usage = {"prompt_tokens": _prompt_words(body), "completion_tokens": len(words),
                 "total_tokens": _prompt_words(body) + len(words)}  # fmt: skip
        if cfg.mode == "nostream" or not body.get("stream"):
            time.sleep(cfg.ttft_s + cfg.itl_s * max(len(words) - 1, 0))
            text = " ".join(words)
            choice = {"index": 0, "finish_reason": "length",
                      **({"message": {"role": "assistant", "content": text}} if chat else {"text": text})}  # fmt: skip
            self._json(200, {"id": "x", "object": "chat.completion", "model": cfg.model,
                             "choices": [choice], "usage": usage})  # fmt: skip
            return
        if cfg.mode == "raw":
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for payload in cfg.raw_events:
                self._chunk(f"data: {payload}\n\n".encode())
            self._chunk(b"")
            return
        die_at = int(cfg.mode.split("=")[1]) + 1 if cfg.mode.startswith("die_after=") else None
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        due = t_read + cfg.ttft_s
        for i, w in enumerate(words):
            time.sleep(max(due - time.monotonic(), 0.0))
            if die_at is not None and n_req >= die_at and i == len(words) // 2:
                os._exit(3)  # the server process dies mid-stream
            piece = w if i == 0 else " " + w
            delta = {"content": piece} if chat else None
            choice = {"index": 0, "finish_reason": None, **({"delta": delta} if chat else {"text": piece})}
            self._event({"id": "x", "object": "chat.completion.chunk", "model": cfg.model, "choices": [choice]})
            due += cfg.itl_s
        last = {"index": 0, "finish_reason": "length", **({"delta": {}} if chat else {"text": ""})}
        self._event({"id": "x", "object": "chat.completion.chunk", "model": cfg.model, "choices": [last]})
        if cfg.usage and (body.get("stream_options") or {}).get("include_usage"):
            self._event({"id": "x", "object": "chat.completion.chunk", "model": cfg.model, "choices": [],
                         "usage": usage})  # fmt: skip
        self._chunk(b"data: [DONE]\n\n")
        self._chunk(b"")

    def _event(self, obj: dict) -> None:
        self._chunk(f"data: {json.dumps(obj)}\n\n".encode())

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        """A client that hangs up mid-stream is normal under load: no traceback for it."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, BrokenPipeError)):
            super().handle_error(request, client_address)


def make_server(cfg: FakeConfig, port: int = 0) -> ThreadingHTTPServer:
    """The server bound to 127.0.0.1:``port`` (0: a free port; ``server.server_address[1]``)."""
    server = _Server(("127.0.0.1", port), _Handler)
    server.daemon_threads = True
    server.state = _State(cfg)  # type: ignore[attr-defined]
    return server


@contextlib.contextmanager
def serve_in_thread(cfg: FakeConfig | None = None) -> Iterator[tuple[str, ThreadingHTTPServer]]:
    """``(base_url, server)`` of a fake server running in a thread of this process
    (``base_url`` ends in ``/v1``); shut down on exit."""
    server = make_server(cfg or FakeConfig())
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", server
    finally:
        server.shutdown()
        server.server_close()


def main(argv: list[str] | None = None) -> None:
    """Command line: run the fake server in this process until killed; prints ``READY <port>``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--model", default=FakeConfig.model)
    ap.add_argument("--ttft", type=float, default=FakeConfig.ttft_s)
    ap.add_argument("--itl", type=float, default=FakeConfig.itl_s)
    ap.add_argument("--mode", default="ok")
    ap.add_argument("--startup-delay", type=float, default=0.0, help="seconds before listening")
    a = ap.parse_args(argv)
    time.sleep(a.startup_delay)
    server = make_server(FakeConfig(model=a.model, ttft_s=a.ttft, itl_s=a.itl, mode=a.mode), a.port)
    print(f"READY {server.server_address[1]}", flush=True)
    server.serve_forever(poll_interval=0.05)


if __name__ == "__main__":
    sys.exit(main())
