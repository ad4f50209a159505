"""One streamed chat/completions request, timed by the client: the only clock of ``serve``.

The request asks the server to stream (``stream: true``) and to report usage in its last chunk
(``stream_options.include_usage``). The clock (``core.timing.clock``) is read when the request
is handed to httpx (start), at every SSE ``data:`` chunk that carries text (token chunks) and
when ``[DONE]`` (or the end of the stream) arrives. TTFT = first token chunk − start; ITL = gaps
between token chunks (servers send one token per chunk; a chunk of several tokens is one gap);
E2E = end − start; TPOT = (E2E − TTFT) / (output tokens − 1).

Output tokens come from the server's streamed ``usage.completion_tokens`` where it sends one
(``tokens_source = "server usage"``), else from the client's tokenizer over the streamed text
(``"tokenizer"``), else the number of token chunks (``"chunks"``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from e3bench.core.timing import clock

#: error kinds a request can end with (``None``: it succeeded)
ERROR_KINDS = ("connect", "timeout", "http_4xx", "http_5xx", "not_streaming", "stream_broken", "bad_chunk")


@dataclass
class RequestResult:
    """One request as the client saw it: clock readings (seconds, ``core.timing.clock``), the
    text, token counts and, for a failed request, ``error_kind`` (one of :data:`ERROR_KINDS`)."""

    start_s: float
    token_times_s: list[float] = field(default_factory=list)
    end_s: float = float("nan")
    text: str = ""
    usage_output_tokens: int | None = None
    usage_prompt_tokens: int | None = None
    counted_output_tokens: int | None = None
    error_kind: str | None = None
    error: str | None = None
    status: int | None = None

    @property
    def ok(self) -> bool:
        """The request streamed to its end and produced at least one token."""
        return self.error_kind is None and bool(self.token_times_s)

    @property
    def output_tokens(self) -> int:
        """Server usage, else the tokenizer count, else the token chunks (see module docstring)."""
        for n in (self.usage_output_tokens, self.counted_output_tokens):
            if n is not None:
                return n
        return len(self.token_times_s)

    @property
    def tokens_source(self) -> str:
        """Which count :attr:`output_tokens` is: server usage, tokenizer or chunks."""
        if self.usage_output_tokens is not None:
            return "server usage"
        return "tokenizer" if self.counted_output_tokens is not None else "chunks"

    @property
    def ttft_ms(self) -> float | None:
        """First token chunk − start, ms."""
        return (self.token_times_s[0] - self.start_s) * 1e3 if self.token_times_s else None

    @property
    def e2e_ms(self) -> float:
        """End − start, ms."""
        return (self.end_s - self.start_s) * 1e3

    @property
    def itl_ms(self) -> list[float]:
        """Gaps between consecutive token chunks, ms."""
        t = self.token_times_s
        return [(b - a) * 1e3 for a, b in zip(t, t[1:])]

    @property
    def tpot_ms(self) -> float | None:
        """(E2E − TTFT) / (output tokens − 1), ms; None for one token."""
        n = self.output_tokens
        if not self.token_times_s or n < 2:
            return None
        return (self.end_s - self.token_times_s[0]) * 1e3 / (n - 1)


def request_body(model: str, prompt: str, *, max_tokens: int, chat: bool = True, ignore_eos: bool = False,
                 stop: list[str] | None = None, stream: bool = True) -> dict[str, Any]:  # fmt: skip
    """The JSON body of one greedy request (temperature 0). ``ignore_eos`` adds vLLM's and
    llama.cpp's ``ignore_eos`` / ``min_tokens`` so every request produces ``max_tokens``."""
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "temperature": 0.0}
    if chat:
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    if ignore_eos:
        body.update(ignore_eos=True, min_tokens=max_tokens)
    if stop:
        body["stop"] = list(stop)[:4]  # the OpenAI API takes at most 4 stop sequences
    return body


class BadChunk(ValueError):
    """A ``data:`` line that is not an OpenAI stream chunk (not JSON, not an object, ``choices``
    not a list of objects, a ``usage`` count that is not a count)."""


def _count(v: Any, what: str) -> int | None:
    """A token count from ``usage``: None where absent, else a whole number ≥ 0 (BadChunk)."""
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or v != int(v):
        raise BadChunk(f"usage.{what} is {json.dumps(v)[:40]}, not a count of tokens")
    return int(v)


