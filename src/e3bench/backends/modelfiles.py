"""Checks of model files e3bench did not write, made before any library reads them.

A model folder, a ``.gguf`` file or a cache entry may be truncated, corrupt or hostile. The
libraries that read them answer with tracebacks from deep inside (``SafetensorError``,
``JSONDecodeError``) or, for custom code, a question on the terminal. These checks turn every
such case into one :class:`~e3bench.core.errors.E3Error` naming the file and the fix:

* :func:`check_gguf` — the magic bytes, then a full header parse (``gguf.GGUFReader``);
* :func:`check_model_dir` — every JSON file transformers reads is JSON of the right shape, every
  ``*.safetensors`` file's header fits the file and its tensors cover it exactly (the format's
  own rule, checked from the first 8 bytes and the header alone: no tensor data read), the shards
  a ``model.safetensors.index.json`` names exist, pickle-only weights (``*.bin``) are refused on a
  torch whose ``weights_only`` loader can be bypassed, and a folder that ships its own Python
  code (``auto_map``) is refused unless the user passed ``--trust-remote-code``;
* :func:`remote_code_error` / :func:`loader_error` — the same one line for what a library still
  raises (hub models are checked by the library, not here).

Nothing here imports torch or transformers at module level.
"""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path
from typing import Any

from e3bench.core.errors import E3Error

#: JSON files transformers reads from a model folder (when present)
JSON_FILES = (
    "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "added_tokens.json", "vocab.json", "model.safetensors.index.json",
)  # fmt: skip
#: files a tokenizer is built from (transformers' tokenizer classes and their vocabulary files:
#: fast tokenizers, SentencePiece, BPE vocab + merges, WordPiece, tiktoken, Mistral's tekken)
TOKENIZER_GLOBS = (
    "tokenizer.json", "tokenizer.model", "tokenizer.model.*", "spiece.model", "sentencepiece*.model",
    "*.spm", "vocab.json", "vocab.txt", "merges.txt", "*.tiktoken", "tekken.json", "vocab.*",
)  # fmt: skip
#: the safetensors format's own limit on the JSON header (safetensors' MAX_HEADER_SIZE)
MAX_SAFETENSORS_HEADER = 100_000_000
#: the flag (run, sweep, finetune) that allows a model folder's own code to run
TRUST_FLAG = "--trust-remote-code"
#: torch.load(weights_only=True) is only safe from this torch on (CVE-2025-32434)
SAFE_TORCH_LOAD = (2, 6)
#: the fix for a hub model whose cached files are damaged
HUB_CACHE_FIX = "remove the model from the Hugging Face cache (~/.cache/huggingface/hub) and download it again"
#: what transformers raises for a file it cannot use (plus safetensors' own SafetensorError);
#: anything else is a bug and keeps its traceback
LOADER_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, KeyError, IndexError, TypeError, RuntimeError,
                                                 pickle.UnpicklingError)  # fmt: skip


