"""Workloads: what a configuration was asked to do, so a report compares only like with like.

Two runs measure the same workload when they generated the same prompt and output lengths from
the same prompt source and scored the same tasks with the same item limits, few-shot counts and
engine (:data:`WORKLOAD_FIELDS`). Batch sizes are not part of a workload: figures are compared
at each batch size both configurations measured. Everything else (model, backend, precision,
options, measurement settings) is what a comparison inside one workload is about.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Config fields that define a workload; runs that differ in any of them are never compared.
WORKLOAD_FIELDS = ("prompt_tokens", "max_new_tokens", "prompts", "tasks", "limit", "num_fewshot", "engine",
                   "include_path")  # fmt: skip
#: Workload fields that only say how tasks are scored: without tasks they ask nothing (unset).
TASK_FIELDS = ("limit", "num_fewshot", "engine", "include_path")


@dataclass(frozen=True, order=True)
class Workload:
    """A workload's identity (``key``: the values of :data:`WORKLOAD_FIELDS` as text), its
    description for people (``label``) and a short tag for configuration labels (``short``:
    ``"64→16 tokens, hellaswag×40"``)."""

    key: tuple[str, ...]
    label: str
    short: str = ""


def _text(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return ",".join(map(str, v))
    return "" if v is None else str(v)


def workload_values(config: Mapping[str, Any]) -> dict[str, Any]:
    """The :data:`WORKLOAD_FIELDS` of a stored config as they define its workload: a run without
    tasks has no item limit, few-shot count, engine or task folder (:data:`TASK_FIELDS` count
    as unset, whatever the config holds), and a field a record lacks (older records) is unset.
    The one answer to "which workload": :func:`workload_of`, ``compare`` and the variants' reference use it."""
    vals = {f: config.get(f) for f in WORKLOAD_FIELDS}
    if not vals["tasks"]:
        vals.update(dict.fromkeys(TASK_FIELDS))
    elif vals["engine"] is None:
        vals["engine"] = "e3bench"  # the only engine before the field existed
    return vals


def workload_of(config: Mapping[str, Any]) -> Workload:
    """The workload of a stored config (``record.config``): e.g. ``"prompt 64 tokens → 16 new
    tokens (synthetic prompts); tasks: hellaswag, limit 40"``. Fields a record lacks count as
    unset (older records)."""
    config = workload_values(config)
    key = tuple(_text(config[f]) for f in WORKLOAD_FIELDS)
    src = config.get("prompts")
    prompts = "synthetic prompts" if not src else f"prompts from {src}"
    label = f"prompt {config.get('prompt_tokens')} tokens → {config.get('max_new_tokens')} new tokens ({prompts})"
    tasks = config.get("tasks") or ()
    if tasks:
        label += f"; tasks: {_text(tasks)}"
        label += f", limit {config['limit']}" if config.get("limit") is not None else ", all items"
        if config.get("num_fewshot") is not None:
            label += f", {config['num_fewshot']}-shot"
        if config.get("engine") not in (None, "e3bench"):
            label += f", engine {config['engine']}"
        if config.get("include_path"):
            label += f", tasks from {config['include_path']}"
    else:
        label += "; no quality tasks"
    short = f"{config.get('prompt_tokens')}→{config.get('max_new_tokens')} tokens"
    short += f", {src}" if src else ""
    if tasks:
        short += ", " + _text(tasks) + (f"×{config['limit']}" if config.get("limit") is not None else "")
        short += f", {config['num_fewshot']}-shot" if config.get("num_fewshot") is not None else ""
    else:
        short += ", no tasks"
    return Workload(key, label, short)


def differences(workloads: list[Workload]) -> list[str]:
    """Names of the :data:`WORKLOAD_FIELDS` whose values differ among ``workloads`` (a task
    field only among those with tasks: without, it asks nothing)."""
    t = WORKLOAD_FIELDS.index("tasks")
    with_tasks = [w for w in workloads if w.key[t]]
    return [f for i, f in enumerate(WORKLOAD_FIELDS)
            if len({w.key[i] for w in (with_tasks if f in TASK_FIELDS else workloads)}) > 1]  # fmt: skip


def mixed_note(workloads: list[Workload]) -> str | None:
    """The report note for a folder that mixes workloads (None when there is one): how many,
    which fields differ, and that each is compared on its own."""
    distinct = sorted(set(workloads))
    if len(distinct) < 2:
        return None
    return (f"this folder mixes {len(distinct)} workloads (they differ in {', '.join(differences(distinct))}); "
            "configurations are compared only within one workload, each in its own section")  # fmt: skip
