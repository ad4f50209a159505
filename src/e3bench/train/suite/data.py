"""Text corpus → locally trained tokenizer → fixed-length token blocks → DataLoader.

Corpus sources: a text file (default ``$E3BENCH_DATA_DIR/text/tinyshakespeare.txt``) or a
Hugging Face dataset (``hf_dataset`` + ``hf_config`` + ``hf_split`` + ``hf_field``). The last
``val_fraction`` of the text is held out for validation (a contiguous tail, so no block of the
validation text is ever seen in training). The tokenizer is trained on the training part only,
with ``tokenizers`` (byte-level BPE, or one token per character): about a second for 1 MB.

Batches are identical across configurations with the same seed, batch size and block length:
the block start offsets of every step are drawn up front from ``seed``, independent of the
number of loader workers — so ``async_loader`` changes only *how* batches arrive, not *which*.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e3bench.core.errors import E3Error

DEFAULT_TEXT = "text/tinyshakespeare.txt"
_SPECIALS = ["<unk>", "<|endoftext|>"]


@dataclass
class Corpus:
    """A text split into a training part and a held-out contiguous tail (characters)."""

    source: str
    text_train: str
    text_val: str

    def describe(self) -> dict[str, Any]:
        """Source, character counts and a 16-hex SHA-256 of the text, for the record."""
        return {
            "source": self.source,
            "train_chars": len(self.text_train),
            "val_chars": len(self.text_val),
            "sha256_16": hashlib.sha256((self.text_train + self.text_val).encode()).hexdigest()[:16],
        }


def default_text_path() -> Path:
    """``<data dir>/text/tinyshakespeare.txt``; raises :class:`E3Error` without a data dir."""
    from e3bench.evals.data import ENV_VAR, data_dir

    root = data_dir()
    if root is None:
        raise E3Error(
            f"no training text given and ${ENV_VAR} is not set (the default corpus is "
            f"<data dir>/{DEFAULT_TEXT})",
            f"pass --text FILE (any UTF-8 text), set data.text in the suite TOML, or set {ENV_VAR}",
        )
    return root / DEFAULT_TEXT


def load_corpus(
    text: str | os.PathLike | None = None,
    *,
    hf_dataset: str | None = None,
    hf_config: str | None = None,
    hf_split: str = "train",
    hf_field: str = "text",
    max_chars: int | None = None,
    val_fraction: float = 0.1,
) -> Corpus:
    """Read the corpus (a text file, or the ``hf_field`` column of a Hugging Face dataset),
    cut it to ``max_chars`` and hold out the last ``val_fraction``.

    Raises :class:`E3Error` for a missing file, an unknown dataset or field, a corpus under
    2000 characters or ``val_fraction`` outside (0, 0.5).
    """
    if not 0.0 < val_fraction < 0.5:
        raise E3Error(f"val_fraction must be in (0, 0.5), got {val_fraction}", "e.g. data.val_fraction = 0.1")
    if hf_dataset:
        raw, source = _hf_text(hf_dataset, hf_config, hf_split, hf_field)
    else:
        from e3bench.evals.data import read_text, resolve_local_file

        path = Path(text) if text else default_text_path()
        if not path.is_file():
            try:
                path = resolve_local_file(path)
            except E3Error:
                raise E3Error(
                    f"training text file '{text or path}' not found",
                    "pass an existing UTF-8 text file with --text or data.text",
                ) from None
        raw = read_text(path)
        source = str(path)
    if max_chars:
        raw = raw[:max_chars]
    if len(raw) < 2000:
        raise E3Error(
            f"the training text from {source} has only {len(raw)} characters",
            "use a corpus of at least a few thousand characters",
        )
    cut = int(len(raw) * (1 - val_fraction))
    return Corpus(source=source, text_train=raw[:cut], text_val=raw[cut:])


def _hf_text(path: str, name: str | None, split: str, field: str) -> tuple[str, str]:
    """The ``field`` column of a dataset's ``split``, joined by newlines, and its source.

    Without a config it comes from the one dataset resolver (:func:`e3bench.evals.data.resolve`:
    ``<data dir>/<path>/<split>.jsonl`` first, then the hub). ``evals.data.resolve`` cannot
    name a hub config for datasets it does not know, so a corpus *with* ``hf_config`` still
    calls ``datasets.load_dataset`` here.
    """
    from e3bench.core.errors import require

    if name is None:
        from e3bench.evals.data import LINE_KEY, resolve

        d = resolve(path, split)
        fields = [k for k in (d.rows[0] if d.rows else {}) if k != LINE_KEY]
        if field not in fields:
            raise E3Error(f"dataset {path} has no field '{field}' (fields: {', '.join(fields)})",
                          "set data.hf_field to the text column")  # fmt: skip
        return "\n".join(str(r[field]) for r in d.rows), f"{d.source}:{field}"
    hf = require("datasets", "data", "a Hugging Face training corpus")
    try:
        ds = hf.load_dataset(path, name, split=split, trust_remote_code=False)  # never run a loading script
    except Exception as exc:  # noqa: BLE001 - hub/network/cache errors come in many types
        raise E3Error(
            f"could not load dataset {path} ({name}, split {split}): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}",
            "check the name and your connection, or pass a local text file with --text",
        ) from None
    if field not in ds.column_names:
        raise E3Error(
            f"dataset {path} has no field '{field}' (fields: {', '.join(ds.column_names)})",
            "set data.hf_field to the text column",
        )
    return "\n".join(str(x) for x in ds[field]), f"hf:{path}/{name}:{split}:{field}"


# ------------------------------------------------------------------------------- tokenizer
@dataclass
class TokenizedCorpus:
    """A tokenizer trained on a corpus and both splits encoded (1-D ``torch.long`` tensors)."""

    tokenizer: Any  # tokenizers.Tokenizer
    kind: str
    vocab_size: int
    train_ids: Any  # torch.LongTensor
    val_ids: Any
    train_seconds: float
    train_chars: int = 0

    def describe(self) -> dict[str, Any]:
        """Kind, vocabulary, token counts, characters per token and training seconds."""
        return {
            "kind": self.kind,
            "vocab_size": self.vocab_size,
            "train_tokens": int(self.train_ids.numel()),
            "val_tokens": int(self.val_ids.numel()),
            "chars_per_token": round(self.train_chars / max(1, int(self.train_ids.numel())), 3),
            "train_seconds": round(self.train_seconds, 3),
        }


def train_tokenizer(corpus: Corpus, kind: str = "bpe", vocab_size: int = 512) -> TokenizedCorpus:
    """Train a byte-level BPE (``bpe``) or character (``char``) tokenizer on the training text
    and encode both splits."""
    import time

    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    t0 = time.perf_counter()
    if kind == "bpe":
        if vocab_size < 260:
            raise E3Error(f"a byte-level BPE needs vocab_size ≥ 260, got {vocab_size}", "raise data.vocab_size")
        from e3bench.train.bpe import train_byte_bpe

        tok = train_byte_bpe(_chunks(corpus.text_train), vocab_size, _SPECIALS)
    elif kind == "char":
        chars = sorted(set(corpus.text_train))
        vocab = {c: i + len(_SPECIALS) for i, c in enumerate(chars)}
        for i, s in enumerate(_SPECIALS):
            vocab[s] = i
        tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
        tok.decoder = decoders.Fuse()
    else:
        raise E3Error(f"unknown tokenizer kind '{kind}'", "use data.tokenizer = \"bpe\" or \"char\"")

    def encode(text: str):
        ids: list[int] = []
        for enc in tok.encode_batch(list(_chunks(text))):
            ids.extend(enc.ids)
        return torch.tensor(ids, dtype=torch.long)

    train_ids, val_ids = encode(corpus.text_train), encode(corpus.text_val)
    return TokenizedCorpus(
        tokenizer=tok,
        kind=kind,
        vocab_size=tok.get_vocab_size(),
        train_ids=train_ids,
        val_ids=val_ids,
        train_seconds=time.perf_counter() - t0,
        train_chars=len(corpus.text_train),
    )


def _chunks(text: str, size: int = 4096):
    """Split at newlines into ~``size``-character pieces (the pieces concatenate to ``text``)."""
    start = 0
    n = len(text)
    while start < n:
        end = min(start + size, n)
        if end < n:
            nl = text.rfind("\n", start, end)
            if nl > start:
                end = nl + 1
        yield text[start:end]
        start = end


# -------------------------------------------------------------------------------- blocks
class BlockDataset:
    """Item ``i`` of step ``s`` is the block ``ids[o : o + block_len]`` with ``o`` drawn up front."""

    def __init__(self, ids, offsets, block_len: int) -> None:
        self.ids = ids
        self.offsets = offsets
        self.block_len = block_len

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, i: int):
        o = int(self.offsets[i])
        return self.ids[o : o + self.block_len]


def train_offsets(n_tokens: int, block_len: int, n_blocks: int, seed: int):
    """``n_blocks`` seeded block start offsets in ``[0, n_tokens - block_len)`` (a tensor).
    Raises :class:`E3Error` when the text is shorter than one block."""
    import torch

    if n_tokens <= block_len + 1:
        raise E3Error(
            f"the training text has {n_tokens} tokens, fewer than one block of {block_len}",
            "use a longer text or a smaller model.seq_len",
        )
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, n_tokens - block_len, (n_blocks,), generator=g)


def make_train_loader(
    ids, *, block_len: int, batch_size: int, steps: int, seed: int,
    num_workers: int = 0, prefetch_factor: int | None = None, pin_memory: bool = False,
):  # fmt: skip
    """A DataLoader yielding ``steps`` batches of shape [batch_size, block_len] (same batches
    for any ``num_workers``)."""
    from torch.utils.data import DataLoader

    offsets = train_offsets(int(ids.numel()), block_len, steps * batch_size, seed)
    ds = BlockDataset(ids, offsets, block_len)
    kwargs: dict[str, Any] = {}
    if num_workers > 0:
        kwargs["prefetch_factor"] = prefetch_factor or 2
        kwargs["persistent_workers"] = False
    with quiet_worker_check():
        return DataLoader(
            ds, batch_size=batch_size, shuffle=False, num_workers=num_workers,
            pin_memory=pin_memory, drop_last=True, **kwargs,
        )  # fmt: skip


@contextlib.contextmanager
def quiet_worker_check():
    """Silence torch's "suggested max number of worker" UserWarning (printed at DataLoader
    creation and again at ``iter``); the suite records its own one line instead
    (:func:`workers_warning`)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*suggested max number of worker.*", category=UserWarning)
        yield


def workers_warning(num_workers: int) -> str | None:
    """One line when ``num_workers`` loader processes exceed the CPUs this process may use."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if num_workers <= cores:
        return None
    return (f"data.num_workers = {num_workers} loader processes on {cores} usable CPU cores: they compete with "
            "training for CPU (the published setting is kept; loading here is cheap slicing of token blocks)")


def val_batches(ids, *, block_len: int, batch_size: int, n_batches: int) -> list:
    """Fixed, evenly spaced validation blocks (the same for every config and evaluation)."""
    import torch

    n = int(ids.numel())
    total = batch_size * n_batches
    if n <= block_len + 1:
        raise E3Error(
            f"the validation text has {n} tokens, fewer than one block of {block_len}",
            "raise data.val_fraction or use a longer text",
        )
    starts = torch.linspace(0, n - block_len - 1, total).long()
    blocks = torch.stack([ids[s : s + block_len] for s in starts.tolist()])
    return list(blocks.split(batch_size))
