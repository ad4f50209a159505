"""The model a fine-tuning run trains: loaded with the head its architecture classifies with,
optionally wrapped with LoRA adapters."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from e3bench.core.errors import E3Error
from e3bench.train.finetune.config import FinetuneConfig
from e3bench.train.finetune.data import TaskData

Progress = Callable[[str], None]


@dataclass
class Loaded:
    """A model ready for fine-tuning and how it classifies: ``mode`` ``labels`` (one answer set
    for every item; ``label_token_ids`` are the verbalizer's first tokens for decoders) or
    ``choices`` (per-item answers), ``head`` a one-line description for the record."""

    model: Any
    tokenizer: Any
    architecture: str
    model_type: str
    path: str
    mode: str  # labels | choices
    labels: list[str] | None
    label_token_ids: list[int] | None
    head: str
    notes: list[str]
    supports_logits_to_keep: bool = False
    #: encoder-only: the pooling the model folder declares (sentence-transformers'
    #: ``modules.json`` → ``1_Pooling/config.json``): ``mean``, ``cls`` or ``max`` over the last
    #: hidden states, then ``classifier``; None: the architecture's own head (BERT: pooler on [CLS])
    pooling: str | None = None


def load_model(cfg: FinetuneConfig, data: TaskData, progress: Progress) -> Loaded:
    """Load ``cfg.model`` through the one loader (:func:`e3bench.backends.models.load_pretrained`)
    with the head its architecture classifies with (see :mod:`e3bench.train.finetune`); the
    mode comes from ``data``'s answer sets (and, for decoders, from the labels' first tokens).

    Raises :class:`E3Error` when the model cannot be resolved or loaded.
    """
    import inspect

    from e3bench.backends.models import load_pretrained

    choice_sets = {tuple(r["choices"]) for r in data.train + data.eval}
    mode = "labels" if len(choice_sets) == 1 else "choices"
    labels = list(next(iter(choice_sets))) if mode == "labels" else None
    # encoder-only models get a classification head: one logit per label, or one per pair
    pre = load_pretrained(
        cfg.model, classifier_labels=len(labels) if labels else 1, trust_remote_code=cfg.trust_remote_code
    )
    model, tok, arch = pre.model, pre.tokenizer, pre.architecture
    notes = list(pre.notes)
    for n in notes:
        progress(n)
    label_ids = None
    if mode == "labels" and arch != "encoder-only":
        prefix = " " if arch == "decoder-only" else ""
        label_ids = [tok(prefix + lab, add_special_tokens=False)["input_ids"][0] for lab in labels]
        if len(set(label_ids)) < len(label_ids):
            notes.append(f"labels {labels} share their first token; scoring whole label sequences instead")
            mode, label_ids = "choices", None
    pooling = None
    if arch == "encoder-only":
        n_labels = len(labels) if mode == "labels" else 1
        head = f"sequence-classification head, {n_labels} logit{'' if n_labels == 1 else 's'}" + (
            " per (query, choice) pair" if mode == "choices" else " (one per label)"
        )
        pooling, why = declared_pooling(pre.path)
        if why:
            notes.append(why)
        if pooling:
            head += f", on the {pooling}-pooled last hidden states ({POOLING_SOURCE})"
            _pooled_classifier(model, n_labels)
    elif arch == "encoder-decoder":
        head = "LM head verbalizer on the decoder's first step" if mode == "labels" else "sum log p(choice) as decoder target"
    else:
        head = "LM head verbalizer at the last prompt token" if mode == "labels" else "sum log p(choice | query)"
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tok.pad_token_id
    model.config.use_cache = False
    keep = "logits_to_keep" in inspect.signature(type(model).forward).parameters
    return Loaded(
        supports_logits_to_keep=keep,
        model=model, tokenizer=tok, architecture=arch, model_type=pre.config.model_type, path=pre.path,
        mode=mode, labels=labels, label_token_ids=label_ids, head=head, notes=notes, pooling=pooling,
    )  # fmt: skip


#: where :func:`declared_pooling` reads an encoder's pooling from
POOLING_SOURCE = "the model folder's sentence-transformers pooling config"
_POOLING_KEYS = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max"}


def declared_pooling(path: str) -> tuple[str | None, str | None]:
    """(pooling, note) of the encoder in the folder ``path``: the pooling the model was trained
    with, as sentence-transformers declares it (``modules.json`` names a ``Pooling`` module whose
    ``config.json`` sets one ``pooling_mode_*``): ``mean``, ``cls`` or ``max``. A sentence
    embedding model's [CLS] token and BERT pooler are not what it was trained on
    (all-MiniLM-L6-v2 ships an untrained pooler), so its classifier reads the declared pooling.
    (None, None) for a folder without such a declaration (hub ids, plain checkpoints: the
    architecture's own head); (None, note) for a pooling e3bench does not implement."""
    import json
    from pathlib import Path

    folder = Path(path)
    try:
        modules = json.loads((folder / "modules.json").read_text())
        pool = next(m for m in modules if str(m.get("type", "")).endswith(".Pooling"))
        conf = json.loads((folder / pool.get("path", "") / "config.json").read_text())
    except (OSError, ValueError, StopIteration, AttributeError, TypeError):
        return None, None
    on = [k for k, v in conf.items() if k.startswith("pooling_mode_") and v is True]
    if len(on) == 1 and on[0] in _POOLING_KEYS:
        return _POOLING_KEYS[on[0]], None
    return None, f"pooling {', '.join(on) or 'none'} declared by {folder}: not implemented, the architecture's own head is used"


def _pooled_classifier(model, n_labels: int) -> None:
    """Give ``model`` (an ``AutoModelForSequenceClassification``) the classifier the pooled
    path uses: ``classifier`` = dropout + Linear(hidden, n_labels), new weights. The name stays
    ``classifier``, so peft trains it in full (``modules_to_save``) and checkpoints carry it."""
    import torch

    c = model.config
    p = next((x for x in (getattr(c, "classifier_dropout", None), getattr(c, "hidden_dropout_prob", None)) if x is not None), 0.1)
    lin = torch.nn.Linear(c.hidden_size, n_labels)
    torch.nn.init.normal_(lin.weight, std=getattr(c, "initializer_range", 0.02))
    torch.nn.init.zeros_(lin.bias)
    model.classifier = torch.nn.Sequential(torch.nn.Dropout(p), lin)


def pooled_logits(ld: Loaded, model, enc: dict):
    """Logits [B, n] of an encoder whose folder declares its pooling (``ld.pooling``): the
    encoder body's last hidden states (LoRA adapters included), pooled over the attention mask,
    through ``classifier``. Without a declared pooling: the model's own forward."""
    if ld.pooling is None:
        return model(**enc).logits
    import torch

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    body = getattr(inner, inner.base_model_prefix)
    hidden = body(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    if ld.pooling == "cls":
        pooled = hidden[:, 0]
    elif ld.pooling == "max":
        pooled = hidden.masked_fill(mask == 0, torch.finfo(hidden.dtype).min).max(1).values
    else:
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
    return inner.classifier(pooled)


def head_modules(ld: Loaded) -> list[str]:
    """Modules trained in full beside the LoRA adapters, besides the classifier (peft adds
    ``classifier``/``score`` itself): an encoder's ``pooler`` (BERT's dense + tanh over [CLS]),
    which is part of the classification head. Pretrained checkpoints often carry an untrained one
    (all-MiniLM-L6-v2's pooler bias is all zeros, its weights at init scale: sentence-transformers
    trains with mean pooling), and frozen it shrinks [CLS] ~10x before the classifier: MiniLM LoRA on
    BoolQ stayed at the majority class for 50 steps of 16 items."""
    if ld.architecture != "encoder-only" or ld.pooling:  # a declared pooling bypasses the pooler
        return []
    base = getattr(ld.model, getattr(ld.model, "base_model_prefix", ""), None)
    return ["pooler"] if getattr(base, "pooler", None) is not None else []


def apply_lora(cfg: FinetuneConfig, ld: Loaded):
    """Wrap ``ld.model`` with peft LoRA adapters (task type from the architecture).

    Raises :class:`E3Error` listing the model's Linear modules when the targets do not match,
    :class:`~e3bench.core.errors.MissingExtra` without peft.
    """
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    from e3bench.core.errors import require

    peft = require("peft", "train", "LoRA fine-tuning")
    task_type = {
        "encoder-only": peft.TaskType.SEQ_CLS,
        "encoder-decoder": peft.TaskType.SEQ_2_SEQ_LM,
        "decoder-only": peft.TaskType.CAUSAL_LM,
    }[ld.architecture]
    save = head_modules(ld)
    if save:
        ld.head += f"; the {', '.join(save)} trained with it"
    lcfg = peft.LoraConfig(
        r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, modules_to_save=save or None,
        target_modules=list(cfg.lora_targets) if cfg.lora_targets else None, task_type=task_type,
    )  # fmt: skip
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # transformers 5 renamed checkpointing APIs
            return peft.get_peft_model(ld.model, lcfg)
    except ValueError as exc:
        import torch

        linears = sorted({n.rsplit(".", 1)[-1] for n, m in ld.model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise E3Error(
            f"LoRA could not be applied to {ld.model_type}: {str(exc).splitlines()[0][:200]}",
            f"pass --lora-targets with some of this model's Linear modules: {', '.join(linears[:12])}",
        ) from None
