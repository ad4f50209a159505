"""The shared half of every built-in backend: :class:`BaseBackend`.

A backend subclasses it and writes only what is its own (lm-eval's ``TemplateLM`` idea):

* ``_load`` — read the model, set ``self.tokenizer`` and ``self.max_length``, return LoadInfo.
  :meth:`BaseBackend.load` checks ``capabilities`` first (once, here) and records
  ``architecture`` / ``device`` / ``load_info`` after.
* ``_generate`` / ``_forward`` — :meth:`generate` and :meth:`forward` refuse empty prompts and
  batches (and generation on encoder-only models) before calling them.
* Scoring — :meth:`loglikelihood` and :meth:`loglikelihood_rolling` tokenize with
  :mod:`e3bench.backends.tokenization` (lm-eval's rules), :meth:`loglikelihood_tokens` validates
  once and calls ``_score``. The default ``_score`` is the prefix-grouped loop for backends that
  compute logits themselves (ONNX Runtime, llama.cpp): a question's shared context runs once
  (``_prefix_state``), each distinct choice reuses it (``_suffix_logits``). The PyTorch and vLLM
  backends override ``_score`` with their batched scorers.

Options: each backend declares ``Options`` (a pydantic model, ``extra="forbid"``) and is built as
``cls(options, cache_dir=..., threads=...)``; :func:`e3bench.backends.factory.make_backend`
validates a dict into it. numpy is imported only where logits are scored, so importing a backend
module stays cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from e3bench.backends.tokenization import (
    DEFAULT_MAX_LENGTH,
    Encoded,
    check_requests,
    encode_pair,
    generation_context,
    prefix_token_id,
    rolling_windows,
    split_causal,
    tok_encode,
)
from e3bench.core.api import Capabilities, Generation, GenParams, LoadInfo, LogLik, ModelSpec, OnToken, PeakMemory
from e3bench.core.errors import E3Error
from e3bench.core.host import resolve_threads

#: Generation batches when none is given, length-sorted: 16 prompts on every device. On the CPU a
#: decode step reads every weight once, whatever the batch: SmolLM2-135M fp32, one thread, quiet
#: machine (2026-12-01): 113 ms a step for one row, 222 ms for 8 (28 ms a token), so a step costs
#: ~113 ms + ~14 ms a row; finished rows leave the batch (PyTorch: backends/greedy.py; onnxrt and
#: llama.cpp: their loops), so rows that run long (GSM8K 0-shot: a quarter of the answers run to
#: 256 tokens, the rest stop within ~70) share their steps with more of their kind in a larger
#: batch. The padded prefill and the key/value cache grow with it (8B model, 16 x 512 tokens: ~1 GB).
CPU_BATCH_SIZE = 16
ACCEL_BATCH_SIZE = 16
#: Log-likelihood scoring batches (contexts per forward pass, length-sorted, at most
#: ``hf_scorer.DEFAULT_TOKEN_BUDGET`` padded tokens) when none is given, on every device: on the
#: CPU too, a forward pass over 16 short contexts costs less per token than one at a time (the
#: matrix products get more rows), and shared stems and prefixes are still computed once.
SCORE_BATCH_SIZE = 16


def default_batch_size(device: str) -> int:
    """Requests per batch for task generation on ``device`` ("cpu", "cuda:0", ...)."""
    return CPU_BATCH_SIZE if str(device or "cpu").startswith("cpu") else ACCEL_BATCH_SIZE


def default_score_batch_size(device: str) -> int:
    """Contexts per log-likelihood scoring batch on ``device`` when none is given."""
    return SCORE_BATCH_SIZE


class NoOptions(BaseModel):
    """The options of a backend that has none of its own."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class BaseBackend:
    """Shared parts of the built-in backends; see the module docstring for what a subclass writes.

    Attributes readable by everyone (the :class:`~e3bench.core.api.Backend` contract):
    ``architecture``, ``device`` and ``load_info`` (set by :meth:`load`). Internal to backends:
    ``options``, ``cache_dir``, ``threads``, ``tokenizer`` (a Hugging Face tokenizer or an
    adapter with the same slice), ``max_length`` (the longest scored input, lm-eval's rule).
    """

    name: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    Options: ClassVar[type[BaseModel]] = NoOptions
    #: the fix printed when ``capabilities`` rule a load out
    capability_fix: ClassVar[str] = "choose a supported --dtype / --device"

    def __init__(self, options: BaseModel | None = None, *, cache_dir: str | None = None, threads: int | None = None):
        if options is None:
            options = self.Options()
        elif not isinstance(options, self.Options):
            raise TypeError(
                f"{type(self).__name__} takes {self.Options.__qualname__} options, got {type(options).__name__} "
                "(build backends from a dict with e3bench.backends.factory.make_backend)"
            )
        self.options = options
        self.cache_dir = cache_dir
        #: the run's one thread count (:func:`e3bench.core.host.resolve_threads`: ``threads`` when
        #: given, else the rule every backend and executor applies), never "the library's default"
        self.threads = resolve_threads(threads)[0]
        self.architecture = ""
        self.device = ""
        self.load_info: LoadInfo | None = None
        self.tokenizer: Any = None
        self.max_length = DEFAULT_MAX_LENGTH
        #: requests per scoring batch: a number, "auto" (largest that fits) or None (device default)
        self.score_batch_size: int | str | None = None
        #: how each scoring batch size was chosen → times used (reset by the task engine per task)
        self.score_batches_used: dict[str, int] = {}
        self._auto_batches: dict[int, tuple[int, str]] = {}
        self._setup()

    def _setup(self) -> None:
        """Hook: a backend's own state before :meth:`load` (engines, sessions, notes). The
        constructor's signature is the contract's, so subclasses do not override ``__init__``."""

    # ----------------------------------------------------------------------- loading
    def load(self, model: ModelSpec, precision: str, device: str) -> LoadInfo:
        """Check ``capabilities`` (E3Error listing what is supported), then ``_load``."""
        reason = self.capabilities.check(device=device, precision=self.precision_key(precision))
        if reason:
            raise E3Error(f"{self.name} backend: {reason}", self.capability_fix)
        info = self._load(model, precision, device)
        self.architecture, self.device, self.load_info = info.architecture, info.device, info
        return info

    @property
    def context_length(self) -> int | None:
        """See :attr:`e3bench.core.api.Backend.context_length`: the model's trained context
        (``LoadInfo.max_positions``) unless the backend narrows it; None before ``load``."""
        return None if self.load_info is None else self.load_info.max_positions

    def threads_in_use(self) -> dict[str, int]:
        """The CPU thread counts the loaded engine reports, read back from it (setting → count,
        e.g. ``{"torch.get_num_threads()": 2}``); empty where the backend has none to report.
        The runner records them and warns when one differs from the run's thread count."""
        return {}

    def precision_key(self, precision: str) -> str:
        """The name ``capabilities`` knows ``precision`` by (llama.cpp: case-insensitive)."""
        return precision

    def _load(self, model: ModelSpec, precision: str, device: str) -> LoadInfo:
        raise NotImplementedError

    # ------------------------------------------------------------------------ tokens
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens."""
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def encode_context(self, text: str, *, max_new_tokens: int) -> tuple[list[int], bool]:
        """See :meth:`e3bench.core.api.Backend.encode_context` (lm-eval's ``generate_until``
        input: :func:`~e3bench.backends.tokenization.generation_context`)."""
        return generation_context(
            self.tokenizer, text, max_length=self.generation_max_length(), max_new_tokens=max_new_tokens,
            architecture=self.architecture,
        )  # fmt: skip

    def generation_max_length(self) -> int:
        """The most tokens prompt + output may hold (lm-eval's ``max_length`` for generation):
        ``max_length`` unless a backend scores with less room than it generates with (vLLM)."""
        return self.max_length

    def decode(self, token_ids: Sequence[int]) -> str:
        """Text of ``token_ids`` without special tokens."""
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True)

    # -------------------------------------------------------------------- generation
    def _check_prompts(self, prompts: Sequence[Sequence[int]], what: str) -> None:
        if len(prompts) == 0:
            raise E3Error(f"{self.name}: {what} got an empty batch", "pass at least one prompt")
        if any(len(p) == 0 for p in prompts):
            raise E3Error(f"{self.name}: an empty prompt cannot be {what}", "give every prompt at least one token")

    def generate(
        self, prompts: Sequence[Sequence[int]], params: GenParams, on_token: OnToken | None = None
    ) -> list[Generation]:
        """See :meth:`e3bench.core.api.Backend.generate`."""
        self._check_prompts(prompts, "continued")
        if self.architecture == "encoder-only":
            raise E3Error(
                "encoder-only models do not generate text",
                "the runner measures forward latency for them; use a decoder or encoder-decoder model",
            )
        return self._generate(prompts, params, on_token)

    def forward(self, prompts: Sequence[Sequence[int]]) -> None:
        """See :meth:`e3bench.core.api.Backend.forward`."""
        self._check_prompts(prompts, "run forward")
        self._forward(prompts)

    def _generate(self, prompts, params: GenParams, on_token: OnToken | None) -> list[Generation]:
        raise NotImplementedError

    def _forward(self, prompts) -> None:
        raise NotImplementedError

    # ----------------------------------------------------------------------- scoring
    def _check_scoring(self) -> None:
        if self.architecture == "encoder-only":
            raise E3Error(
                "log-likelihood scoring needs a model that predicts tokens (decoder-only or "
                "encoder-decoder); an encoder-only model has no language-model head to score text",
                "fine-tune a classification head first (`e3bench finetune`, SuperGLUE tasks) and "
                "evaluate that, or pick a decoder-only / encoder-decoder model",
            )

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[LogLik]:
        """See :meth:`e3bench.core.api.Backend.loglikelihood`."""
        self._check_scoring()
        encoded = [encode_pair(self.tokenizer, c, x, architecture=self.architecture) for c, x in requests]
        return self.loglikelihood_tokens(encoded)

    def loglikelihood_tokens(self, encoded: Sequence[Encoded]) -> list[LogLik]:
        """Score already tokenized ``(context ids, continuation ids)`` pairs, in order.
        Validates once (:func:`~e3bench.backends.tokenization.check_requests`), then ``_score``."""
        self._check_scoring()
        check_requests(encoded, self.max_length)
        return self._score(encoded) if encoded else []

    def loglikelihood_rolling(self, texts: Sequence[str], *, max_length: int | None = None) -> list[LogLik]:
        """See :meth:`e3bench.core.api.Backend.loglikelihood_rolling`."""
        self._check_scoring()
        window = self.max_length if max_length is None else int(max_length)
        if not 1 <= window <= self.max_length:
            raise E3Error(
                f"{self.name}: rolling window of {window} tokens; this backend scores at most "
                f"{self.max_length} tokens at once",
                "use a smaller max_length (or a larger context option of the backend)",
            )
        prefix = prefix_token_id(self.tokenizer)
        windows: list[Encoded] = []
        owner: list[int] = []
        for i, text in enumerate(texts):
            for pair in rolling_windows(tok_encode(self.tokenizer, text), prefix, window):
                windows.append(pair)
                owner.append(i)
        totals = [0.0] * len(texts)
        greedy = [True] * len(texts)
        counts = [0] * len(texts)
        for i, ll in zip(owner, self.loglikelihood_tokens(windows), strict=True):
            totals[i] += ll.logprob
            greedy[i] = greedy[i] and ll.is_greedy
            counts[i] += ll.n_tokens
        return [LogLik(t, g, n) for t, g, n in zip(totals, greedy, counts, strict=True)]

    def score_batch(self, longest: int) -> int:
        """Requests per scoring batch for inputs of at most ``longest`` tokens: ``score_batch_size``
        when a number; when ``auto``, :meth:`_auto_score_batch` (found once per length bucket,
        :func:`e3bench.backends.batch_auto.bucket`); unset, the device's default. How it was chosen
        is counted in ``score_batches_used`` (the task's record says it)."""
        want = self.score_batch_size
        if want == "auto":
            from e3bench.backends.batch_auto import bucket

            key = bucket(longest)
            if key not in self._auto_batches:
                self._auto_batches[key] = self._auto_score_batch(key)
            n, how = self._auto_batches[key]
        elif isinstance(want, int):
            n, how = want, f"{want} (--score-batch-size)"
        else:
            n = default_score_batch_size(self.device)
            how = f"{n} (default on {str(self.device or 'cpu').partition(':')[0]})"
        self.score_batches_used[how] = self.score_batches_used.get(how, 0) + 1
        return n

    def _auto_score_batch(self, length: int) -> tuple[int, str]:
        """``auto`` for a backend that scores without batching (the prefix-grouped loop below):
        its default, said so. Batching backends override it (PyTorch)."""
        n = default_batch_size(self.device)
        return n, f"auto: {n} (the {self.name} backend scores request by request; batch size does not apply)"

    def _score(self, encoded: Sequence[Encoded]) -> list[LogLik]:
        """Prefix-grouped scoring through ``_prefix_state`` / ``_suffix_logits`` (causal only)."""
        splits = split_causal(encoded, self.max_length)
        results: list[LogLik | None] = [None] * len(splits)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, s in enumerate(splits):
            groups.setdefault(s.prefix, []).append(i)
        for prefix, members in groups.items():
            state = self._prefix_state(prefix)
            done: dict[tuple, LogLik] = {}
            for i in members:
                s = splits[i]
                key = (s.suffix, s.targets)
                if key not in done:
                    done[key] = score_rows(log_softmax(self._suffix_logits(state, prefix, s.suffix)), s.targets)
                results[i] = done[key]
        return results  # type: ignore[return-value]

    def _prefix_state(self, prefix: tuple[int, ...]) -> Any:
        """Evaluate ``prefix`` (may be empty) once; return what ``_suffix_logits`` continues from."""
        raise NotImplementedError

    def _suffix_logits(self, state: Any, prefix: tuple[int, ...], suffix: tuple[int, ...]):
        """Logits ``[len(suffix), vocab]`` at the positions of ``suffix`` following ``prefix``."""
        raise NotImplementedError

    # ------------------------------------------------------------------------ device
    def synchronize(self) -> None:
        """No-op: every call of this backend returns when its results are on the host."""
        return None

    def reset_peak_memory(self) -> None:
        """No-op where there is no peak counter."""
        return None

    def peak_memory(self) -> PeakMemory:
        """``(None, why)``: this backend has no device memory counter."""
        return None, f"not available: the {self.name} backend has no device peak-memory counter"

    def close(self) -> None:
        """Drop the tokenizer; subclasses free their model first."""
        import gc

        self.tokenizer = None
        gc.collect()


# --------------------------------------------------------------------------- numerics
def log_softmax(x):
    """Row-wise log-softmax of logits ``[n, vocab]`` in float64 (numpy)."""
    import numpy as np

    x = np.asarray(x, dtype=np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def score_rows(logprob_rows, targets: Sequence[int]) -> LogLik:
    """:class:`LogLik` of ``targets`` from log-softmax rows ``[len(targets), vocab]`` (numpy)."""
    import numpy as np

    tgt = np.asarray(targets)
    lp = float(logprob_rows[np.arange(len(tgt)), tgt].sum())
    greedy = bool((logprob_rows.argmax(axis=-1) == tgt).all())
    return LogLik(logprob=lp, is_greedy=greedy, n_tokens=len(tgt))
