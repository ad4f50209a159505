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


def _task_split(task: str, split: str) -> tuple[list[dict], str]:
    """(rows, source) of a built-in task's split from the one dataset resolver."""
    from e3bench.evals.data import resolve, validate_multiple_choice

    d = resolve(task, split)
    validate_multiple_choice(d.rows, d.source)
    return list(d.rows), d.source


def load_task_data(cfg: FinetuneConfig) -> TaskData:
    """Train and validation items ``{query, choices, gold}``.

    Order: ``--train-file``/``--eval-file``; else the task's ``train`` and ``test`` splits
    (``test`` is e3bench's name for the task's public evaluation split) from the one dataset
    resolver (:func:`e3bench.evals.data.resolve`: the local data directory first, then the
    hub); but when the local directory has *only* the evaluation split, as ../shared/data
    does, a seeded split of it into disjoint train and held-out parts (said in ``info``: such
    numbers are not comparable with published results).

    Raises :class:`E3Error` for an unknown task, missing or invalid data, or no items.
    """
    from e3bench.evals import data as ds

    rng = random.Random(cfg.seed)
    info: dict[str, Any] = {"task": cfg.task}
    if cfg.train_file:
        train = _mc_rows(ds.resolve_local_file(cfg.train_file))
        info["train_source"] = cfg.train_file
        if cfg.eval_file:
            evals = _mc_rows(ds.resolve_local_file(cfg.eval_file))
            info["eval_source"] = cfg.eval_file
        else:
            train, evals = _split(train, cfg.max_eval_samples, rng)
            info["eval_source"] = f"held-out part of {cfg.train_file} (seed {cfg.seed})"
    elif cfg.task not in FT_TASKS:
        raise unknown_name(
            "fine-tuning task", cfg.task, FT_TASKS,
            fix=f"use one of: {', '.join(FT_TASKS)}, or --train-file/--eval-file JSONL {{query, choices, gold}}",
        )  # fmt: skip
    elif ds.local_file(cfg.task, "test") is not None and ds.local_file(cfg.task, "train") is None:
        rows, source = _task_split(cfg.task, "test")
        n_eval = min(cfg.max_eval_samples, max(1, len(rows) * 3 // 10))
        train, evals = _split(rows, n_eval, rng)
        info["train_source"] = f"{source} minus the held-out items"
        info["eval_source"] = f"{n_eval} items of {source} held out (seed {cfg.seed})"
        info["split_note"] = (
            "the local data directory has only the task's public evaluation split; it was split "
            "into disjoint fine-tuning and held-out parts, so accuracies are not comparable with "
            "published validation results"
        )
    else:
        train, info["train_source"] = _task_split(cfg.task, "train")
        if ds.local_file(cfg.task, "train") is not None and ds.local_file(cfg.task, "test") is None:
            train, evals = _split(train, cfg.max_eval_samples, rng)
            info["eval_source"] = f"held-out part of {info['train_source']}"
        else:
            evals, info["eval_source"] = _task_split(cfg.task, "test")
    rng.shuffle(train)
    if cfg.max_train_samples:
        train = train[: cfg.max_train_samples]
    if len(evals) > cfg.max_eval_samples:
        evals = random.Random(cfg.seed + 1).sample(evals, cfg.max_eval_samples)
    if not train or not evals:
        where = info.get("train_source") if not train else info.get("eval_source")
        raise E3Error(f"{where} has no {'training' if not train else 'evaluation'} items (task '{cfg.task}')",
                      "give a JSONL file with at least one {query, choices, gold} line (a file of one item is held out whole: give two or more)")  # fmt: skip
    golds = [r["gold"] for r in evals]
    majority = max(golds.count(g) for g in set(golds)) / len(golds)
    info.update(n_train=len(train), n_eval=len(evals), majority_class_accuracy=majority)
    return TaskData(train=train, eval=evals, info=info)


def _split(rows: list[dict], n_eval: int, rng: random.Random) -> tuple[list[dict], list[dict]]:
    rows = list(rows)
    rng.shuffle(rows)
    n_eval = min(n_eval, len(rows) // 2)
    return rows[n_eval:], rows[:n_eval]