def check_gguf(path: Path, fix: str | None = None) -> None:
    """Fail with one clear E3Error if ``path`` is not a complete GGUF file: wrong magic bytes
    (empty, truncated to < 4 bytes, another format) or a header/tensor table ``gguf`` cannot
    parse (truncated, corrupt counts or strings). Skips the second check without ``gguf``.
    ``fix``: the fix printed (default: point --model elsewhere / copy the file again; a cache
    entry's caller says to delete it)."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise E3Error(f"cannot read {path}: {exc.strerror or exc}", "check the path and its permissions") from None
    if magic != b"GGUF":
        raise E3Error(
            f"{path} is not a GGUF file (bad magic bytes {magic!r})",
            fix or "point --model at a .gguf file, a model directory or a Hugging Face id",
        )
    try:
        import gguf
    except ImportError:
        return  # transformers' own loader will need it and say so
    try:
        gguf.GGUFReader(str(path))
    except Exception as exc:  # noqa: BLE001 - truncated files fail while mapping tensor data
        raise E3Error(
            f"GGUF file {path} is corrupt or truncated ({type(exc).__name__}: {exc})",
            fix or "download or copy the file again",
        ) from None


def _json(path: Path, fix: str) -> Any:
    try:
        return json.loads(path.read_bytes())
    except OSError as exc:
        raise E3Error(f"cannot read {path}: {exc.strerror or exc}", "check the file's permissions") from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and bad UTF-8 are ValueErrors
        why = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise E3Error(f"{path} is not valid JSON ({why})", fix) from None


def check_safetensors(path: Path, fix: str) -> None:
    """Check a ``.safetensors`` file's framing without reading tensor data: an 8-byte
    little-endian header length N with ``8 + N <= size`` and N within the format's limit, a JSON
    object header, and tensors whose ``data_offsets`` lie inside the data and cover it exactly
    (what the safetensors loader requires). Raises E3Error naming ``path`` and ``fix``."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else None
            ok_len = n is not None and n <= MAX_SAFETENSORS_HEADER and 8 + n <= size
            raw = fh.read(n) if ok_len else b""
    except OSError as exc:
        raise E3Error(f"cannot read {path}: {exc.strerror or exc}", "check the file's permissions") from None
    if n is None:
        raise E3Error(f"{path} is truncated ({size} bytes: not even a safetensors header)", fix)
    if not ok_len:
        raise E3Error(
            f"{path} is truncated or not a safetensors file (header says {n:,} bytes, the file has {size:,})", fix
        )
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError):
        header = None
    if not isinstance(header, dict):
        raise E3Error(f"{path} has a corrupt safetensors header (not a JSON object)", fix)
    data = size - 8 - n
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offs = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offs, list) and len(offs) == 2 and all(isinstance(o, int) for o in offs)
                and 0 <= offs[0] <= offs[1]):  # fmt: skip
            raise E3Error(f"{path} has a corrupt safetensors header (tensor {name!r})", fix)
        end = max(end, offs[1])
    if end != data:
        what = "truncated" if end > data else "corrupt"
        raise E3Error(f"{path} is {what}: its tensors need {end:,} bytes of data, the file holds {data:,}", fix)


def _known_model_type(model_type: Any) -> bool:
    from transformers import CONFIG_MAPPING

    return isinstance(model_type, str) and model_type in CONFIG_MAPPING


def remote_code_error(where: str, detail: str = "") -> E3Error:
    """The one error for a model that needs its own Python code run when the user did not pass
    ``--trust-remote-code``. ``where``: the folder or hub id; ``detail``: what ships the code."""
    return E3Error(
        f"{where} ships its own Python code{f' ({detail})' if detail else ''} that transformers would "
        "have to run to load it; e3bench never runs a model's code unless you ask",
        f"read that code, and pass {TRUST_FLAG} only if you trust it (it runs with your permissions); "
        "or use a model transformers supports natively",
    )


def loader_error(path: str, exc: BaseException, *, what: str, fix: str = "check the model directory") -> E3Error:
    """One line for an exception a model library raised while reading ``path`` (``what``:
    "read the model config", "load the weights", ...): remote-code refusals become
    :func:`remote_code_error`; a tokenizer that fails in a folder without tokenizer files says
    so; everything else names ``path`` and the exception's message on one line (at most 300
    characters; with a memory fix instead of ``fix`` when it was an allocation failure)."""
    text = str(exc)
    if "trust_remote_code" in text:
        return remote_code_error(path)
    if isinstance(exc, pickle.UnpicklingError) or "Weights only load failed" in text:
        bins = ", ".join(p.name for p in sorted(Path(path).glob("*.bin"))) or "pickle weights"
        return E3Error(
            f"cannot {what} in {path}: {bins} holds more than plain tensors, so torch.load(weights_only=True) "
            "refused it (e3bench never runs code from a weights file)",
            "use the model's safetensors weights, or get the model from a source you trust",
        )
    if "tokenizer" in what and Path(path).is_dir() and not has_tokenizer_files(Path(path)):
        return E3Error(
            f"cannot {what} in {path}: the folder has no tokenizer files ({', '.join(TOKENIZER_GLOBS[:2])}, "
            "vocab.json + merges.txt, vocab.txt, ...)",
            "copy the tokenizer of the model the weights came from into the folder "
            "(AutoTokenizer.from_pretrained(original).save_pretrained(folder))",
        )
    # the whole message on one line (libraries put the useful part after a line break: "from one of:\n...")
    first = " ".join(text.split())[:300]
    if "OutOfMemory" in type(exc).__name__ or "allocate" in text:
        fix = "free memory, or use a smaller model or --dtype"
    return E3Error(f"cannot {what} in {path}: {type(exc).__name__}: {first}", fix)


