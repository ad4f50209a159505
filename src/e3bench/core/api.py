"""The extension points of e3bench: the one page a plugin author reads.

Four Protocols — :class:`Backend`, :class:`EnergyMeter`, :class:`Task`, :class:`Executor` —
plus the small value types they exchange. Implementations register themselves in
:mod:`e3bench.core.registry` (built-ins) or through the entry-point groups ``e3bench.backends``,
``e3bench.meters``, ``e3bench.tasks`` and ``e3bench.executors`` (plugins).

Rules every implementation follows (see DESIGN.md, "Measurement rules"):

* Backends never time themselves. The runner brackets every call with
  ``backend.synchronize()`` and its own clock; a backend only *signals* progress through the
  ``on_token`` callback it is handed, and the runner reads the clock inside that callback.
* Meters report how a figure was obtained (``method`` = ``measured`` | ``estimated``) and
  which sensor or model produced it. They never mix the two silently.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal, Protocol, runtime_checkable

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

    @property
    def display(self) -> str:
        return self.name


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

    def precisions_on(self, device: str) -> frozenset[str]:
        return dict(self.precisions_by_device).get(device, self.precisions)

    def check(self, *, device: str, precision: str) -> str | None:
        """Return a reason this combination is impossible, or None."""
        if device not in self.devices:
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

    architecture: str
    model_type: str
    parameters: int
    weights_bytes: int  # bytes of weights read per decode step (roofline numerator)
    dtype: str
    device: str
    vocab_size: int
    max_positions: int | None = None
    notes: tuple[str, ...] = ()


# ----------------------------------------------------------------------- generation
@dataclass(frozen=True)
class GenParams:
    """Generation settings. Speed runs use fixed length: ``min_new_tokens == max_new_tokens``."""

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
    """One generated continuation."""

    token_ids: list[int]
    text: str
    finish_reason: Literal["length", "eos", "stop"] = "length"


#: Called by a backend once per decode step, with the number of new tokens now available for
#: every sequence in the batch (1, 2, 3, ...). The *runner* reads the clock inside it.
OnToken = Callable[[int], None]


@dataclass(frozen=True)
class LogLik:
    """Log-likelihood of a continuation given a context."""

    logprob: float  # sum of natural-log probabilities of the continuation tokens
    is_greedy: bool  # every continuation token was the argmax
    n_tokens: int


@runtime_checkable
class Backend(Protocol):
    name: ClassVar[str]
    capabilities: ClassVar[Capabilities]

    def load(self, model: ModelSpec, precision: str, device: str) -> LoadInfo: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, token_ids: Sequence[int]) -> str: ...

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        params: GenParams,
        on_token: OnToken | None = None,
    ) -> list[Generation]: ...

    def forward(self, prompts: Sequence[Sequence[int]]) -> None:
        """One forward pass over the batch (encoder-only latency; prefill for others)."""
        ...

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[LogLik]: ...

    def synchronize(self) -> None: ...

    def reset_peak_memory(self) -> None: ...

    def peak_memory_bytes(self) -> int | None:
        """Peak *device* memory since the last reset (None on CPU; RSS is the runner's job)."""
        ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------- energy
Method = Literal["measured", "estimated", "missing"]


@dataclass
class PowerSample:
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
        if self.method == "missing":
            return None
        return self.energy_j.get("total", sum(self.energy_j.values()))


@runtime_checkable
class EnergyMeter(Protocol):
    name: ClassVar[str]

    def available(self) -> bool: ...

    def unavailable_reason(self) -> str | None: ...

    def begin(self, window: str) -> None: ...

    def end(self, window: str) -> EnergyReading: ...

    def close(self) -> None: ...


# ---------------------------------------------------------------------------- tasks
@dataclass
class TaskScore:
    task: str
    metrics: dict[str, float]  # e.g. {"acc": 0.41, "acc_norm": 0.44}
    stderr: dict[str, float]  # same keys, standard error of the mean
    n_items: int
    samples: list[dict[str, object]] | None = None  # per-item predictions (--log-samples)
    details: dict[str, object] = field(default_factory=dict)


@runtime_checkable
class Task(Protocol):
    name: ClassVar[str]
    requires: ClassVar[frozenset[str]]  # capability names, e.g. {"loglikelihood"}

    def evaluate(self, backend: Backend, *, limit: int | None, seed: int) -> TaskScore: ...


# ------------------------------------------------------------------------- executors
@runtime_checkable
class Executor(Protocol):
    def map(self, configs: Sequence[object]) -> Iterator[object]:
        """Run each RunConfig; failures come back as failed ResultRecords, never raise."""
        ...
