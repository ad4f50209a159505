"""Quality from the server under test: e3bench's generative tasks, scored by their own code,
with the generation done by the server through chat/completions.

:class:`HttpGenerator` is a backend for the task contract (:class:`e3bench.core.api.Backend`)
whose "tokens" are the prompt's Unicode code points: ``encode_context`` and ``decode`` round-trip
the task's prompt text exactly, so the server receives the very prompt the task built (as the
user message; the server applies its own chat template) and the task's scorer sees the
server's text, cut at the task's stop strings by the task itself. It does not score
log-likelihoods: tasks that need them are refused with "not supported by this server".
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import ClassVar

from pydantic import BaseModel

from e3bench.core.api import Capabilities, GenParams, Generation, LogLik
from e3bench.core.errors import E3Error
from e3bench.serve.client import request_body, stream_one

NOT_SUPPORTED = "not supported by this server"


class HttpGenerator:
    """Generation through an OpenAI-compatible server (see the module docstring)."""

    name: ClassVar[str] = "http"
    capabilities: ClassVar[Capabilities] = Capabilities(
        devices=frozenset({"server"}), precisions=frozenset({"server"}),
        architectures=frozenset({"decoder-only"}), streaming=True, loglikelihood=False,
    )  # fmt: skip
    Options: ClassVar[type[BaseModel]] = BaseModel

    def __init__(self, url: str, model: str, *, concurrency: int = 4, timeout_s: float = 300.0) -> None:
        self.url = url.rstrip("/")
        self.model = model
        self.concurrency = max(1, int(concurrency))
        self.timeout_s = timeout_s
        self.architecture = "decoder-only"
        self.device = "server"
        self.load_info = None
        self.context_length = None
        #: how many requests failed (their text counts as empty: the item is scored wrong)
        self.failed: list[str] = []

    # -- tokens are code points: the prompt text goes to the server unchanged
    def encode(self, text: str) -> list[int]:
        """Code points of ``text``."""
        return [ord(c) for c in text]

    def encode_context(self, text: str, *, max_new_tokens: int) -> tuple[list[int], bool]:
        """Code points of ``text``, never truncated (the server applies its own context rule)."""
        return self.encode(text), False

    def decode(self, token_ids: Sequence[int]) -> str:
        """The text of code points ``token_ids``."""
        return "".join(chr(i) for i in token_ids)

    def generate(self, prompts: Sequence[Sequence[int]], params: GenParams, on_token=None) -> list[Generation]:
        """One greedy chat completion per prompt, ``self.concurrency`` at a time; a failed
        request gives an empty text (scored wrong) and is counted in :attr:`failed`."""
        if not prompts:
            raise E3Error("no prompts to generate from", "pass at least one prompt")
        texts = asyncio.run(self._all([self.decode(p) for p in prompts], params))
        return [Generation([], t, "length") for t in texts]

    async def _all(self, prompts: list[str], params: GenParams) -> list[str]:
        import httpx

        sem = asyncio.Semaphore(self.concurrency)
        async with httpx.AsyncClient(timeout=self.timeout_s) as client:

            async def one(p: str) -> str:
                body = request_body(self.model, p, max_tokens=params.max_new_tokens, stop=list(params.stop))
                async with sem:
                    r = await stream_one(client, f"{self.url}/chat/completions", body)
                if r.error_kind is not None:
                    self.failed.append(r.error or r.error_kind)
                    if r.error_kind in ("connect", "not_streaming", "http_4xx"):
                        raise E3Error(f"quality task request failed: {r.error}", "check the server (its log)")
                return r.text

            return list(await asyncio.gather(*(one(p) for p in prompts)))

    def forward(self, prompts) -> None:
        """Not available through a server."""
        raise E3Error(f"a forward pass is {NOT_SUPPORTED}", "use e3bench run for encoder latency")

    def loglikelihood(self, requests) -> list[LogLik]:
        """Refused: chat/completions gives no prompt logprobs."""
        raise E3Error(f"log-likelihood scoring is {NOT_SUPPORTED} (no prompt logprobs)",
                      "use generative tasks (gsm8k, squad, jsonl_gen) with e3bench serve")  # fmt: skip

    loglikelihood_rolling = loglikelihood

    def synchronize(self) -> None:
        """Nothing to wait for: every call returns when the server answered."""

    def reset_peak_memory(self) -> None:
        """No device memory is visible through a server."""

    def peak_memory(self):
        """Not visible through a server."""
        return None, "not visible through an HTTP server"

    def close(self) -> None:
        """Nothing held."""


def check_task(task, spec: str) -> None:
    """:class:`E3Error` "not supported by this server" for a task that needs log-likelihoods."""
    needs = set(getattr(task, "requires", ()) or ())
    if needs & {"loglikelihood"} or not needs & {"generate"}:
        raise E3Error(f"task '{spec}' needs log-likelihood scoring, which is {NOT_SUPPORTED} "
                      "(chat/completions returns no prompt logprobs)",
                      "pick generative tasks such as gsm8k, squad or jsonl_gen")  # fmt: skip
