"""``e3bench finetune``: LoRA (peft) or full fine-tuning on classification tasks, for
encoder-only, encoder-decoder and decoder-only models, measured for speed, memory, energy and
time/energy to a target validation accuracy.

How each architecture classifies (the ``method`` block of the record says which one ran):

* **labels** mode — every item has the same answer set (BoolQ: ``["no", "yes"]``):
  - encoder-only: a sequence-classification head (``AutoModelForSequenceClassification``,
    one logit per label) on the query; with LoRA the head is trained fully (peft
    ``modules_to_save``), the encoder through adapters.
  - decoder-only: *verbalizer* — the LM head's logits for the first token of ``" " + label``
    at the last position of ``query + "\\nAnswer:"``; no new parameters, so the pretrained LM
    head's knowledge of "yes"/"no" is used from step 0.
  - encoder-decoder: the same verbalizer on the decoder's first step (encoder reads the query).
* **choices** mode — answers differ per item (COPA, ARC): each (query, choice) pair is scored and
  the scores are compared with a softmax over the item's choices:
  - encoder-only: one-logit classification head on the pair ``[CLS] query [SEP] choice``;
  - decoder-only / encoder-decoder: sum of log-probabilities of the choice's tokens (lm-eval's
    ``acc``) after ``query`` (decoder) or as the decoder target (encoder-decoder).
  Labels mode falls back to choices mode when two labels share their first token.

The loss is the cross-entropy of the gold answer over these scores; accuracy is argmax = gold.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import os
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from e3bench.core.errors import E3Error
from e3bench.core.timing import clock
from e3bench.train.records import EvalPoint, FinetuneRecord, TargetResult

Progress = Callable[[str], None]
FT_TASKS = ("boolq", "copa", "arc_easy", "openbookqa", "hellaswag")
PROMPT_SUFFIX = "\nAnswer:"


class FinetuneConfig(BaseModel):
    """Everything that defines a fine-tuning run. Fields in :meth:`identity` define the
    checkpoint a ``--resume`` continues (budgets, evaluation cadence and metering may change)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    task: str = "boolq"
    train_file: str | None = None
    eval_file: str | None = None
    mode: Literal["lora", "full"] = "lora"
    lora_r: int = Field(8, ge=1)
    lora_alpha: int = Field(16, ge=1)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    lora_targets: tuple[str, ...] | None = None
    optimizer: str = "adamw"
    lr: float | None = Field(None, gt=0)  # default: 5e-4 LoRA, 5e-5 full
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(0, ge=0)
    batch_size: int = Field(8, ge=1)
    max_steps: int = Field(100, ge=0)
    max_train_samples: int | None = Field(None, ge=1)
    max_eval_samples: int = Field(200, ge=1)
    eval_every: int = Field(20, ge=1)
    target_accuracy: float = Field(0.7, gt=0, le=1)
    max_seq_len: int = Field(256, ge=16)
    grad_clip: float | None = Field(1.0, gt=0)
    grad_checkpointing: bool = False
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    meter: str = "auto"
    idle_seconds: float = Field(2.0, ge=0)
    cpu_tdp_w: float | None = None
    region: str | None = None
    threads: int | None = None
    output_dir: str = "results"
    checkpoint_every: int | None = Field(None, ge=1)  # default: at every evaluation
    # diverged: loss not finite, or above diverge_factor × max(first loss, ln(number of choices))
    diverge_factor: float = Field(20.0, gt=1)

    @property
    def effective_lr(self) -> float:
        return self.lr if self.lr is not None else (5e-4 if self.mode == "lora" else 5e-5)

    def identity(self) -> dict[str, Any]:
        keys = (
            "model", "task", "train_file", "eval_file", "mode", "lora_r", "lora_alpha", "lora_dropout",
            "lora_targets", "optimizer", "weight_decay", "warmup_steps", "batch_size", "max_train_samples",
            "max_eval_samples", "max_seq_len", "grad_clip", "seed", "precision",
        )  # fmt: skip
        d = {k: getattr(self, k) for k in keys}
        d["lr"] = self.effective_lr
        return d

    def config_hash(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def slug(self) -> str:
        name = Path(self.model).name if os.sep in self.model else self.model
        safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in name)[:40]
        return f"{safe}-{self.task}-{self.mode}-{self.config_hash()[:10]}"


# ----------------------------------------------------------------------------------- data
@dataclass
class TaskData:
    train: list[dict]
    eval: list[dict]
    info: dict[str, Any]


