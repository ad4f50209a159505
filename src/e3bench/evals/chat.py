"""Chat-formatted task prompts (``--chat-template``, ``--model-args chat_template=on``; lm-eval's
``--apply_chat_template``): instruct models are scored and prompted as they were trained to be
talked to.

As lm-eval does it, each task prompt (the context of a log-likelihood request, the input of a
generation) becomes one user message rendered by the tokenizer's own chat template with the
assistant's turn opened (``add_generation_prompt=True``); the continuation that is scored stays
plain text after it. Rolling log-likelihoods (perplexity) are not templated (lm-eval neither).
Off by default: the record's model notes and the config say when it was on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from e3bench.core.api import Backend, LogLik
from e3bench.core.errors import E3Error


def render(tokenizer: Any, text: str) -> str:
    """``text`` as one user turn in ``tokenizer``'s chat template, the assistant's turn opened."""
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)


def template_of(backend: Backend) -> str:
    """The chat template of ``backend``'s tokenizer, or :class:`E3Error` (one line) when it has none."""
    tok = getattr(backend, "tokenizer", None)
    template = getattr(tok, "chat_template", None)
    if not template or not callable(getattr(tok, "apply_chat_template", None)):
        raise E3Error(f"chat_template is on, but the model's tokenizer ({getattr(backend, 'name', 'backend')} backend) "
                      "has no chat template", "drop --chat-template (chat_template=off) for a base model")  # fmt: skip
    return str(template)


class ChatTemplated:
    """``backend`` with task prompts in its tokenizer's chat template (see the module doc); every
    other attribute is the backend's own."""

    def __init__(self, backend: Backend) -> None:
        template_of(backend)  # fail before any task runs
        self._backend = backend

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[LogLik]:
        """Log-likelihood of each continuation after its context rendered as a user turn."""
        tok = self._backend.tokenizer
        return self._backend.loglikelihood([(render(tok, ctx), cont) for ctx, cont in requests])

    def encode_context(self, text: str, *, max_new_tokens: int) -> tuple[list[int], bool]:
        """The generation input ``text`` rendered as a user turn, encoded as the backend does."""
        return self._backend.encode_context(render(self._backend.tokenizer, text), max_new_tokens=max_new_tokens)