def has_tokenizer_files(path: Path) -> bool:
    """Whether folder ``path`` holds any file a tokenizer is built from (:data:`TOKENIZER_GLOBS`)."""
    return any(next(Path(path).glob(g), None) is not None for g in TOKENIZER_GLOBS)


def _auto_map_files(auto_map: Any) -> list[str]:
    values = auto_map.values() if isinstance(auto_map, dict) else [auto_map] if isinstance(auto_map, list) else []
    refs: list[str] = []
    for v in values:
        refs += [r for r in (v if isinstance(v, list) else [v]) if isinstance(r, str)]
    return sorted({r.split("--")[-1].rsplit(".", 1)[0] + ".py" for r in refs})


def torch_load_is_safe() -> bool:
    """True when this torch's ``torch.load(weights_only=True)`` cannot be made to run code
    (torch ≥ 2.6; CVE-2025-32434 bypassed it before)."""
    import torch

    parts = [int(p) for p in torch.__version__.split("+")[0].split(".")[:2] if p.isdigit()]
    return tuple(parts) >= SAFE_TORCH_LOAD


def check_model_dir(path: Path, *, trust_remote_code: bool = False, fix: str | None = None) -> list[str]:
    """Check a Hugging Face model folder before transformers reads it (see the module doc).

    ``fix``: the fix printed for a corrupt file (default: get the file again; for a cache
    entry, the caller says to delete it). Returns notes for the record (custom code ignored or
    run). Raises :class:`E3Error` naming the file at the first problem.
    """
    fix = fix or "download or copy the model folder again (the file is damaged)"
    path = Path(path)
    docs = {name: _json(path / name, fix) for name in JSON_FILES if (path / name).is_file()}
    config = docs.get("config.json")
    if not isinstance(config, dict):
        if "config.json" not in docs:
            raise E3Error(
                f"directory {path} has no config.json, so it is not a Hugging Face model directory",
                "point --model at the folder that holds config.json and the weights",
            )
        raise E3Error(f"{path / 'config.json'} is JSON but not an object ({type(config).__name__})", fix)
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json", "special_tokens_map.json"):
        if name in docs and not isinstance(docs[name], dict):
            raise E3Error(f"{path / name} is JSON but not an object ({type(docs[name]).__name__})", fix)
    notes = _remote_code(path, config, docs.get("tokenizer_config.json") or {}, trust_remote_code)
    index = docs.get("model.safetensors.index.json")
    shards = set()
    if index is not None:
        wmap = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(wmap, dict):
            raise E3Error(f"{path / 'model.safetensors.index.json'} has no weight_map object", fix)
        shards = {str(v) for v in wmap.values()}
        for s in sorted(shards):
            if Path(s).name != s or not (path / s).is_file():
                raise E3Error(f"{path / 'model.safetensors.index.json'} names a shard that is not in {path}: {s!r}", fix)
    for f in sorted({*path.glob("*.safetensors"), *(path / s for s in shards)}):
        check_safetensors(f, fix)
    if not any(path.glob("*.safetensors")) and any(path.glob("pytorch_model*.bin")) and not torch_load_is_safe():
        raise E3Error(
            f"{path} has only pickle weights (*.bin); with torch older than 2.6 loading them can run code "
            "hidden in the file (CVE-2025-32434)",
            "upgrade torch to 2.6 or later, or convert the weights to safetensors",
        )
    return notes


def _remote_code(path: Path, config: dict, tok_config: dict, trust: bool) -> list[str]:
    """Notes about the folder's own code, or :func:`remote_code_error` when it would be needed."""
    files = _auto_map_files(config.get("auto_map")) + _auto_map_files(tok_config.get("auto_map"))
    if not files:
        return []
    shown = ", ".join(sorted(set(files)))
    if trust:
        return [f"trust_remote_code: ran the model folder's own code ({shown})"]
    if not _known_model_type(config.get("model_type")) and config.get("auto_map"):
        raise remote_code_error(str(path), f"auto_map in config.json: {shown}")
    return [
        f"the model folder's own code ({shown}, named by auto_map) was not run: loaded with transformers' "
        f"built-in '{config.get('model_type')}' classes ({TRUST_FLAG} would run it instead)"
    ]