def _mc_rows(path: Path) -> list[dict]:
    from e3bench.evals.data import read_jsonl, validate_multiple_choice

    rows = read_jsonl(path)
    validate_multiple_choice(rows, str(path))
    return rows


def load_task_data(cfg: FinetuneConfig) -> TaskData:
    """Train and validation items ``{query, choices, gold}``.

    Order: ``--train-file``/``--eval-file``; else ``$E3BENCH_DATA_DIR/<task>/train.jsonl`` with
    ``test.jsonl`` (e3bench's name for the task's public evaluation split); else — when the local
    directory has only the evaluation split, as ../shared/data does — a seeded split of it into
    disjoint train and held-out parts (said in ``info``: such numbers are not comparable with
    published results); else the Hugging Face hub (train and validation splits).
    """
    from e3bench.evals import data as ds

    rng = random.Random(cfg.seed)
    info: dict[str, Any] = {"task": cfg.task}
    if cfg.train_file:
        from e3bench.evals.data import resolve_local_file

        train = _mc_rows(resolve_local_file(cfg.train_file))
        info["train_source"] = cfg.train_file
        if cfg.eval_file:
            evals = _mc_rows(resolve_local_file(cfg.eval_file))
            info["eval_source"] = cfg.eval_file
        else:
            train, evals = _split(train, cfg.max_eval_samples, rng)
            info["eval_source"] = f"held-out part of {cfg.train_file} (seed {cfg.seed})"
    else:
        if cfg.task not in FT_TASKS:
            import difflib

            near = difflib.get_close_matches(cfg.task, FT_TASKS, n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            raise E3Error(
                f"unknown fine-tuning task '{cfg.task}'{hint}",
                f"use one of: {', '.join(FT_TASKS)}, or --train-file/--eval-file JSONL {{query, choices, gold}}",
            )
        spec = ds.DATASETS[cfg.task]
        root = ds.data_dir()
        local = root / spec.local_name if root is not None else None
        if local is not None and (local / "train.jsonl").is_file():
            train = _mc_rows(local / "train.jsonl")
            evals = _mc_rows(local / "test.jsonl") if (local / "test.jsonl").is_file() else None
            info["train_source"] = str(local / "train.jsonl")
            if evals is None:
                train, evals = _split(train, cfg.max_eval_samples, rng)
                info["eval_source"] = "held-out part of train.jsonl"
            else:
                info["eval_source"] = str(local / "test.jsonl")
        elif local is not None and (local / "test.jsonl").is_file():
            rows = _mc_rows(local / "test.jsonl")
            n_eval = min(cfg.max_eval_samples, max(1, len(rows) * 3 // 10))
            train, evals = _split(rows, n_eval, rng)
            info["train_source"] = f"{local / 'test.jsonl'} minus the held-out items"
            info["eval_source"] = f"{n_eval} items of {local / 'test.jsonl'} held out (seed {cfg.seed})"
            info["split_note"] = (
                "the local data directory has only the task's public evaluation split; it was split "
                "into disjoint fine-tuning and held-out parts, so accuracies are not comparable with "
                "published validation results"
            )
        else:
            train = ds.load_dataset_rows(cfg.task, "train")
            evals = ds.load_dataset_rows(cfg.task, "test")
            info["train_source"] = f"hub {spec.hub_path}/{spec.hub_name} train"
            info["eval_source"] = f"hub {spec.hub_path}/{spec.hub_name} {spec.hub_splits.get('test')}"
    rng.shuffle(train)
    if cfg.max_train_samples:
        train = train[: cfg.max_train_samples]
    if len(evals) > cfg.max_eval_samples:
        evals = random.Random(cfg.seed + 1).sample(evals, cfg.max_eval_samples)
    if not train or not evals:
        raise E3Error(f"task '{cfg.task}' has no training or evaluation items", "check the data files")
    golds = [r["gold"] for r in evals]
    majority = max(golds.count(g) for g in set(golds)) / len(golds)
    info.update(n_train=len(train), n_eval=len(evals), majority_class_accuracy=majority)
    return TaskData(train=train, eval=evals, info=info)


def _split(rows: list[dict], n_eval: int, rng: random.Random) -> tuple[list[dict], list[dict]]:
    rows = list(rows)
    rng.shuffle(rows)
    n_eval = min(n_eval, len(rows) // 2)
    return rows[n_eval:], rows[:n_eval]


# ---------------------------------------------------------------------------------- model
@dataclass
class Loaded:
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


def _resolve_path(name: str, progress: Progress) -> tuple[Any, str]:
    from e3bench.backends import models

    spec = models.resolve(name)
    if spec.source == "gguf":
        path, cached = models.load_converted_gguf(spec)
        if not cached:
            progress(f"converted {spec.gguf_file} to safetensors (cached for next time): {path}")
        return spec, str(path)
    return spec, spec.path


def _hub_error(path: str, exc: Exception) -> E3Error:
    return E3Error(
        f"could not load '{path}': {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}",
        "connect to the hub once to cache it, or pass a local model directory / .gguf file "
        "(e.g. --model smollm2-135m)",
    )


def load_model(cfg: FinetuneConfig, data: TaskData, progress: Progress) -> Loaded:
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForSeq2SeqLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )
    from e3bench.backends.models import detect_architecture
    from e3bench.core.quiet import quiet_libraries

    quiet_libraries()
    _, path = _resolve_path(cfg.model, progress)
    try:
        config = AutoConfig.from_pretrained(path)
        tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise _hub_error(path, exc) from None
    arch = detect_architecture(config)
    notes: list[str] = []
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token or tok.unk_token
        notes.append("tokenizer has no pad token; using eos/unk for padding")
    choice_sets = {tuple(r["choices"]) for r in data.train + data.eval}
    mode = "labels" if len(choice_sets) == 1 else "choices"
    labels = list(next(iter(choice_sets))) if mode == "labels" else None
    label_ids = None
    if mode == "labels" and arch != "encoder-only":
        prefix = " " if arch == "decoder-only" else ""
        label_ids = [tok(prefix + lab, add_special_tokens=False)["input_ids"][0] for lab in labels]
        if len(set(label_ids)) < len(label_ids):
            notes.append(f"labels {labels} share their first token; scoring whole label sequences instead")
            mode, label_ids = "choices", None
    try:
        if arch == "encoder-only":
            n_labels = len(labels) if mode == "labels" else 1
            model = AutoModelForSequenceClassification.from_pretrained(
                path, num_labels=n_labels, ignore_mismatched_sizes=True
            )
            head = f"sequence-classification head, {n_labels} logit(s)" + (
                " per (query, choice) pair" if mode == "choices" else " (one per label)"
            )
        elif arch == "encoder-decoder":
            model = AutoModelForSeq2SeqLM.from_pretrained(path)
            head = "LM head verbalizer on the decoder's first step" if mode == "labels" else "sum log p(choice) as decoder target"
        else:
            model = AutoModelForCausalLM.from_pretrained(path)
            head = "LM head verbalizer at the last prompt token" if mode == "labels" else "sum log p(choice | query)"
    except (OSError, ValueError) as exc:
        raise _hub_error(path, exc) from None
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tok.pad_token_id
    model.config.use_cache = False
    import inspect

    keep = "logits_to_keep" in inspect.signature(type(model).forward).parameters
    return Loaded(
        supports_logits_to_keep=keep,
        model=model, tokenizer=tok, architecture=arch, model_type=config.model_type, path=path,
        mode=mode, labels=labels, label_token_ids=label_ids, head=head, notes=notes,
    )  # fmt: skip


def apply_lora(cfg: FinetuneConfig, ld: Loaded):
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    from e3bench.core.errors import require

    peft = require("peft", "train", "LoRA fine-tuning")
    task_type = {
        "encoder-only": peft.TaskType.SEQ_CLS,
        "encoder-decoder": peft.TaskType.SEQ_2_SEQ_LM,
        "decoder-only": peft.TaskType.CAUSAL_LM,
    }[ld.architecture]
    lcfg = peft.LoraConfig(
        r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
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


# ------------------------------------------------------------------------------ batching
class Scorer:
    """Builds batches and turns model outputs into per-choice scores [B, C] (see module doc)."""

    def __init__(self, ld: Loaded, max_len: int, device: str) -> None:
        self.ld = ld
        self.tok = ld.tokenizer
        self.max_len = max_len
        self.device = device
        self.pad = self.tok.pad_token_id

    # -- tokenisation helpers
    def _ids(self, text: str, special: bool) -> list[int]:
        return list(self.tok(text, add_special_tokens=special)["input_ids"])

    def _left_trunc(self, ids: list[int], room: int) -> list[int]:
        if len(ids) <= room:
            return ids
        bos = self.tok.bos_token_id
        keep_first = bos is not None and ids and ids[0] == bos
        return ([ids[0]] if keep_first else []) + ids[len(ids) - room + int(keep_first) :]

    def _pad(self, seqs: list[list[int]], value: int, *, left: bool = False):
        import torch

        n = max(len(s) for s in seqs)
        out = torch.full((len(seqs), n), value, dtype=torch.long)
        mask = torch.zeros((len(seqs), n), dtype=torch.long)
        for i, s in enumerate(seqs):
            sl = slice(n - len(s), n) if left else slice(0, len(s))
            out[i, sl] = torch.tensor(s, dtype=torch.long)
            mask[i, sl] = 1
        return out, mask

    # -- scoring
    def scores(self, model, rows: list[dict]):
        """Return (scores [B, C] float32, gold [B], tokens processed)."""
        import torch

        gold = torch.tensor([r["gold"] for r in rows], dtype=torch.long, device=self.device)
        arch, mode = self.ld.architecture, self.ld.mode
        if arch == "encoder-only":
            return (*self._encoder(model, rows, mode), gold)
        if mode == "labels":
            return (*self._verbalizer(model, rows), gold)
        return (*self._sequence(model, rows), gold)

    def _encoder(self, model, rows, mode):

        tok = self.tok
        tok.truncation_side = "left"  # keep the end of the query: BoolQ's question is last
        if mode == "labels":
            enc = tok([r["query"] for r in rows], truncation=True, max_length=self.max_len, padding=True, return_tensors="pt")
            enc = {k: v.to(self.device) for k, v in enc.items()}
            logits = model(**enc).logits.float()
            return logits, int(enc["attention_mask"].sum())
        pairs_q, pairs_c, owner = [], [], []
        for i, r in enumerate(rows):
            for c in r["choices"]:
                pairs_q.append(r["query"])
                pairs_c.append(c)
                owner.append(i)
        enc = tok(pairs_q, pairs_c, truncation="only_first", max_length=self.max_len, padding=True, return_tensors="pt")
        enc = {k: v.to(self.device) for k, v in enc.items()}
        flat = model(**enc).logits.float().squeeze(-1)
        return self._regroup(flat, rows), int(enc["attention_mask"].sum())

    def _regroup(self, flat, rows):
        import torch

        c_max = max(len(r["choices"]) for r in rows)
        out = torch.full((len(rows), c_max), float("-inf"), device=flat.device)
        k = 0
        for i, r in enumerate(rows):
            n = len(r["choices"])
            out[i, :n] = flat[k : k + n]
            k += n
        return out

    def _verbalizer(self, model, rows):
        import torch

        ids_list = []
        for r in rows:
            if self.ld.architecture == "decoder-only":
                ids = self._left_trunc(self._ids(r["query"] + PROMPT_SUFFIX, True), self.max_len)
            else:
                ids = self._ids(r["query"] + PROMPT_SUFFIX, True)
                if len(ids) > self.max_len:  # keep the end (question) and the closing special token
                    ids = ids[len(ids) - self.max_len :]
            ids_list.append(ids)
        decoder = self.ld.architecture == "decoder-only"
        # decoders: left padding, so the last position is every row's last prompt token and only
        # its logits are computed (logits_to_keep=1; RoPE positions are relative, so the shift
        # from left padding does not change the scores)
        inp, mask = self._pad(ids_list, self.pad, left=decoder)
        inp, mask = inp.to(self.device), mask.to(self.device)
        label_ids = torch.tensor(self.ld.label_token_ids, device=self.device)
        if decoder:
            kw = {"logits_to_keep": 1} if self.ld.supports_logits_to_keep else {}
            logits = model(input_ids=inp, attention_mask=mask, **kw).logits
            return logits[:, -1].float()[:, label_ids], int(mask.sum())
        start = model.config.decoder_start_token_id
        if start is None:
            start = self.pad
        dec = torch.full((len(rows), 1), start, dtype=torch.long, device=self.device)
        logits = model(input_ids=inp, attention_mask=mask, decoder_input_ids=dec).logits
        return logits[:, 0].float()[:, label_ids], int(mask.sum()) + len(rows)

    def _sequence(self, model, rows):
        import torch

        arch = self.ld.architecture
        flat_ctx, flat_cont = [], []
        for r in rows:
            for c in r["choices"]:
                flat_ctx.append(r["query"])
                flat_cont.append(c)
        if arch == "decoder-only":
            seqs, cont_mask = [], []
            for q, c in zip(flat_ctx, flat_cont, strict=True):
                c_ids = self._ids(" " + c, False)[: self.max_len // 2]
                q_ids = self._left_trunc(self._ids(q, True), self.max_len - len(c_ids))
                seqs.append(q_ids + c_ids)
                cont_mask.append([0] * len(q_ids) + [1] * len(c_ids))
            inp, mask = self._pad(seqs, self.pad)
            cm, _ = self._pad(cont_mask, 0)
            inp, mask, cm = inp.to(self.device), mask.to(self.device), cm.to(self.device)
            logits = model(input_ids=inp, attention_mask=mask).logits.float()
            logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, inp[:, 1:, None]).squeeze(-1)
            flat = (logp * cm[:, 1:]).sum(1)
            return self._regroup(flat, rows), int(mask.sum())
        # encoder-decoder: query → encoder, choice → decoder target
        enc_ids = []
        for q in flat_ctx:
            ids = self._ids(q, True)
            enc_ids.append(ids[len(ids) - self.max_len :] if len(ids) > self.max_len else ids)
        tgt = [self._ids(c, True)[: self.max_len // 2] for c in flat_cont]
        inp, mask = self._pad(enc_ids, self.pad)
        lab, lmask = self._pad(tgt, self.pad)
        start = model.config.decoder_start_token_id
        if start is None:
            start = self.pad
        dec = torch.cat([torch.full((lab.size(0), 1), start, dtype=torch.long), lab[:, :-1]], 1)
        inp, mask, lab, lmask, dec = (t.to(self.device) for t in (inp, mask, lab, lmask, dec))
        logits = model(input_ids=inp, attention_mask=mask, decoder_input_ids=dec).logits.float()
        logp = torch.log_softmax(logits, -1).gather(-1, lab[..., None]).squeeze(-1)
        flat = (logp * lmask).sum(1)
        return self._regroup(flat, rows), int(mask.sum()) + int(lmask.sum())


# ----------------------------------------------------------------------------- checkpoint
def _save_checkpoint(ckpt: Path, model, opt, scaler, state: dict[str, Any], peft_model: bool) -> None:
    """Trainable weights + optimizer + scaler + trainer state, written to a temp dir then swapped in."""
    import torch

    tmp = ckpt.with_name(ckpt.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    trainable = {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}
    torch.save(trainable, tmp / "trainable_state.pt")
    torch.save(opt.state_dict(), tmp / "optimizer.pt")
    torch.save({"scaler": scaler.state_dict(), "torch_rng": torch.get_rng_state()}, tmp / "extra.pt")
    if peft_model:
        model.save_pretrained(tmp / "adapter")  # a normal peft adapter directory, for users
    (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1))
    old = ckpt.with_name(ckpt.name + ".old")
    if ckpt.exists():
        if old.exists():
            shutil.rmtree(old)
        ckpt.rename(old)
    tmp.rename(ckpt)
    if old.exists():
        shutil.rmtree(old)


def _load_checkpoint(ckpt: Path, model, opt, scaler) -> dict[str, Any]:
    import torch

    state = json.loads((ckpt / "trainer_state.json").read_text())
    trainable = torch.load(ckpt / "trainable_state.pt", map_location="cpu")
    params = dict(model.named_parameters())
    missing = [n for n in trainable if n not in params]
    if missing:
        raise E3Error(
            f"checkpoint {ckpt} does not match the model ({len(missing)} unknown tensors, e.g. {missing[0]})",
            "delete the checkpoint directory or run without --resume",
        )
    with torch.no_grad():
        for n, t in trainable.items():
            params[n].copy_(t.to(params[n].device))
    opt.load_state_dict(torch.load(ckpt / "optimizer.pt", map_location="cpu", weights_only=False))
    extra = torch.load(ckpt / "extra.pt", map_location="cpu", weights_only=False)
    scaler.load_state_dict(extra.get("scaler", {}))
    torch.set_rng_state(extra["torch_rng"])
    return state


# ---------------------------------------------------------------------------------- run
def run_finetune(cfg: FinetuneConfig, *, resume: bool = False, progress: Progress | None = None) -> tuple[FinetuneRecord, Path]:
    """Fine-tune, evaluate periodically, checkpoint, and write the record. Returns (record, path)."""
    import torch

    from e3bench.bench import envinfo
    from e3bench.core.fsutil import atomic_write_text
    from e3bench.train import common, optim

    progress = progress or (lambda _m: None)
    t_run = clock()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    optim.check_optimizer_name(cfg.optimizer, "--optimizer: ")
    from e3bench.energy import carbon

    carbon.lookup(cfg.region)
    common.set_threads(cfg.threads)
    device = common.resolve_device(cfg.device)
    prec = common.resolve_precision(cfg.precision, device)
    data = load_task_data(cfg)
    progress(
        f"{cfg.task}: {data.info['n_train']} train / {data.info['n_eval']} eval items "
        f"(majority class {data.info['majority_class_accuracy']:.3f})"
    )
    manifest = envinfo.collect(torch_threads=cfg.threads)
    manifest.torch_threads = torch.get_num_threads()
    warnings: list[str] = []
    busy = envinfo.busy_warning(manifest) if device == "cpu" else None
    if busy:
        warnings.append(busy)
    if data.info.get("split_note"):
        warnings.append(data.info["split_note"])

    common.seed_everything(cfg.seed)
    t0 = clock()
    ld = load_model(cfg, data, progress)
    model = ld.model
    if cfg.grad_checkpointing:
        from e3bench.train.mtp import enable_checkpointing

        enable_checkpointing(model)
    if cfg.mode == "lora":
        model = apply_lora(cfg, ld)
    model.to(device)
    load_s = clock() - t0
    total_params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    progress(
        f"{ld.architecture} {ld.model_type}: {total_params:,} params, {trainable:,} trainable "
        f"({cfg.mode}); {ld.mode} mode — {ld.head}; load {load_s:.1f} s"
    )
    settings = optim.OptimSettings(name=cfg.optimizer, lr=cfg.effective_lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.999))
    opt, opt_detail = optim.build_optimizer(model.named_parameters(), settings, device=device)
    scaler = common.make_grad_scaler(device, prec)
    scorer = Scorer(ld, cfg.max_seq_len, device)

    ckpt = Path(cfg.output_dir) / "finetune" / "checkpoints" / cfg.slug()
    state: dict[str, Any] = {
        "step": 0, "samples": 0, "tokens": 0, "train_time_s": 0.0, "wall_time_s": 0.0,
        "train_energy_j": 0.0, "train_energy_gross_j": 0.0, "evals": [], "loss_curve": [],
        "step_times_ms": [], "config_hash": cfg.config_hash(),
    }  # fmt: skip
    resumed_from = None
    if resume:
        if (ckpt / "trainer_state.json").is_file():
            state = _load_checkpoint(ckpt, model, opt, scaler)
            resumed_from = state["step"]
            progress(f"resumed from {ckpt} at step {resumed_from}")
        else:
            warnings.append(f"--resume: no checkpoint at {ckpt}; started from scratch")
            progress(warnings[-1])

    session = common.EnergySession(
        cfg.meter, device=device, cpu_tdp_w=cfg.cpu_tdp_w, idle_seconds=cfg.idle_seconds,
        region=cfg.region, progress=progress,
    )  # fmt: skip
    if resumed_from and state.get("energy_sensor") and state["energy_sensor"] != session.reason:
        warnings.append("the checkpoint's energy came from a different meter; cumulative energy mixes sensors")

    n_train = len(data.train)
    bs = min(cfg.batch_size, n_train)
    per_epoch = max(1, n_train // bs)

    def batch_rows(step: int) -> list[dict]:
        epoch, k = divmod(step, per_epoch)
        order = list(range(n_train))
        random.Random(cfg.seed * 1000 + epoch).shuffle(order)
        return [data.train[i] for i in order[k * bs : (k + 1) * bs]]

    # evaluation order does not change accuracy; sorting by length keeps padding small
    eval_sorted = sorted(data.eval, key=lambda r: len(r["query"]) + max(len(c) for c in r["choices"]))

    def evaluate() -> tuple[float, float, float]:
        model.eval()
        correct, loss_sum = 0, 0.0
        t = clock()
        with session.window("eval"), torch.no_grad(), common.autocast(device, prec):
            for i in range(0, len(eval_sorted), max(bs, 16)):
                rows = eval_sorted[i : i + max(bs, 16)]
                scores, _, gold = scorer.scores(model, rows)
                loss_sum += float(torch.nn.functional.cross_entropy(scores, gold, reduction="sum"))
                correct += int((scores.argmax(-1) == gold).sum())
        model.train()
        return correct / len(data.eval), loss_sum / len(data.eval), clock() - t

    def record_eval() -> EvalPoint:
        e_before = session.total_j("eval")[0]
        acc, loss, eval_s = evaluate()
        e_after = session.total_j("eval")[0]
        basis, gross = session.total_j("train")
        point = EvalPoint(
            step=state["step"], samples_seen=state["samples"], tokens_seen=state["tokens"],
            train_time_s=state["train_time_s"], wall_time_s=state["wall_time_s"] + eval_s,
            train_energy_j=None if basis is None else state["train_energy_j"] + basis,
            train_energy_gross_j=None if gross is None else state["train_energy_gross_j"] + gross,
            accuracy=acc, eval_loss=loss, n_items=len(data.eval), eval_s=eval_s,
            eval_energy_j=None if e_before is None or e_after is None else e_after - e_before,
        )  # fmt: skip
        state["wall_time_s"] += eval_s
        state["evals"].append(point.model_dump())
        progress(
            f"step {point.step}: eval accuracy {acc:.3f} (loss {loss:.3f}), {point.tokens_seen:,} tokens, "
            f"{point.train_time_s:.1f} s training"
            + (f", {point.train_energy_j:.1f} J" if point.train_energy_j is not None else "")
        )
        return point

    def checkpoint() -> None:
        basis, gross = session.total_j("train")
        snap = dict(state)
        snap["train_energy_j"] = state["train_energy_j"] + (basis or 0.0)
        snap["train_energy_gross_j"] = state["train_energy_gross_j"] + (gross or 0.0)
        snap["energy_sensor"] = session.reason
        _save_checkpoint(ckpt, model, opt, scaler, snap, cfg.mode == "lora")

    mem = common.MemoryTracker(device)
    mem.start()
    status, error = "ok", None
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    ck_every = cfg.checkpoint_every or cfg.eval_every
    session_step_times: list[float] = []
    session_start_tokens = state["tokens"]
    try:
        if not state["evals"]:
            record_eval()
        win: list[float] = []
        ref_loss: float | None = state.get("ref_loss")
        while state["step"] < cfg.max_steps:
            seg_end = min(cfg.max_steps, (state["step"] // cfg.eval_every + 1) * cfg.eval_every)
            with session.window("train"):
                t_prev = clock()
                while state["step"] < seg_end:
                    step = state["step"]
                    rows = batch_rows(step)
                    optim.set_lr(opt, optim.lr_factor(step, warmup_steps=cfg.warmup_steps, total_steps=cfg.max_steps, schedule="constant"))
                    with common.autocast(device, prec):
                        scores, n_tok, gold = scorer.scores(model, rows)
                        loss = torch.nn.functional.cross_entropy(scores, gold)
                    lv = float(loss.detach())
                    common.check_loss(lv, step, ref_loss, cfg.diverge_factor, what="the initial")
                    if ref_loss is None:
                        ref_loss = max(lv, math.log(max(2, scores.size(-1))))
                    scaler.scale(loss).backward()
                    for o in optim.parts(opt):
                        scaler.unscale_(o)
                    if cfg.grad_clip:
                        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                    for o in optim.parts(opt):
                        scaler.step(o)
                    scaler.update()
                    opt.zero_grad(set_to_none=True)
                    common.synchronize(device)
                    now = clock()
                    dt_s = now - t_prev
                    t_prev = now
                    session_step_times.append(dt_s)
                    state["train_time_s"] += dt_s
                    state["wall_time_s"] += dt_s
                    state["step"] += 1
                    state["samples"] += len(rows)
                    state["tokens"] += n_tok
                    win.append(lv)
                    state["ref_loss"] = ref_loss
                    if state["step"] % 5 == 0 or state["step"] == seg_end:
                        state["loss_curve"].append((state["step"], sum(win) / len(win)))
                        win = []
            record_eval()
            if state["step"] % ck_every == 0 or state["step"] >= cfg.max_steps:
                checkpoint()
    except common.Diverged as exc:
        status, error = "diverged", str(exc)
        progress(f"diverged: {exc}; stopped")
    finally:
        memory = mem.stop()
        session.close()

    evals = [EvalPoint(**e) for e in state["evals"]]
    train_fig = session.figures("train", tokens=state["tokens"] - session_start_tokens)
    if resumed_from:
        train_fig.notes.append(f"this session only (resumed at step {resumed_from}); cumulative figures are in evals")
    eval_fig = session.figures("eval")
    target = _target(cfg.target_accuracy, evals, state)
    tps = state["tokens"] / state["train_time_s"] if state["train_time_s"] > 0 else 0.0
    sps = state["samples"] / state["train_time_s"] if state["train_time_s"] > 0 else 0.0
    step_ms = [t * 1e3 for t in session_step_times]
    run_id = f"{dt.datetime.now(dt.timezone.utc).strftime('%Y%m%dT%H%M%S')}-{cfg.slug()}"
    record = FinetuneRecord(
        run_id=run_id,
        created_utc=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        status=status,
        error=error,
        config=cfg.model_dump(mode="json") | {"effective_lr": cfg.effective_lr, "optimizer_detail": opt_detail,
                                              "precision_used": prec.note, "device_used": device},
        config_hash=cfg.config_hash(),
        manifest=manifest,
        model={"name": cfg.model, "path": ld.path, "architecture": ld.architecture, "model_type": ld.model_type,
               "parameters": total_params, "notes": ld.notes},
        method={"mode": ld.mode, "labels": ld.labels, "label_token_ids": ld.label_token_ids, "head": ld.head,
                "prompt_suffix": PROMPT_SUFFIX if ld.architecture != "encoder-only" and ld.mode == "labels" else None,
                "loss": "cross-entropy of the gold answer over the per-choice scores",
                "fine_tuning": cfg.mode},
        data=data.info,
        trainable_parameters=trainable,
        total_parameters=total_params,
        trainable_fraction=trainable / total_params if total_params else 0.0,
        steps=state["step"],
        samples_seen=state["samples"],
        tokens_seen=state["tokens"],
        train_time_s=state["train_time_s"],
        train_tokens_per_s=tps,
        train_samples_per_s=sps,
        step_time_ms=common.stats(step_ms[1:]),
        load_time_s=load_s,
        resumed_from_step=resumed_from,
        train_loss_curve=[tuple(x) for x in state["loss_curve"]],
        evals=evals,
        final_accuracy=evals[-1].accuracy if evals else None,
        best_accuracy=max(e.accuracy for e in evals) if evals else None,
        target=target,
        memory=memory,
        energy_meter=session.name,
        energy_meter_reason=session.reason,
        idle=session.idle_dict(),
        train_energy=train_fig,
        eval_energy=eval_fig,
        checkpoint_dir=str(ckpt) if ckpt.exists() else None,
        warnings=warnings,
        duration_s=clock() - t_run,
    )  # fmt: skip
    path = Path(cfg.output_dir) / "finetune" / f"{run_id}.json"
    try:
        atomic_write_text(path, record.model_dump_json(indent=1))
    except OSError as exc:
        raise E3Error(f"cannot write results to {path}: {exc.strerror}", "choose a writable --output-dir") from None
    return record, path


def _target(target: float, evals: list[EvalPoint], state: dict[str, Any]) -> TargetResult:
    best = max(evals, key=lambda e: (e.accuracy, -e.step)) if evals else None
    hit = next((e for e in evals if e.accuracy >= target), None)
    res = TargetResult(
        target_accuracy=target,
        reached=hit is not None,
        best_accuracy=best.accuracy if best else 0.0,
        best_step=best.step if best else 0,
        budget_steps=state["step"],
        budget_samples=state["samples"],
        budget_tokens=state["tokens"],
        budget_train_time_s=state["train_time_s"],
        budget_energy_j=evals[-1].train_energy_j if evals else None,
    )
    if hit is not None:
        res.reached_at_step = hit.step
        res.time_to_target_s = hit.train_time_s
        res.wall_time_to_target_s = hit.wall_time_s
        res.energy_to_target_j = hit.train_energy_j
        res.energy_to_target_kwh = None if hit.train_energy_j is None else hit.train_energy_j / 3.6e6
        res.samples_to_target = hit.samples_seen
        res.tokens_to_target = hit.tokens_seen
        if hit.step == 0:
            res.note = "the model met the target before any training (step-0 evaluation)"
    else:
        res.note = (
            f"target {target:.3f} never reached in {state['step']} steps; best {res.best_accuracy:.3f} at step "
            f"{res.best_step}. Budget spent: {state['train_time_s']:.1f} s training"
            + (f", {res.budget_energy_j:.1f} J" if res.budget_energy_j is not None else "")
        )
    return res