def parse_chunk(data: str) -> tuple[str, bool, int | None, int | None]:
    """One ``data:`` payload → ``(text, finished, usage completion tokens, usage prompt tokens)``;
    :class:`BadChunk` naming what is wrong where it is not an OpenAI stream chunk."""
    try:
        obj = json.loads(data)
    except ValueError as exc:
        raise BadChunk(f"a stream chunk is not JSON ({exc}): {data[:60]!r}") from None
    if not isinstance(obj, dict):
        raise BadChunk(f"a stream chunk is a JSON {type(obj).__name__}, not an object: {data[:60]!r}")
    choices = obj.get("choices") or []
    if not isinstance(choices, list) or not all(isinstance(ch, dict) for ch in choices):
        raise BadChunk(f"a stream chunk's choices is not a list of objects: {data[:60]!r}")
    out = []
    for ch in choices:
        delta = ch.get("delta")
        piece = delta.get("content") if isinstance(delta, dict) else ch.get("text")
        if piece:
            out.append(str(piece))
    finished = any(ch.get("finish_reason") for ch in choices)
    usage = obj.get("usage")
    if not isinstance(usage, dict):
        return "".join(out), finished, None, None
    return ("".join(out), finished, _count(usage.get("completion_tokens"), "completion_tokens"),
            _count(usage.get("prompt_tokens"), "prompt_tokens"))  # fmt: skip


async def stream_one(client, url: str, body: dict[str, Any], *,
                     count_tokens: Callable[[str], int] | None = None) -> RequestResult:  # fmt: skip
    """Send ``body`` to ``url`` with the ``httpx.AsyncClient`` ``client`` and time the stream.

    Never raises for a request-level failure: the result's ``error_kind`` says what went wrong
    (refused connection, timeout, HTTP status, a JSON answer instead of a stream, a stream cut
    before ``[DONE]``). ``count_tokens`` (text → tokens) gives ``counted_output_tokens``.
    """
    import httpx

    r = RequestResult(start_s=clock())
    try:
        async with client.stream("POST", url, json=body) as resp:
            r.status = resp.status_code
            if resp.status_code >= 400:
                detail = (await resp.aread()).decode("utf-8", "replace")
                r.error_kind = "http_4xx" if resp.status_code < 500 else "http_5xx"
                r.error = f"HTTP {resp.status_code}: {_message(detail)}"
                return r
            if "text/event-stream" not in resp.headers.get("content-type", ""):
                await resp.aread()
                r.error_kind = "not_streaming"
                r.error = (f"the server answered {resp.headers.get('content-type') or 'no content type'} "
                           "instead of a text/event-stream")  # fmt: skip
                return r
            done = await _read_events(resp, r)
            if not done:
                r.error_kind, r.error = "stream_broken", "the stream ended before data: [DONE] or a finish_reason"
    except httpx.ConnectError as exc:
        r.error_kind, r.error = "connect", f"cannot connect ({exc})"
    except httpx.TimeoutException as exc:
        r.error_kind, r.error = "timeout", f"timed out ({type(exc).__name__})"
    except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
        r.error_kind, r.error = "stream_broken", f"the connection broke mid-stream ({type(exc).__name__})"
    except httpx.HTTPError as exc:  # any other transport failure (a bad encoding, a write error)
        r.error_kind, r.error = "stream_broken", f"the request failed ({type(exc).__name__}: {exc})"
    except BadChunk as exc:
        r.error_kind, r.error = "bad_chunk", str(exc)
    finally:
        r.end_s = clock()
    if r.error_kind is None and count_tokens is not None and r.text:
        r.counted_output_tokens = count_tokens(r.text)
    return r


async def _read_events(resp, r: RequestResult) -> bool:
    """Read SSE lines into ``r``; True when the stream ended properly: ``[DONE]`` arrived, or
    (``transformers serve`` sends no ``[DONE]``) a chunk with a ``finish_reason`` did."""
    parts: list[str] = []
    finished = False
    async for line in resp.aiter_lines():
        if not line.startswith("data:"):
            continue  # blank separators, comments (": ping"), event names
        data = line[5:].strip()
        if data == "[DONE]":
            r.text = "".join(parts)
            return True
        text, fin, n_out, n_in = parse_chunk(data)
        if text:
            r.token_times_s.append(clock())
            parts.append(text)
        finished = finished or fin
        if n_out is not None:
            r.usage_output_tokens, r.usage_prompt_tokens = n_out, n_in
    r.text = "".join(parts)
    return finished


def _message(detail: str) -> str:
    """The ``error.message`` of an OpenAI-style error body, else its first 200 characters."""
    try:
        obj = json.loads(detail)
        err = obj.get("error") if isinstance(obj, dict) else None
        msg = err.get("message") if isinstance(err, dict) else (err or obj.get("detail") or obj.get("message"))
        if msg:
            return str(msg)[:200]
    except (ValueError, AttributeError):
        pass
    return " ".join(detail.split())[:200]
