"""Workloads and configurations: what a run was asked to do, and what identifies it.

The one definition of which config fields identify a configuration, which pair two of them and
which may differ, used by the report (repeats, variants against their reference) and by
``e3bench compare`` (repeats, pairing):

* :data:`NOT_COMPARED` — where results go and how they are logged: never part of an identity;
* :data:`IDENTITY` — what ran (model, backend, options, precision, device): ``compare`` pairs
  configurations of two sweeps when these and the workload agree;
* :data:`MEASURING` — which batch sizes and how long each was measured: a variant and its
  reference may differ in them (figures are compared at the batch sizes both measured);
* :data:`WORKLOAD_FIELDS` — the workload (below);
* every other field (threads, seed, meter, …) is part of a configuration's identity.

:func:`complete` fills in fields a record predates, so records written before a field existed
group and pair with new ones (:func:`record_key`: repeats share it, whatever their stored
``config_hash``); a record that lacks a field that defines its workload is in the workload
"unknown" (:func:`workload_of`), labelled so and compared with nothing.

Two runs measure the same workload when they generated the same prompt and output lengths from
the same prompt source and scored the same tasks with the same item limits, few-shot counts and
engine (:data:`WORKLOAD_FIELDS`). Batch sizes are not part of a workload: figures are compared
at each batch size both configurations measured. Everything else (model, backend, precision,
options, measurement settings) is what a comparison inside one workload is about.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from e3bench.config.run import NOT_IDENTITY

#: Config fields that define a workload; runs that differ in any of them are never compared.
WORKLOAD_FIELDS = ("prompt_tokens", "max_new_tokens", "prompts", "tasks", "limit", "num_fewshot", "engine",
                   "include_path")  # fmt: skip
#: Workload fields that only say how tasks are scored: without tasks they ask nothing (unset).
TASK_FIELDS = ("limit", "num_fewshot", "engine", "include_path")
#: Workload fields every e3bench record holds (since schema version 1): a record without one of
#: them says nothing of its workload, which is then unknown, never guessed from today's defaults.
ALWAYS_RECORDED = ("prompt_tokens", "max_new_tokens", "tasks")
#: Config fields that say where results go or how they are logged: never compared (the config's
#: own list, the fields its hash leaves out).
NOT_COMPARED = NOT_IDENTITY
#: Config fields that say what ran it: with the workload, what pairs configurations of two sweeps.
IDENTITY = ("model", "backend", "backend_options", "dtype", "device")
#: Config fields that say which batch sizes were measured and for how long: a variant and its
#: reference may differ in them.
MEASURING = ("batch_sizes", "warmup_iters", "min_iters", "min_seconds", "max_seconds", "idle_seconds")
UNKNOWN = "workload unknown"


@dataclass(frozen=True, order=True)
class Workload:
    """A workload's identity (``key``: the values of :data:`WORKLOAD_FIELDS` as text), its
    description for people (``label``) and a short tag for configuration labels (``short``:
    ``"64→16 tokens, hellaswag×40"``)."""

    key: tuple[str, ...]
    label: str
    short: str = ""

    @property
    def unknown(self) -> bool:
        """True for the workload of records that lack a field defining it (:func:`missing`)."""
        return bool(self.key) and self.key[0] == UNKNOWN


def _text(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return ",".join(map(str, v))
    return "" if v is None else str(v)


def task_names(tasks: Any) -> str:
    """The tasks of a workload as a reader names them: a task given a ``label`` by its label, a
    task read from a file as ``name[file name]``, any other spec as written (``mmlu:num_fewshot=1``)
    — the full spec, file path included, stays in the record and in the configs' CSV."""
    from e3bench.config.taskspec import parse_task_spec
    from e3bench.core.errors import E3Error

    out = []
    for spec in tasks if isinstance(tasks, (list, tuple)) else [tasks]:
        try:
            name, opts = parse_task_spec(str(spec))
        except E3Error:  # a spec no run could have used: shown as stored
            out.append(str(spec))
            continue
        if opts.get("label"):
            out.append(str(opts["label"]))
        elif opts.get("path"):
            out.append(f"{name}[{str(opts['path']).replace(chr(92), '/').rsplit('/', 1)[-1]}]")
        else:
            out.append(str(spec))
    return ", ".join(out)


@functools.cache
def _defaults() -> dict[str, Any]:
    """Today's ``RunConfig`` defaults, field → value (read once; callers copy, never mutate)."""
    from e3bench.config.run import RunConfig

    return {k: f.get_default(call_default_factory=True) for k, f in RunConfig.model_fields.items()}


def missing(config: Mapping[str, Any]) -> list[str]:
    """The :data:`ALWAYS_RECORDED` fields ``config`` lacks: its workload is unknown when any is."""
    return [f for f in ALWAYS_RECORDED if f not in config]


