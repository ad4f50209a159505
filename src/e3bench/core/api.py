"""The extension points of e3bench: the one page a plugin author reads.

Four Protocols — :class:`Backend`, :class:`EnergyMeter`, :class:`Task`, :class:`Executor` —
plus the small value types they exchange. Built-ins register in the one registry
(:mod:`e3bench.core.registry`) the same way plugins do, which use the entry-point groups
``e3bench.backends``, ``e3bench.meters``, ``e3bench.tasks``, ``e3bench.executors`` and
``e3bench.trackers`` (``e3bench plugins`` lists them all; docs/plugins.md shows an example).

Rules every implementation follows (docs/architecture.md, "Measurement rules"):

* Backends never time themselves. The runner brackets every call with
  ``backend.synchronize()`` and its own clock; a backend only *signals* progress through the
  ``on_token`` callback it is handed, and the runner reads the clock inside that callback.
* Meters report how a figure was obtained (``method`` = ``measured`` | ``estimated``) and
  which sensor or model produced it. They never mix the two silently.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal, Protocol, runtime_checkable

from e3bench.core.devices import device_kind
from e3bench.core.errors import MissingExtra

if TYPE_CHECKING:
    from pydantic import BaseModel

Architecture = Literal["decoder-only", "encoder-decoder", "encoder-only"]
ARCHITECTURES: tuple[str, ...] = ("decoder-only", "encoder-decoder", "encoder-only")


# --------------------------------------------------------------------------- models
@dataclass(frozen=True)
class ModelSpec:
    """A resolved model: where its weights are and how they are stored."""

    name: str  # what the user typed (alias, hub id, path)
    source: Literal["alias", "hub", "local-dir", "gguf"]
    path: str  # hub id or local directory
    gguf_file: str | None = None  # file name inside ``path`` for GGUF models
    revision: str | None = None
    #: the user allowed the model's own Python code to run (``--trust-remote-code``); backends
    #: pass it to every loader (transformers, vLLM) and must refuse such models otherwise
    trust_remote_code: bool = False


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do. Sweeps and tasks check these instead of lists of names."""

    devices: frozenset[str]
    precisions: frozenset[str]
    architectures: frozenset[str]
    streaming: bool = False  # per-token ``on_token`` callbacks are real, not synthesised
    loglikelihood: bool = False
    batching: bool = True
    #: optional narrowing per device, e.g. {"cpu": {"fp32", "bf16"}}; devices absent → all
    precisions_by_device: tuple[tuple[str, frozenset[str]], ...] = ()
    #: precisions that need an optional package: ``(precision, module, extra)``, e.g.
    #: ``("int8", "torchao", "quant")``; checked without importing (:meth:`missing_extra`)
    precision_extras: tuple[tuple[str, str, str], ...] = ()

    def precisions_on(self, device: str) -> frozenset[str]:
        """The precisions this backend runs on ``device`` (``cuda:1`` is a ``cuda`` device)."""
        return dict(self.precisions_by_device).get(device_kind(device), self.precisions)

    def missing_extra(self, precision: str) -> MissingExtra | None:
        """The :class:`~e3bench.core.errors.MissingExtra` for a ``precision`` whose package is
        not installed here (found with ``importlib.util.find_spec``, nothing imported), or None."""
        import importlib.util

        for p, module, extra in self.precision_extras:
            if p == precision and importlib.util.find_spec(module) is None:
                return MissingExtra(module, extra, f"precision '{precision}'")
        return None

    def check(self, *, device: str, precision: str) -> str | None:
        """Return a reason this combination is impossible, or None (``device``: ``cpu``,
        ``cuda`` or ``cuda:N``, checked by its kind)."""
        if device_kind(device) not in self.devices:
            return f"device '{device}' not supported (supported: {', '.join(sorted(self.devices))})"
        allowed = self.precisions_on(device)
        if precision not in allowed:
            return (
                f"precision '{precision}' not supported on {device} "
                f"(supported on {device}: {', '.join(sorted(allowed))})"
            )
        return None


