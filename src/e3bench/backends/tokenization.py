"""lm-evaluation-harness's tokenization and truncation, in one place, for every backend.

Every backend scores the same tokens as lm-eval's Hugging Face model (``HFLM``):

* :func:`encode_pair` is ``TemplateLM._encode_pair`` + ``HFLM.tok_encode``: trailing spaces of
  the context move to the continuation; a causal model encodes ``context`` and
  ``context + continuation`` and splits the whole encoding at ``len(context_enc)``; a seq2seq
  model encodes both parts separately; an empty context becomes the BOS (else EOS) token.
* :func:`split_causal` is lm-eval's causal truncation: the model input is
  ``(ctx + cont)[-(max_length + 1):][:-1]`` and its last ``len(cont)`` positions predict
  ``cont``. :func:`truncate_seq2seq` is the seq2seq rule (each side's last ``max_length``).
* :func:`rolling_windows` is ``get_rolling_token_windows`` + ``make_disjoint_window``
  (perplexity).
* :func:`resolve_max_length` is HFLM's ``max_length`` rule.
* :func:`generation_context` is ``HFLM.generate_until``'s input: the tokenizer's own special
  tokens (BOS on Llama, Gemma, Mistral) unless the text already starts with BOS, left-truncated
  to ``max_length - max_new_tokens`` tokens (decoder-only) or ``max_length`` (encoder-decoder).

The functions take any object with the slice of a Hugging Face tokenizer they use
(``encode(text, add_special_tokens=...)``, ``decode``, ``bos_token_id``, ``eos_token_id``), so
llama.cpp's tokenizer adapter goes through the same code. No heavy imports.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from e3bench.core.errors import E3Error

DEFAULT_MAX_LENGTH = 2048
#: transformers' "no limit" value of ``tokenizer.model_max_length``
TOKENIZER_INFINITY = 1000000000000000019884624838656
_SEQLEN_ATTRS = ("n_positions", "max_position_embeddings", "n_ctx")

Encoded = tuple[Sequence[int], Sequence[int]]  # (context token ids, continuation token ids)


def prefix_token_id(tokenizer) -> int:
    """The token standing in for an empty context (lm-eval: BOS, else EOS).

    Raises E3Error when the tokenizer has neither.
    """
    if tokenizer.bos_token_id is not None:
        return int(tokenizer.bos_token_id)
    if tokenizer.eos_token_id is None:
        raise E3Error(
            "the tokenizer has neither a BOS nor an EOS token, so an empty context cannot be scored",
            "give every request a non-empty context",
        )
    return int(tokenizer.eos_token_id)


def tok_encode(
    tokenizer, string: str, add_special_tokens: bool | None = None, add_bos_token: bool | None = None
) -> list[int]:
    """``HFLM.tok_encode``: tokenizer defaults unless told; no second BOS if the text has one."""
    kwargs: dict[str, bool] = {}
    if add_special_tokens is not None:
        kwargs["add_special_tokens"] = add_special_tokens
    elif add_bos_token is not None:
        kwargs["add_special_tokens"] = add_bos_token
    if add_special_tokens is None:
        bos = tokenizer.decode(prefix_token_id(tokenizer))
        if bos and string.startswith(bos):
            kwargs["add_special_tokens"] = False
    return list(tokenizer.encode(string, **kwargs))


def encode_pair(
    tokenizer,
    context: str,
    continuation: str,
    *,
    architecture: str = "decoder-only",
    add_bos_token: bool | None = None,
) -> tuple[list[int], list[int]]:
    """Token ids of ``(context, continuation)`` exactly as lm-eval's HF model computes them."""
    if context == "":
        cont = tok_encode(tokenizer, continuation, add_special_tokens=False)
        prefix = prefix_token_id(tokenizer)
        if not cont or prefix != cont[0]:
            return [prefix], cont
        return cont[:1], cont[1:]
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    if architecture == "encoder-decoder":
        ctx = tok_encode(tokenizer, context, add_bos_token=add_bos_token)
        cont = tok_encode(tokenizer, continuation, add_special_tokens=False)
        return ctx, cont
    whole = tok_encode(tokenizer, context + continuation, add_bos_token=add_bos_token)
    ctx = tok_encode(tokenizer, context, add_bos_token=add_bos_token)
    return ctx, whole[len(ctx) :]


