"""ONNX Runtime backend: decoder-only models exported once to ONNX (with a KV cache) and run
with our own decode loop on the CPU or CUDA execution provider.

* **Export** — :mod:`e3bench.backends.onnx_export`, in a subprocess, with the same transformers
  as the PyTorch backend (optimum-onnx pins transformers<4.58; see that module). An existing
  directory holding ``model.onnx`` with optimum-style input names loads as is.
* **Precisions** — fp32 (CPU, CUDA); int8 on CPU, dynamic by default (``quantize_dynamic``,
  MatMul int8 weights per channel) or static with ``-O int8_mode=static`` (``quantize_static``,
  QDQ, MinMax calibration on e3bench's synthetic prose or ``-O calibration_file=FILE``); fp16 (CUDA: weights and KV cache converted with
  ``onnxruntime.transformers.float16``).
* **Cache** — exported and converted models live under
  ``models.cache_root(cache_dir)/onnx/<source key>/<precision>/`` and are reused while their
  manifest's ``exporter_version`` equals :data:`~e3bench.backends.onnx_export.EXPORTER_VERSION`
  (an exporter fix bumps it, and older entries are remade in place); the key is a content key
  of the source files (``core.fsutil.dir_key``: a re-download or copy of the same files reuses
  the entry; an entry an older e3bench keyed by file modification times is adopted). Entries appear atomically (``core.fsutil.atomic_dir``).
* **Decoding** — one session call per step through IOBinding: the KV cache stays where the
  execution provider put it (GPU memory on CUDA), only the last position's logits come back to
  the host; the token is chosen on the host, then ``on_token`` fires.
* **Log-likelihood** — lm-eval's tokenization and truncation (:mod:`.tokenization`, through
  :class:`.base.BaseBackend`); a question's shared context runs once (``_prefix_state``), its KV
  cache is reused for every choice (``_suffix_logits``). Rolling windows (perplexity) too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from e3bench.backends.base import BaseBackend
from e3bench.backends.decoding import finish, still_running, take_step
from e3bench.backends.onnx_export import EXPORTER_VERSION, MANIFEST, sliding_notes
from e3bench.core.api import Capabilities, Generation, GenParams, LoadInfo, ModelSpec, OnToken, PeakMemory
from e3bench.core.devices import canonical, device_index, device_kind
from e3bench.core.errors import E3Error
from e3bench.core.fsutil import adopt_legacy_entry, atomic_dir, dir_key, legacy_dir_key

EXPORT_PYTHON_ENV = "E3BENCH_ONNX_EXPORT_PYTHON"


def _manifest(d: Path, fix: str) -> dict:
    """The export manifest in ``d`` ({} when there is none); E3Error naming it when damaged."""
    f = d / MANIFEST
    if not f.is_file():
        return {}
    try:
        m = json.loads(f.read_bytes())
    except (OSError, ValueError):
        m = None
    if not isinstance(m, dict):
        raise E3Error(f"{f} is damaged (not a JSON object)", fix)
    return m


def _cache_fix(d: Path) -> str:
    return f"delete the damaged cache entry {d} (e3bench makes it again)"


def _providers(device: str) -> list:
    """ONNX Runtime's providers for ``device``: the CUDA provider on GPU ``device_id`` N for
    ``cuda:N`` (``cuda`` = 0), then the CPU; the CPU alone for ``cpu``."""
    import onnxruntime as ort

    avail = ort.get_available_providers()
    gpu = device_index(device)
    if gpu is not None:
        if "CUDAExecutionProvider" not in avail:
            raise E3Error(
                f"--device {device} needs onnxruntime's CUDAExecutionProvider, but this onnxruntime "
                f"{ort.__version__} offers only {', '.join(avail)}",
                "pip uninstall onnxruntime && pip install onnxruntime-gpu (on a machine with an NVIDIA GPU), "
                "or use --device cpu",
            )
        return [("CUDAExecutionProvider", {"device_id": gpu}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _require_decoder(path: Path, trust_remote_code: bool) -> None:
    from transformers import AutoConfig

    from e3bench.backends.modelfiles import loader_error
    from e3bench.backends.models import detect_architecture

    try:
        arch = detect_architecture(AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code))
    except (OSError, ValueError) as exc:
        raise loader_error(str(path), exc, what="read the model config") from None
    if arch != "decoder-only":
        raise E3Error(
            f"the onnxrt backend runs decoder-only models; {path.name} is {arch}",
            "use --backend pytorch for encoder-decoder and encoder-only models",
        )


class OnnxOptions(BaseModel):
    """Options of the ``onnxrt`` backend (``backend_options``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    int8_mode: Literal["dynamic", "static"] = Field(
        "dynamic",
        description="int8 on CPU: dynamic (quantize_dynamic, activations quantized per call) or static "
        "(quantize_static, QDQ, MinMax calibration)",
    )
    calibration_file: str | None = Field(
        None, description="static int8: a text file, one calibration text per line (default: synthetic prose)"
    )

    @field_validator("calibration_file")
    @classmethod
    def _exists(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).expanduser().is_file():
            raise ValueError(f"calibration file not found: {value} (give a text file with one calibration text per line)")
        return value


class OnnxRuntimeBackend(BaseBackend):
    """Decoder-only models exported to ONNX (own exporter, KV cache) on ONNX Runtime."""

    name: ClassVar[str] = "onnxrt"
    Options: ClassVar[type[BaseModel]] = OnnxOptions
    capabilities: ClassVar[Capabilities] = Capabilities(
        devices=frozenset({"cpu", "cuda"}),
        precisions=frozenset({"fp32", "fp16", "int8"}),
        architectures=frozenset({"decoder-only"}),
        streaming=True,
        loglikelihood=True,
        batching=True,
        # dynamic int8 (MatMulInteger) is a CPU kernel; fp16 kernels are for GPUs
        precisions_by_device=(
            ("cpu", frozenset({"fp32", "int8"})),
            ("cuda", frozenset({"fp32", "fp16"})),
        ),
    )

    def _setup(self) -> None:
        self.sess = None
        self.device_type, self.device_id = "cpu", 0
        self.notes: list[str] = []
        self.model_dir: Path | None = None

    # --------------------------------------------------------------------- preparing
    def _cache(self) -> Path:
        from e3bench.backends.models import cache_root

        return cache_root(self.cache_dir) / "onnx"

    def _subprocess(self, args: list[str], what: str) -> None:
        py = os.environ.get(EXPORT_PYTHON_ENV) or sys.executable
        env = dict(os.environ)
        env["OMP_NUM_THREADS"] = str(self.threads)
        proc = subprocess.run(
            [py, "-m", "e3bench.backends.onnx_export", *args], capture_output=True, text=True, env=env, check=False
        )
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-6:])
            raise E3Error(
                f"onnxrt: {what} failed (exit {proc.returncode}): {tail}",
                f"check that the model is a transformers decoder-only model; set {EXPORT_PYTHON_ENV} "
                "to a Python with a transformers version that can trace it",
            )

    def _hf_dir(self, spec: ModelSpec) -> Path:
        from e3bench.backends.models import local_dir

        path, notes = local_dir(spec, self.cache_dir)
        self.notes.extend(notes)
        return path

    def _cached(self, d: Path, what: str) -> bool:
        """True when ``d`` holds a complete export/conversion by this EXPORTER_VERSION; a stale one
        (older exporter) is noted and remade by the caller."""
        manifest = d / MANIFEST
        if not ((d / "model.onnx").is_file() and manifest.is_file()):
            return False
        made_by = _manifest(d, _cache_fix(d)).get("exporter_version")
        if made_by == EXPORTER_VERSION:
            self.notes.append(f"{what} reused from cache: {d}")
            return True
        self.notes.append(f"{what} in the cache was made by exporter v{made_by}; remade with v{EXPORTER_VERSION}")
        return False

    def _make(self, target: Path, src: str, args: list[str], what: str) -> None:
        with atomic_dir(target) as tmp:
            self._subprocess([src, str(tmp), *args], what)
        self.notes.append(f"{what} made now: {target}")

    def _prepare(self, spec: ModelSpec, precision: str) -> Path:
        """Directory with model.onnx for ``precision``, exporting/converting once per exporter version."""
        src = Path(spec.path)
        if spec.source == "local-dir" and (src / "model.onnx").is_file():
            from e3bench.backends.modelfiles import check_model_dir

            self.notes.extend(check_model_dir(src, trust_remote_code=spec.trust_remote_code))
            fp32_dir = src  # an existing ONNX export (ours or optimum's layout)
            key = dir_key(src)
            self.notes.append(f"ONNX model loaded from {src}")
        else:
            hf = self._hf_dir(spec)
            _require_decoder(hf, spec.trust_remote_code)
            key = dir_key(hf)
            adopted = adopt_legacy_entry(self._cache(), key, legacy_dir_key(hf))
            self.notes.extend([adopted] if adopted else [])
            fp32_dir = self._cache() / key / "fp32"
            if not self._cached(fp32_dir, "ONNX export"):
                self._make(fp32_dir, str(hf), self._trust_args(spec), "ONNX export")
        if precision == "fp32":
            return fp32_dir
        opts = self.options
        tag = {"int8": f"int8-{opts.int8_mode}", "fp16": "fp16"}[precision]
        args = ["--to", "int8-static" if tag == "int8-static" else precision]
        if tag == "int8-static" and opts.calibration_file:
            import hashlib

            cal = Path(opts.calibration_file).expanduser()
            tag += "-" + hashlib.sha256(cal.read_bytes()).hexdigest()[:12]  # new text → new calibration
            args += ["--calibration", str(cal.resolve())]
        target = self._cache() / key / tag
        if not self._cached(target, f"{tag} model"):
            self._make(target, str(fp32_dir), args + self._trust_args(spec), f"{tag} conversion")
        self._quant_note(target)
        return target

    @staticmethod
    def _trust_args(spec: ModelSpec) -> list[str]:
        return ["--trust-remote-code"] if spec.trust_remote_code else []

    def _quant_note(self, d: Path) -> None:
        m = _manifest(d, _cache_fix(d))
        if m.get("quantizer"):
            cal = f"; calibration: {m['calibration']}" if m.get("calibration") else ""
            self.notes.append(f"{m['quantizer']}{cal}")

    # ----------------------------------------------------------------------- loading
    def _load(self, model: ModelSpec, precision: str, device: str) -> LoadInfo:
        import onnxruntime as ort

        providers = _providers(device)
        self.notes = []
        d = self._prepare(model, precision)
        self.model_dir = d
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        fix = "export the model again" if d == Path(model.path) else _cache_fix(d)
        try:
            self.sess = ort.InferenceSession(str(d / "model.onnx"), so, providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            first = (str(exc).splitlines() or [""])[0][:200]
            raise E3Error(f"ONNX Runtime cannot load {d / 'model.onnx'}: {type(exc).__name__}: {first}", fix) from None
        self.device_type = device_kind(device)
        self.device_id = device_index(device) or 0  # where the key/value cache lives
        inputs = {i.name: i for i in self.sess.get_inputs()}
        self.past_names = sorted(
            (n for n in inputs if n.startswith("past_key_values.")),
            key=lambda n: (int(n.split(".")[1]), n.endswith("value")),
        )
        self.present_names = [n.replace("past_key_values.", "present.") for n in self.past_names]
        if not self.past_names or "input_ids" not in inputs:
            raise E3Error(
                f"{d / 'model.onnx'} is not a decoder with a KV cache (inputs: {', '.join(inputs)})",
                "export with e3bench (pass the transformers model directory) or optimum's text-generation-with-past",
            )
        first = inputs[self.past_names[0]]
        self.kv_heads, self.head_dim = int(first.shape[1]), int(first.shape[3])
        self.kv_dtype = np.float16 if "float16" in first.type else np.float32
        self.has_logit_index = "logit_index" in inputs
        self.has_position_ids = "position_ids" in inputs
        manifest = _manifest(d, fix)
        from transformers import AutoConfig, AutoTokenizer

        from e3bench.backends.modelfiles import loader_error
        from e3bench.backends.tokenization import resolve_max_length
        from e3bench.core.quiet import quiet_libraries

        quiet_libraries()
        trust = model.trust_remote_code
        try:
            self.tokenizer = tok = AutoTokenizer.from_pretrained(str(d), trust_remote_code=trust)
            config = AutoConfig.from_pretrained(str(d), trust_remote_code=trust)
        except Exception as exc:  # noqa: BLE001 - the tokenizers library raises bare Exceptions
            raise loader_error(str(d), exc, what="load the tokenizer and config", fix=fix) from None
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token or tok.unk_token
        self.max_length = resolve_max_length(config, tok)  # the PyTorch backend's rule
        self.notes.extend(sliding_notes(config, manifest, d / "model.onnx", fix))
        from e3bench.backends.weightbytes import onnx_weights
        from e3bench.core.decodebytes import decode_step_bytes

        weights = decode_step_bytes(onnx_weights(d / "model.onnx"))  # not the file size: see core.decodebytes
        self.notes.append(f"providers: {', '.join(self.sess.get_providers())}; intra-op threads: {self.threads}")
        return LoadInfo(
            architecture="decoder-only",
            model_type=str(manifest.get("model_type", "onnx")),
            parameters=int(manifest.get("parameters", 0)),
            weights_bytes=int(weights),
            dtype=precision,
            device=canonical(device),
            vocab_size=int(manifest.get("vocab_size") or len(tok)),
            max_positions=manifest.get("max_positions"),
            notes=tuple(self.notes),
        )

    # ---------------------------------------------------------------------- engine
    def _empty_past(self, batch: int) -> list:
        import onnxruntime as ort

        z = np.zeros((batch, self.kv_heads, 0, self.head_dim), dtype=self.kv_dtype)
        return [ort.OrtValue.ortvalue_from_numpy(z, self.device_type, self.device_id) for _ in self.past_names]

    def _step(self, ids: np.ndarray, mask: np.ndarray, pos: np.ndarray, keep: np.ndarray, past: list):
        """One session call. Returns (logits [b, n, vocab] on the host, presents as OrtValues)."""
        io = self.sess.io_binding()
        io.bind_cpu_input("input_ids", np.ascontiguousarray(ids, dtype=np.int64))
        io.bind_cpu_input("attention_mask", np.ascontiguousarray(mask, dtype=np.int64))
        if self.has_position_ids:
            io.bind_cpu_input("position_ids", np.ascontiguousarray(pos, dtype=np.int64))
        if self.has_logit_index:
            io.bind_cpu_input("logit_index", np.ascontiguousarray(keep, dtype=np.int64))
        for name, value in zip(self.past_names, past, strict=True):
            io.bind_ortvalue_input(name, value)
        io.bind_output("logits", "cpu")
        for name in self.present_names:
            io.bind_output(name, self.device_type, self.device_id)
        try:
            self.sess.run_with_iobinding(io)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            first = (str(exc).strip().splitlines() or [""])[0]
            if "allocate" in first.lower():
                raise  # out of memory: the runner records the batch size as not fitting
            raise E3Error(
                f"ONNX Runtime failed running {self.model_dir}: {first[:300]}",
                "run this model with --backend pytorch or llamacpp, and report it (its ONNX export does not run)",
            ) from None
        outs = io.get_outputs()
        logits = outs[0].numpy()
        if not self.has_logit_index:  # full-sequence logits (optimum layout): select here
            logits = logits[:, keep, :]
        return logits, outs[1:]

    def _left_padded(self, prompts: Sequence[Sequence[int]]):
        pad = self.tokenizer.pad_token_id
        width = max(len(p) for p in prompts)
        ids = np.full((len(prompts), width), pad, dtype=np.int64)
        mask = np.zeros((len(prompts), width), dtype=np.int64)
        for i, p in enumerate(prompts):
            if len(p):
                ids[i, width - len(p) :] = p
                mask[i, width - len(p) :] = 1
        pos = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
        return ids, mask, pos

    # ------------------------------------------------------------------- inference
    def _generate(
        self, prompts: Sequence[Sequence[int]], params: GenParams, on_token: OnToken | None = None
    ) -> list[Generation]:
        tok = self.tokenizer
        eos = tok.eos_token_id
        rng = np.random.default_rng(params.seed)
        ids, mask, pos = self._left_padded(prompts)
        past = self._empty_past(len(prompts))
        keep = np.array([ids.shape[1] - 1])
        rows: list[list[int]] = [[] for _ in prompts]
        done = np.zeros(len(prompts), dtype=bool)
        active = list(range(len(prompts)))  # the rows still in the batch, in batch order
        for step in range(params.max_new_tokens):
            logits, past = self._step(ids, mask, pos, keep, past)
            nxt = take_step(logits[:, -1, :], params, rng, eos=eos, step=step, rows=rows, done=done, active=active,
                            decode=self.decode)  # fmt: skip
            if on_token is not None:
                on_token(step + 1)
            if done.all() or step + 1 == params.max_new_tokens:
                break
            sel, left = still_running(active, done)
            if len(sel) < len(active):  # finished rows leave the batch: later steps compute the others only
                past = [self._rows_of(p, sel) for p in past]
                mask, pos, nxt, active = mask[sel], pos[sel], nxt[sel], left
            ids = nxt.reshape(-1, 1).astype(np.int64)
            mask = np.concatenate([mask, np.ones((len(active), 1), dtype=np.int64)], axis=1)
            pos = pos[:, -1:] + 1
            keep = np.array([0])
        return finish(rows, params, eos, tok.pad_token_id, self.decode)

    def _rows_of(self, value, sel: list[int]):
        """The batch rows ``sel`` of a key/value OrtValue (through the host: rows leave a batch
        at most once each)."""
        import onnxruntime as ort

        arr = np.ascontiguousarray(value.numpy()[sel])
        return ort.OrtValue.ortvalue_from_numpy(arr, self.device_type, self.device_id)

    def _forward(self, prompts: Sequence[Sequence[int]]) -> None:
        ids, mask, pos = self._left_padded(prompts)
        self._step(ids, mask, pos, np.array([ids.shape[1] - 1]), self._empty_past(len(prompts)))

    def _prefix_state(self, prefix: tuple[int, ...]) -> list:
        if not prefix:
            return self._empty_past(1)
        n = len(prefix)
        arr = np.array([prefix], dtype=np.int64)
        _, past = self._step(arr, np.ones_like(arr), np.arange(n)[None], np.array([n - 1]), self._empty_past(1))
        return past

    def _suffix_logits(self, state, prefix: tuple[int, ...], suffix: tuple[int, ...]) -> np.ndarray:
        n_pre, n = len(prefix), len(suffix)
        mask = np.ones((1, n_pre + n), dtype=np.int64)
        ids = np.array([suffix], dtype=np.int64)
        logits, _ = self._step(ids, mask, np.arange(n_pre, n_pre + n)[None], np.arange(n), state)
        return logits[0]

    # ---------------------------------------------------------------------- device
    def threads_in_use(self) -> dict[str, int]:
        """The session's intra-op thread count, read back from its options."""
        return {} if self.sess is None else {"intra_op_num_threads": self.sess.get_session_options().intra_op_num_threads}

    def peak_memory(self) -> PeakMemory:
        """``(None, why)``: onnxruntime exposes no peak-allocation counter for its arena."""
        return None, "not available: onnxruntime exposes no peak-allocation counter (host RSS is recorded separately)"

    def close(self) -> None:
        """Drop the session and tokenizer."""
        self.sess = None
        super().close()
