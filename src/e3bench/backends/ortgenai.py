"""ONNX Runtime GenAI backend (``onnxruntime-genai``): the ONNX path users deploy.

* **Build** — the model is built once with onnxruntime-genai's own model builder
  (``python -m onnxruntime_genai.models.builder -m SRC -i SRC -o DIR -p int4|fp32|fp16 -e cpu|cuda``)
  from a Hugging Face folder (a hub id is downloaded; the bundled GGUF goes through e3bench's
  cached conversion to safetensors first, :func:`e3bench.backends.models.local_dir`). int4 is the
  builder's ``MatMulNBits`` (4-bit blocks; the embedding a ``GatherBlockQuantized``); fp32 on the
  CPU; fp16 and int4 on CUDA (``-e cuda``, the og CUDA provider: needs the
  ``onnxruntime-genai-cuda`` package; written for real, tested here only with a fake).
* **Cache** — ``models.cache_root(cache_dir)/ortgenai/<source key>/<precision>-<ep>[-<options>]/``,
  the source key a content key of the source files (``core.fsutil.dir_key``, as the onnxrt and
  GGUF caches); reused while its manifest names the installed onnxruntime-genai version (the
  builder's output changes between versions: another version rebuilds in place). Entries appear
  atomically (``core.fsutil.atomic_dir``).
* **Architectures** — the builder's own list (read from the installed ``builder.py``, nothing
  imported): an architecture it lacks (T5, BERT, GPT-2, ...) is refused before any build, with
  the backends that run it. The ``onnxrt`` backend (own exporter) stays for those.
* **Generation** — og's ``Generator``: ``append_tokens`` (prefill), then ``generate_next_token``
  per step (og's own search: greedy, or temperature / top-p sampling seeded with ``seed``; EOS
  held back below ``min_new_tokens`` with og's ``min_length``), ``on_token`` after each step —
  so the runner times TTFT and TPOT as for every backend (this backend never reads a clock).
  A batch of equal-length prompts runs as one og batch; prompts of different lengths get one og
  generator each, stepped together (one ``on_token`` per step for the whole batch): og 0.18 gives
  a left-padded row other logits than the same prompt alone (measured, 8.6 logits apart on
  SmolLM2), so it is not padded.
* **Log-likelihood** — og returns the logits of every appended position
  (``get_output("logits")``); a question's shared context is appended once and each choice is
  appended after ``rewind_to(len(context))`` (the prefix-grouped loop of
  :class:`.base.BaseBackend`), with lm-eval's tokenization through the model's Hugging Face
  tokenizer (the builder copies it).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from e3bench.backends.base import BaseBackend
from e3bench.backends.decoding import finish, min_new
from e3bench.core.api import Capabilities, Generation, GenParams, LoadInfo, ModelSpec, OnToken, PeakMemory
from e3bench.core.devices import canonical, device_index, device_kind
from e3bench.core.errors import E3Error

MANIFEST = "e3bench-ortgenai.json"
#: e3bench precision → the builder's ``-p``
BUILDER_PRECISION = {"int4": "int4", "fp32": "fp32", "fp16": "fp16"}


def og_version() -> str:
    """The installed onnxruntime-genai's version (metadata only, nothing imported)."""
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("onnxruntime-genai", "onnxruntime-genai-cuda"):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return "unknown"


def builder_architectures() -> frozenset[str]:
    """The ``architectures[0]`` names the installed model builder converts, read from its source
    (``config.architectures[0] == "..."``) without importing it (it imports torch)."""
    import importlib.util

    spec = importlib.util.find_spec("onnxruntime_genai")
    if spec is None or not spec.submodule_search_locations:
        return frozenset()
    src = Path(next(iter(spec.submodule_search_locations))) / "models" / "builder.py"
    text = src.read_text(encoding="utf-8") if src.is_file() else ""
    return frozenset(re.findall(r'architectures\[0\]\s*==\s*"([A-Za-z0-9_]+)"', text))


def check_architecture(hf_dir: Path) -> str:
    """The source's ``architectures[0]``; E3Error naming it and the alternatives when the
    installed builder does not convert it."""
    cfg_file = hf_dir / "config.json"
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
        arch = str((cfg.get("architectures") or [""])[0])
    except (OSError, ValueError):
        raise E3Error(
            f"ortgenai: cannot read {cfg_file}", "give a Hugging Face model folder with a valid config.json"
        ) from None
    known = builder_architectures()
    if arch not in known:
        raise E3Error(
            f"ortgenai: onnxruntime-genai {og_version()}'s model builder does not convert "
            f"{arch or 'a model without architectures in config.json'} ({hf_dir.name}); it converts "
            f"{len(known)} decoder architectures (Llama, Mistral, Qwen, Phi, Gemma, ...)",
            "run this model with --backend onnxrt (own exporter) or --backend pytorch",
        )
    return arch