@dataclass(frozen=True)
class LoadInfo:
    """What ``Backend.load`` found out about the loaded model (no timings: the runner times)."""

    architecture: str  # one of ARCHITECTURES
    model_type: str  # transformers' model_type, or the GGUF general.architecture
    parameters: int  # number of parameters (tied weights counted once)
    weights_bytes: int  # bytes of weights read per decode step (roofline numerator)
    dtype: str  # the precision that runs (a GGUF type name for llama.cpp)
    device: str  # the device string, e.g. "cpu", "cuda:0", "cuda"
    vocab_size: int
    max_positions: int | None = None  # the model's trained context length, when known
    notes: tuple[str, ...] = ()  # one line each: caches used, quantizer, providers, ...


# ----------------------------------------------------------------------- generation
@dataclass(frozen=True)
class GenParams:
    """Generation settings. Speed runs use fixed length: ``min_new_tokens == max_new_tokens``.

    ``ignore_eos=True`` (speed runs) suppresses EOS for all ``max_new_tokens`` steps; otherwise
    EOS is suppressed until ``min_new_tokens`` and then ends the sequence. ``stop`` strings end a
    sequence once its decoded text contains one of them.
    """

    max_new_tokens: int = 32
    min_new_tokens: int | None = None
    ignore_eos: bool = True
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()


@dataclass
class Generation:
    """One generated continuation.

    ``token_ids``: the generated tokens only (never the prompt), in order. The EOS token that
    ended a sequence is NOT included, nor is padding after it; a sequence ended by a stop string
    keeps the tokens up to and including the one that completed the stop string.
    ``text``: ``decode(token_ids)`` without special tokens, cut before the first stop string.
    ``finish_reason``: ``"length"`` (``max_new_tokens`` reached), ``"eos"`` or ``"stop"``.
    """

    token_ids: list[int]
    text: str
    finish_reason: Literal["length", "eos", "stop"] = "length"


#: Called by a backend once per decode step, with the number of new tokens now available for
#: every sequence in the batch (1, 2, 3, ...). The *runner* reads the clock inside it.
OnToken = Callable[[int], None]


@dataclass(frozen=True)
class LogLik:
    """Log-likelihood of a continuation given a context (or of a whole text, rolling).

    ``logprob``: sum of the natural-log probabilities of the scored tokens (≤ 0).
    ``is_greedy``: every scored token was the argmax of its distribution.
    ``n_tokens``: number of scored tokens (the continuation's, or the whole text's).
    """

    logprob: float
    is_greedy: bool
    n_tokens: int


#: ``Backend.peak_memory()``: (bytes or None, how the figure was obtained).
PeakMemory = tuple[int | None, str]