def generation_context(
    tokenizer, text: str, *, max_length: int, max_new_tokens: int, architecture: str = "decoder-only"
) -> tuple[list[int], bool]:
    """``(token ids, truncated)`` of a generation prompt exactly as lm-eval's HF model builds
    them (``HFLM.generate_until`` → ``tok_batch_encode``): the tokenizer's defaults (its BOS, or
    a seq2seq tokenizer's EOS) unless a decoder's text starts with the BOS string, then only the
    last ``max_length - max_new_tokens`` tokens for a decoder (prompt and output share the
    context), the last ``max_length`` for an encoder-decoder. ``truncated``: tokens were cut.

    Raises E3Error when ``max_new_tokens`` leaves a decoder no room for any prompt token.
    """
    kwargs: dict[str, bool] = {}
    keep = max_length
    if architecture != "encoder-decoder":
        bos = getattr(tokenizer, "bos_token", None)
        if bos and text.startswith(bos):
            kwargs["add_special_tokens"] = False
        keep = max_length - max_new_tokens
        if keep <= 0:
            raise E3Error(
                f"generating {max_new_tokens} new tokens leaves no room for the prompt: the model's "
                f"maximum length is {max_length} tokens (prompt + generated)",
                f"ask for fewer than {max_length} new tokens (task option max_new_tokens=N), or use a "
                "model / backend context option with a longer context",
            )
    ids = list(tokenizer.encode(text, **kwargs))
    return ids[-keep:], len(ids) > keep


def resolve_max_length(config, tokenizer) -> int:
    """lm-eval's rule: the config's (``text_config`` first) ``n_positions`` /
    ``max_position_embeddings`` / ``n_ctx`` → ``tokenizer.model_max_length`` → 2048."""
    cfg = getattr(config, "text_config", None) or config
    for attr in _SEQLEN_ATTRS:
        value = getattr(cfg, attr, None)
        if value is not None:
            return int(value)
    mml = getattr(tokenizer, "model_max_length", None)
    if mml is not None and mml != TOKENIZER_INFINITY:
        return int(mml)
    return DEFAULT_MAX_LENGTH


def rolling_windows(
    tokens: Sequence[int], prefix_token: int, max_seq_len: int, context_len: int = 1
) -> list[tuple[list[int], list[int]]]:
    """lm-eval's ``get_rolling_token_windows`` followed by ``make_disjoint_window``:
    ``(context, continuation)`` pairs whose continuations cover ``tokens`` exactly once."""
    if not 1 <= context_len <= max_seq_len:
        raise ValueError("need 1 <= context_len <= max_seq_len")
    tokens = list(tokens)
    if not tokens:
        return []
    pred_len = max_seq_len - context_len + 1
    first = min(max_seq_len, len(tokens))
    pairs = [([prefix_token] + tokens[: first - 1], tokens[:first])]
    predicted = first
    while predicted < len(tokens):
        wlen = min(len(tokens) - predicted, pred_len)
        end = predicted + wlen
        pairs.append((tokens[max(0, end - max_seq_len - 1) : end - 1], tokens[end - wlen : end]))
        predicted += wlen
    return [(a[: len(a) - (len(b) - 1)], b) for a, b in pairs]


def check_requests(encoded: Sequence[Encoded], max_length: int) -> None:
    """The one validation of tokenized log-likelihood requests.

    Raises E3Error when a context or continuation is empty, or a continuation is longer than
    ``max_length`` (it could not be scored whole).
    """
    for ctx, cont in encoded:
        if len(ctx) == 0 or len(cont) == 0:
            raise E3Error(
                "a log-likelihood request has an empty context or continuation after tokenization",
                "check the task's prompt and choices (a choice must not be empty)",
            )
        if len(cont) > max_length:
            raise E3Error(
                f"a continuation of {len(cont)} tokens is longer than the model's maximum length {max_length}",
                "shorten the choices or use a model with a longer context",
            )


@dataclass(frozen=True)
class Split:
    """One causal request after lm-eval's truncation.

    The model input is ``prefix + suffix`` (at most ``max_length`` tokens); the logits at the
    ``len(suffix)`` positions of ``suffix`` predict ``targets`` (``len(targets) == len(suffix)``).
    ``prefix`` needs no logits, so requests sharing it (a question's choices) compute it once.
    """

    prefix: tuple[int, ...]
    suffix: tuple[int, ...]
    targets: tuple[int, ...]


def split_causal(encoded: Sequence[Encoded], max_length: int) -> list[Split]:
    """Cut each request with lm-eval's causal rule ``input = (ctx + cont)[-(max_length + 1):][:-1]``;
    one :class:`Split` per request, in order. Requests must have passed :func:`check_requests`
    (``Backend.loglikelihood_tokens`` does that once); ValueError otherwise."""
    out = []
    for ctx, cont in encoded:
        n = len(cont)
        if not ctx or not 0 < n <= max_length:
            raise ValueError("split_causal needs requests that passed check_requests")
        inp = (list(ctx) + list(cont))[-(max_length + 1) :][:-1]
        out.append(Split(tuple(inp[:-n]), tuple(inp[-n:]), tuple(cont)))
    return out


def truncate_seq2seq(ctx: Sequence[int], cont: Sequence[int], max_length: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """lm-eval's seq2seq rule: encoder input ``ctx[-max_length:]``, decoder targets
    ``cont[-max_length:]``."""
    return tuple(list(ctx)[-max_length:]), tuple(list(cont)[-max_length:])
