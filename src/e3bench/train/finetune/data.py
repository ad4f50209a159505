"""The items a fine-tuning run trains and evaluates on, and where they come from."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e3bench.core.errors import E3Error, unknown_name
from e3bench.train.finetune.config import FT_TASKS, FinetuneConfig


@dataclass
class TaskData:
    """Training and held-out items ``{query, choices, gold}`` and where they came from
    (``info``: sources, sizes, majority-class accuracy of the held-out items, split notes)."""

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
            raise unknown_name(
                "fine-tuning task", cfg.task, FT_TASKS,
                fix=f"use one of: {', '.join(FT_TASKS)}, or --train-file/--eval-file JSONL {{query, choices, gold}}",
            )  # fmt: skip
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