@runtime_checkable
class Backend(Protocol):
    """A way to run a model: load it, tokenize, generate, score. The one contract every caller
    (runner, tasks, the lm-eval engine) uses; nobody reads anything else off a backend.

    Life cycle: ``cls(options, cache_dir=..., threads=...)`` (``options`` an instance of
    ``cls.Options``; :func:`e3bench.backends.factory.make_backend` builds it from a dict), then
    ``load``, then any calls, then ``close`` (after which ``load`` may be called again).
    ``architecture``, ``device`` and ``load_info`` are readable after ``load`` (``""``, ``""``
    and ``None`` before).

    Shared rules:

    * Prompts are token ids from ``encode`` (no special tokens added; speed runs) or
      ``encode_context`` (lm-eval's generation input; tasks). An **empty prompt** (zero
      tokens) raises :class:`~e3bench.core.errors.E3Error` from ``generate`` and ``forward`` on
      every backend; so does an empty batch.
    * Log-likelihoods follow lm-evaluation-harness exactly (tokenization, truncation, rolling
      windows): see :mod:`e3bench.backends.tokenization`.
    * Backends never time themselves (see the module docstring).
    """

    name: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    #: the backend's own options (pydantic model, ``extra="forbid"``); cache_dir/threads are not
    #: among them (run options, passed to the constructor separately)
    Options: ClassVar[type[BaseModel]]

    architecture: str  # "decoder-only" | "encoder-decoder" | "encoder-only" after load
    device: str  # where the model runs after load, e.g. "cpu", "cuda:0", "cuda"
    load_info: LoadInfo | None  # what load returned
    #: after ``load``: the most tokens one sequence may hold — prompt plus generated tokens for
    #: decoders, the input for encoders (Hugging Face models: ``max_position_embeddings`` /
    #: ``n_positions``; ONNX: the exported model's config; llama.cpp: ``n_ctx``; vLLM:
    #: ``max_model_len``). None when unbounded (relative positions, e.g. T5) or unknown, and before
    #: ``load``. The runner refuses prompts + output longer than this before measuring; a backend
    #: without the attribute is treated as None.
    context_length: int | None

    def load(self, model: ModelSpec, precision: str, device: str) -> LoadInfo:
        """Load ``model`` at ``precision`` on ``device`` (``"cpu"`` | ``"cuda"``).

        Raises E3Error when ``capabilities`` rule the combination out (naming what is supported),
        when the device is absent, or when the model cannot be read.
        """
        ...

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens (no BOS): speed-run prompts of an
        exact token count."""
        ...

    def encode_context(self, text: str, *, max_new_tokens: int) -> tuple[list[int], bool]:
        """``(token ids, truncated)`` of a generation context exactly as lm-eval's
        ``generate_until`` builds them: the tokenizer's own special tokens (BOS on Llama, Gemma,
        Mistral; none when the text starts with BOS), left-truncated so that ``max_new_tokens``
        still fit the model's context (``truncated`` says tokens were cut). Tasks generate from
        these. Raises E3Error when ``max_new_tokens`` alone fills the context."""
        ...

    def decode(self, token_ids: Sequence[int]) -> str:
        """Text of ``token_ids`` without special tokens."""
        ...

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        params: GenParams,
        on_token: OnToken | None = None,
    ) -> list[Generation]:
        """One :class:`Generation` per prompt, in prompt order; ``on_token(k)`` once per decode
        step. Raises E3Error for an empty prompt or batch, and for encoder-only models."""
        ...

    def forward(self, prompts: Sequence[Sequence[int]]) -> None:
        """One forward pass over the batch (encoder-only latency; prefill for others).
        Raises E3Error for an empty prompt or batch."""
        ...

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[LogLik]:
        """Log-likelihood of each ``continuation`` given its ``context``: one result per request,
        in request order.

        Tokenized as lm-eval does (trailing context spaces move to the continuation; an empty
        context is the BOS/EOS token); inputs longer than the backend's maximum length are cut
        on the left, lm-eval's ``(ctx + cont)[-(max_length + 1):][:-1]``. Raises E3Error when a
        continuation is empty after tokenization, longer than the maximum length, or when the
        model is encoder-only.
        """
        ...

    def loglikelihood_rolling(self, texts: Sequence[str], *, max_length: int | None = None) -> list[LogLik]:
        """Log-likelihood of each whole text, for perplexity: one :class:`LogLik` per text, in
        order, with ``logprob`` = summed natural-log probability of every token of the text and
        ``n_tokens`` = number of tokens scored (all of them).

        lm-eval's ``loglikelihood_rolling``: the text's tokens are cut into disjoint windows of
        ``max_length`` tokens (None: the backend's maximum length), the first conditioned on the
        BOS (else EOS) token, each later one on the tokens before it. Raises E3Error when
        ``max_length`` exceeds the backend's maximum length, or for encoder-only models.
        """
        ...

    def synchronize(self) -> None:
        """Return when all queued device work is done (CUDA sync; a no-op where calls block)."""
        ...

    def reset_peak_memory(self) -> None:
        """Start a new peak for :meth:`peak_memory` (the runner calls it after ``load``)."""
        ...

    def peak_memory(self) -> PeakMemory:
        """Peak *device* memory since the last reset: ``(bytes, how)``. ``bytes`` is None where
        there is no device counter (CPU: host RSS is the runner's job); ``how`` always says what
        the figure is, e.g. ``"torch.cuda.max_memory_allocated since after load"`` or
        ``"reserved: gpu_memory_utilization × total device memory"``."""
        ...

    def close(self) -> None:
        """Free the model and device memory. The backend may be loaded again afterwards."""
        ...


# --------------------------------------------------------------------------- energy
Method = Literal["measured", "estimated", "missing"]


@dataclass
class PowerSample:
    """One power reading of one domain, on the runner's clock."""

    t_s: float  # seconds on the runner's clock (time.perf_counter)
    power_w: float
    domain: str  # "cpu-package", "dram", "gpu0", "total", ...


@dataclass
class EnergyReading:
    """Energy over one named window, with how it was obtained."""

    window: str
    duration_s: float
    energy_j: dict[str, float]  # by domain; "total" is the sum the runner uses
    method: Method
    sensor: str  # "nvml:total_energy_counter", "rapl:package-0", "tdp-model", ...
    details: dict[str, object] = field(default_factory=dict)  # formula, inputs, flags
    samples: list[PowerSample] = field(default_factory=list)
    error: str | None = None
    #: (t_s, joules of "total" since the window began) at each sensor read inside the window,
    #: for apportioning sub-window phases (``energy.phases``); empty when the meter has none
    cumulative_j: list[tuple[float, float]] = field(default_factory=list)

    @property
    def total_j(self) -> float | None:
        """Joules of the whole window ("total", else the sum of domains); None when missing."""
        if self.method == "missing":
            return None
        return self.energy_j.get("total", sum(self.energy_j.values()))


@runtime_checkable
class EnergyMeter(Protocol):
    """A source of energy readings over named windows (NVML, RAPL, a power model, ...).

    The one caller is :class:`e3bench.energy.window.MeteredWindow`, which synchronises the
    device before :meth:`begin` and before :meth:`end`. Readings are in joules and seconds on
    the runner's clock (``time.perf_counter``).
    """

    name: ClassVar[str]

    def available(self) -> bool:
        """Whether the sensor can be read here (checked once, before any window)."""
        ...

    def unavailable_reason(self) -> str | None:
        """Why :meth:`available` is False (one line naming the fix), else None."""
        ...

    def begin(self, window: str) -> None:
        """Start the window ``window``. Beginning a window that is already open restarts it."""
        ...

    def end(self, window: str) -> EnergyReading:
        """End ``window`` and return its reading. Never raises: a failed or impossible reading
        is ``method="missing"`` with ``error`` saying why."""
        ...

    def close(self) -> None:
        """Release the sensor (handles, sampler threads, temporary files); idempotent."""
        ...


# ---------------------------------------------------------------------------- tasks
@dataclass
class TaskScore:
    """A task's scores: metric → value and its standard error of the mean, over ``n_items``."""

    task: str
    metrics: dict[str, float]  # e.g. {"acc": 0.41, "acc_norm": 0.44}
    stderr: dict[str, float]  # same keys, standard error of the mean
    n_items: int
    samples: list[dict[str, object]] | None = None  # per-item predictions (--log-samples)
    details: dict[str, object] = field(default_factory=dict)
    #: items whose prompt was cut on the left to fit the model's context (lm-eval's rule);
    #: None where the task does not count them
    truncated_items: int | None = None
    #: the data file the items came from (resolved path, or a dataset id) and its SHA-256
    data_source: str | None = None
    data_sha256: str | None = None


@runtime_checkable
class Task(Protocol):
    """A quality task evaluated on an already-loaded :class:`Backend`.

    ``requires`` names the capabilities it needs (``{"loglikelihood"}``), checked against the
    backend's :class:`Capabilities` before it runs. Tasks use only the Backend contract.
    """

    name: ClassVar[str]
    requires: ClassVar[frozenset[str]]  # capability names, e.g. {"loglikelihood"}

    def evaluate(self, backend: Backend, *, limit: int | None, seed: int) -> TaskScore:
        """Score the first ``limit`` items (all when None; ``seed`` for any sampling). Raises
        :class:`~e3bench.core.errors.E3Error` when the task cannot run here (no data, an
        architecture it does not support); the run then records a warning and goes on.

        Optional: an ``evaluate`` that also takes ``progress`` (a
        :class:`~e3bench.core.progress.Stage`) is given one, and should set its total to the
        items and advance it as they are scored (the built-in tasks do, through
        ``evals.tasks.base.in_pieces``); one without it runs unchanged, shown without counts."""
        ...


# ------------------------------------------------------------------------- executors
@runtime_checkable
class Executor(Protocol):
    """Runs sweep configurations (in subprocesses, on Ray, ...) and yields their records."""

    def map(self, configs: Sequence[object]) -> Iterator[object]:
        """Run each RunConfig; failures (a timeout included) come back as failed ResultRecords,
        never raise. A configuration another process has claimed comes back as
        ``e3bench.sweep.claims.Held`` (built-ins claim each run first). Executors are
        constructed with ``timeout_s=`` when the user sets a run timeout."""
        ...