def complete(config: Mapping[str, Any]) -> dict[str, Any]:
    """A stored config with every field of today's ``RunConfig``: a field the record predates
    takes its default, which is what runs did before the field existed (``backend_options``
    {}, ``num_fewshot`` and ``include_path`` unset, ``trust_remote_code`` off; a field added
    later must keep that true, as its hash rule already requires); fields the record has are
    kept as stored. :data:`ALWAYS_RECORDED` fields are never filled in (see :func:`missing`)."""
    return {**{k: v for k, v in _defaults().items() if k not in ALWAYS_RECORDED}, **config}


def workload_values(config: Mapping[str, Any]) -> dict[str, Any]:
    """The :data:`WORKLOAD_FIELDS` of a stored config as they define its workload: a run without
    tasks has no item limit, few-shot count, engine or task folder (:data:`TASK_FIELDS` count
    as unset, whatever the config holds); a field the record predates takes :func:`complete`'s
    value; an :data:`ALWAYS_RECORDED` field it lacks is None (and :func:`workload_of` says the
    workload is unknown). The one answer to "which workload": :func:`workload_of`, ``compare``
    and the variants' reference use it."""
    full = complete(config)
    vals = {f: full.get(f) for f in WORKLOAD_FIELDS}
    if not vals["tasks"]:
        vals.update(dict.fromkeys(TASK_FIELDS))
    elif vals["engine"] is None:
        vals["engine"] = "e3bench"  # the only engine before the field existed
    return vals


def config_key(config: Mapping[str, Any], *, ignore: tuple[str, ...] = ()) -> str:
    """What identifies the configuration of a stored config, as text: every field of
    :func:`complete` but :data:`NOT_COMPARED` and ``ignore``, the workload as
    :func:`workload_values` defines it. Records that share it are repeats of one
    configuration, whichever e3bench version wrote them (a record's stored ``config_hash``
    changes when the hash rule does); ``ignore=("dtype", *MEASURING)`` gives what a variant
    shares with its reference."""
    vals = {**complete(config), **workload_values(config)}
    lacks = missing(config)
    if lacks:
        vals[UNKNOWN] = lacks
    return json.dumps({k: v for k, v in vals.items() if k not in NOT_COMPARED and k not in ignore},
                      sort_keys=True, default=str)  # fmt: skip


def record_key(rec: Any) -> str:
    """What makes records (``ResultRecord``) repeats of one configuration: the same
    :func:`config_key` and the same model as the record names it (a model is what the config
    named, and the record says what that turned out to be)."""
    return config_key(rec.config) + "|" + str(rec.model.name if rec.model else rec.config.get("model"))


def workload_of(config: Mapping[str, Any]) -> Workload:
    """The workload of a stored config (``record.config``): e.g. ``"prompt 64 tokens → 16 new
    tokens (synthetic prompts); tasks: hellaswag, limit 40"``. Fields the record predates take
    :func:`complete`'s values; a record without an :data:`ALWAYS_RECORDED` field is in the
    workload ``"workload unknown (the record lacks prompt_tokens)"``, one per set of fields lacked."""
    lacks = missing(config)
    if lacks:
        what = f"{UNKNOWN} (the record lacks {', '.join(lacks)})"
        return Workload((UNKNOWN, *lacks), what, what)
    config = workload_values(config)
    key = tuple(_text(config[f]) for f in WORKLOAD_FIELDS)
    src = config.get("prompts")
    prompts = "synthetic prompts" if not src else f"prompts from {src}"
    label = f"prompt {config.get('prompt_tokens')} tokens → {config.get('max_new_tokens')} new tokens ({prompts})"
    tasks = config.get("tasks") or ()
    if tasks:
        label += f"; tasks: {task_names(tasks)}"
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
        short += ", " + task_names(tasks) + (f"×{config['limit']}" if config.get("limit") is not None else "")
        short += f", {config['num_fewshot']}-shot" if config.get("num_fewshot") is not None else ""
    else:
        short += ", no tasks"
    return Workload(key, label, short)


def differences(workloads: list[Workload]) -> list[str]:
    """Names of the :data:`WORKLOAD_FIELDS` whose values differ among ``workloads`` (a task
    field only among those with tasks: without, it asks nothing)."""
    workloads = [w for w in workloads if not w.unknown]
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
    known = [w for w in distinct if not w.unknown]
    note = f"this folder mixes {len(distinct)} workloads"
    if len(known) > 1:
        note += f" (they differ in {', '.join(differences(known))})"
    note += "; configurations are compared only within one workload, each in its own section"
    for w in distinct:
        if w.unknown:
            note += f"; records in the {w.label} are compared with nothing"
    return note