class OrtGenaiOptions(BaseModel):
    """Options of the ``ortgenai`` backend (``backend_options``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    extra_options: dict[str, str] = Field(
        default_factory=dict,
        description="passed to the model builder as --extra_options key=value (e.g. int4_block_size=32, "
        "int4_accuracy_level=4); part of the cache key",
    )


class OrtGenaiBackend(BaseBackend):
    """Models built by onnxruntime-genai's model builder, run with og's Generator."""

    name: ClassVar[str] = "ortgenai"
    Options: ClassVar[type[BaseModel]] = OrtGenaiOptions
    capabilities: ClassVar[Capabilities] = Capabilities(
        devices=frozenset({"cpu", "cuda"}),
        precisions=frozenset({"fp32", "fp16", "int4"}),
        architectures=frozenset({"decoder-only"}),
        streaming=True,
        loglikelihood=True,
        batching=True,
        # the builder's valid pairs: FP32 CPU, INT4 CPU, FP32/FP16/INT4 CUDA
        precisions_by_device=(
            ("cpu", frozenset({"fp32", "int4"})),
            ("cuda", frozenset({"fp32", "fp16", "int4"})),
        ),
    )

    def _setup(self) -> None:
        self.og: Any = None
        self.model: Any = None
        self.model_dir: Path | None = None
        self.notes: list[str] = []
        self._scorer: Any = None  # one batch-1 generator reused for scoring (rewound per prefix)

    # ---------------------------------------------------------------------- building
    def _cache(self) -> Path:
        from e3bench.backends.models import cache_root

        return cache_root(self.cache_dir) / "ortgenai"

    def _tag(self, precision: str, ep: str) -> str:
        tag = f"{precision}-{ep}"
        if self.options.extra_options:
            blob = json.dumps(self.options.extra_options, sort_keys=True).encode()
            tag += "-" + hashlib.sha256(blob).hexdigest()[:10]
        return tag

    def _cached(self, d: Path) -> bool:
        """True when ``d`` holds a complete build by the installed onnxruntime-genai; a build by
        another version is noted and remade by the caller; a damaged manifest is an error."""
        if not (d / MANIFEST).is_file():
            return False
        try:
            m = json.loads((d / MANIFEST).read_bytes())
        except (OSError, ValueError):
            m = None
        if not isinstance(m, dict) or not (d / "genai_config.json").is_file() or not (d / "model.onnx").is_file():
            raise E3Error(
                f"ortgenai: the cached build {d} is damaged (manifest, genai_config.json or model.onnx unreadable)",
                f"delete {d} (e3bench builds it again)",
            )
        if m.get("onnxruntime_genai") == og_version():
            self.notes.append(f"onnxruntime-genai build reused from cache: {d}")
            return True
        self.notes.append(
            f"the cached build was made by onnxruntime-genai {m.get('onnxruntime_genai')}; rebuilt with {og_version()}"
        )
        return False

    def _build(self, hf: Path, target: Path, precision: str, ep: str) -> None:
        from e3bench.core.fsutil import atomic_dir

        extra = [f"{k}={v}" for k, v in sorted(self.options.extra_options.items())]
        env = dict(os.environ, OMP_NUM_THREADS=str(self.threads))
        with atomic_dir(target) as tmp:
            cmd = [
                sys.executable, "-m", "onnxruntime_genai.models.builder", "-m", str(hf), "-i", str(hf),
                "-o", str(tmp), "-p", BUILDER_PRECISION[precision], "-e", ep, "-c", str(tmp / ".builder-cache"),
            ]  # fmt: skip
            if extra:
                cmd += ["--extra_options", *extra]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            if proc.returncode != 0 or not (tmp / "genai_config.json").is_file():
                lines = [ln for ln in (proc.stderr or proc.stdout).strip().splitlines() if "Warning" not in ln]
                raise E3Error(
                    f"ortgenai: onnxruntime-genai's model builder failed on {hf.name} (exit {proc.returncode}): "
                    f"{(lines or ['no output'])[-1][:300]}",
                    "run it by hand to see all of its output: " + " ".join(cmd[1:9]) + " ...; or use --backend onnxrt",
                )
            import shutil

            shutil.rmtree(tmp / ".builder-cache", ignore_errors=True)
            manifest = {
                "onnxruntime_genai": og_version(), "precision": precision, "execution_provider": ep,
                "source": str(hf), "extra_options": self.options.extra_options,
            }  # fmt: skip
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        self.notes.append(f"built with onnxruntime-genai {og_version()}'s model builder (-p {precision} -e {ep}): {target}")

    def _prepare(self, spec: ModelSpec, precision: str, ep: str) -> tuple[Path, Path | None]:
        """(build directory, the Hugging Face source folder or None for a ready og folder)."""
        src = Path(spec.path)
        if spec.source == "local-dir" and (src / "genai_config.json").is_file():
            self.notes.append(f"onnxruntime-genai model folder loaded as is: {src}")
            return src, None
        from e3bench.backends.models import local_dir
        from e3bench.core.fsutil import dir_key

        hf, notes = local_dir(spec, self.cache_dir)
        self.notes.extend(notes)
        arch = check_architecture(hf)
        self.notes.append(f"architecture {arch}: converted by the onnxruntime-genai model builder")
        target = self._cache() / dir_key(hf) / self._tag(precision, ep)
        if not self._cached(target):
            self._build(hf, target, precision, ep)
        return target, hf

    # ----------------------------------------------------------------------- loading
    def _load(self, model: ModelSpec, precision: str, device: str) -> LoadInfo:
        import onnxruntime_genai as og

        self.og = og
        self.notes = []
        ep = device_kind(device)
        if ep == "cuda" and not og.is_cuda_available():
            raise E3Error(
                f"--device {device} needs onnxruntime-genai's CUDA build; this onnxruntime-genai {og_version()} has none",
                "pip uninstall onnxruntime-genai && pip install onnxruntime-genai-cuda (on a machine with an NVIDIA GPU), "
                "or use --device cpu",
            )
        d, hf = self._prepare(model, precision, ep)
        self.model_dir = d
        config = og.Config(str(d))
        overlay = {"model": {"decoder": {"session_options": {
            "intra_op_num_threads": self.threads, "inter_op_num_threads": 1, "log_severity_level": 3,
        }}}}  # fmt: skip
        try:
            config.overlay(json.dumps(overlay))
            if ep == "cuda":
                config.clear_providers()
                config.append_provider("cuda")
                og.set_current_gpu_device_id(device_index(device) or 0)
            self.model = og.Model(config)
        except Exception as exc:  # noqa: BLE001 - og raises RuntimeError for everything
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            fix = f"delete {d} (e3bench builds it again)" if hf is not None else "build the folder again"
            raise E3Error(f"ortgenai: onnxruntime-genai cannot load {d}: {first}", fix) from None
        from transformers import AutoConfig, AutoTokenizer

        from e3bench.backends.modelfiles import loader_error
        from e3bench.backends.tokenization import resolve_max_length
        from e3bench.core.quiet import quiet_libraries

        quiet_libraries()
        tok_dir = hf or d
        try:
            self.tokenizer = tok = AutoTokenizer.from_pretrained(str(tok_dir), trust_remote_code=model.trust_remote_code)
        except Exception as exc:  # noqa: BLE001 - the tokenizers library raises bare Exceptions
            raise loader_error(str(tok_dir), exc, what="load the tokenizer") from None
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token or tok.unk_token
        genai = json.loads((d / "genai_config.json").read_text())["model"]
        context = int(genai.get("context_length") or 2048)
        if hf is not None:
            self.max_length = resolve_max_length(AutoConfig.from_pretrained(str(hf), trust_remote_code=False), tok)
        self.max_length = min(self.max_length, context)
        self.context = context
        self.eos = genai.get("eos_token_id")
        if isinstance(self.eos, list):
            self.eos = self.eos[0] if self.eos else None
        from e3bench.backends.weightbytes import onnx_weights, safetensors_param_counts
        from e3bench.core.decodebytes import decode_step_bytes

        weights = decode_step_bytes(onnx_weights(d / "model.onnx"))  # by the one rule: core.decodebytes
        params = safetensors_param_counts(hf)[0] if hf is not None else 0
        self.notes.append(f"onnxruntime-genai {og_version()}, provider {ep}; intra-op threads: {self.threads}")
        self._scorer = None
        return LoadInfo(
            architecture="decoder-only",
            model_type=str(genai.get("type", "onnx")),
            parameters=int(params),
            weights_bytes=int(weights),
            dtype=precision,
            device=canonical(device),
            vocab_size=int(genai.get("vocab_size") or len(tok)),
            max_positions=context,
            notes=tuple(self.notes),
        )

    # -------------------------------------------------------------------- generation
    def _generator(self, batch: int, max_length: int, params: GenParams | None = None, prompt_len: int = 0):
        og = self.og
        gp = og.GeneratorParams(self.model)
        opts: dict[str, Any] = {"max_length": int(max_length), "batch_size": int(batch), "do_sample": False}
        if params is not None:
            opts["min_length"] = int(min(prompt_len + min_new(params), max_length))
            if params.do_sample:
                opts.update(do_sample=True, temperature=float(params.temperature), top_p=float(params.top_p),
                            top_k=int(self.load_info.vocab_size if self.load_info else 0) or 50,
                            random_seed=int(params.seed))  # fmt: skip
        gp.set_search_options(**opts)
        return og.Generator(self.model, gp)

    def _lane(self, ids: np.ndarray, params: GenParams):
        """A generator with the equal-length prompts ``ids`` [b, n] appended (the prefill)."""
        b, n = ids.shape
        limit = min(n + params.max_new_tokens, self.context)
        if limit <= n:
            raise E3Error(
                f"ortgenai: a {n}-token prompt leaves no room to generate within the model's {self.context}-token context",
                "use a shorter prompt or fewer --prompt-tokens",
            )
        gen = self._generator(b, limit, params, n)
        gen.append_tokens(ids.astype(np.int32))
        return gen

    def _generate(self, prompts: Sequence[Sequence[int]], params: GenParams, on_token: OnToken | None) -> list[Generation]:
        # equal lengths: one og batch; else one og generator per prompt, stepped together (og 0.18
        # gives a left-padded row other logits than the same prompt alone; see the module doc)
        if len({len(p) for p in prompts}) == 1:
            groups = [list(range(len(prompts)))]
        else:
            groups = [[i] for i in range(len(prompts))]
        lanes = [(self._lane(np.asarray([prompts[i] for i in g], dtype=np.int64), params), g) for g in groups]
        steps = [0] * len(lanes)
        for step in range(1, params.max_new_tokens + 1):
            # a lane whose rows all hold a stop string stops being stepped (the others go on)
            running = [k for k, (gen, g) in enumerate(lanes)
                       if not gen.is_done() and not (params.stop and self._stopped(gen, g, prompts, params))]  # fmt: skip
            if not running:
                break
            for k in running:
                lanes[k][0].generate_next_token()
                steps[k] = step
            if on_token is not None:
                on_token(step)
        rows: list[list[int]] = [[] for _ in prompts]
        for (gen, g), done in zip(lanes, steps, strict=True):
            for r, i in enumerate(g):
                n = len(prompts[i])
                rows[i] = [int(t) for t in gen.get_sequence(r)[n : n + done]]
        del lanes
        eos = None if params.ignore_eos else self.eos
        return finish(rows, params, eos, self.tokenizer.pad_token_id, self.decode)

    def _stopped(self, gen, group: list[int], prompts, params: GenParams) -> bool:
        """Every row of ``gen`` has ended (EOS) or holds a stop string."""
        for r, i in enumerate(group):
            row = [int(t) for t in gen.get_sequence(r)[len(prompts[i]) :]]
            if not ((self.eos in row and not params.ignore_eos) or any(s in self.decode(row) for s in params.stop)):
                return False
        return True

    def _forward(self, prompts: Sequence[Sequence[int]]) -> None:
        for group in _equal_length_groups(prompts):
            gen = self._generator(len(group), min(len(group[0]) + 1, self.context))
            gen.append_tokens(np.asarray(group, dtype=np.int32))
            del gen

    # ----------------------------------------------------------------------- scoring
    def _prefix_state(self, prefix: tuple[int, ...]) -> int:
        """Append ``prefix`` to the reused scoring generator (rewound to 0); its length."""
        if self._scorer is None:
            self._scorer = self._generator(1, self.max_length)
        self._scorer.rewind_to(0)
        if prefix:
            self._scorer.append_tokens(np.asarray([prefix], dtype=np.int32))
        return len(prefix)

    def _suffix_logits(self, state: int, prefix: tuple[int, ...], suffix: tuple[int, ...]) -> np.ndarray:
        self._scorer.rewind_to(state)
        self._scorer.append_tokens(np.asarray([suffix], dtype=np.int32))
        logits = np.asarray(self._scorer.get_output("logits"))
        return logits[0, -len(suffix) :].astype(np.float32)

    # ------------------------------------------------------------------------ device
    def threads_in_use(self) -> dict[str, int]:
        """The intra-op thread count written into og's config (og has no read-back of its
        session's options, so this is the value set, named so); empty before ``load``."""
        return {} if self.model is None else {"intra_op_num_threads (set in og config; og has no read-back)": self.threads}

    def peak_memory(self) -> PeakMemory:
        """``(None, why)``: onnxruntime-genai exposes no peak-allocation counter."""
        return None, "not available: onnxruntime-genai exposes no peak-allocation counter (host RSS is recorded separately)"

    def close(self) -> None:
        """Drop the scorer, model and tokenizer."""
        self._scorer = None
        self.model = None
        super().close()


def _equal_length_groups(prompts: Sequence[Sequence[int]]) -> list[list[Sequence[int]]]:
    groups: dict[int, list[Sequence[int]]] = {}
    for p in prompts:
        groups.setdefault(len(p), []).append(p)
    return list(groups.values())
