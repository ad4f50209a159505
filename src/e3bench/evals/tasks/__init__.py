"""Built-in evaluation tasks and their registry.

>>> from e3bench.evals.tasks import get_task
>>> task = get_task("mmlu", num_fewshot=5)        # or get_task("mmlu_5shot")
>>> score = task.evaluate(backend, limit=10, seed=0)   # -> e3bench.core.api.TaskScore

``get_task(name, **options)`` returns a :class:`e3bench.core.api.Task`; an unknown name is an
:class:`E3Error` with the nearest names. Options per task are the keyword arguments of its class
(``data_dir``, ``sample`` for all; ``num_fewshot``/``subjects`` for MMLU; ``path`` for file tasks; ...).
``parse_task_spec("jsonl_mc:path=my.jsonl,suffix=\\nAnswer:")`` splits a CLI spec into
``(name, options)``. Plugins add tasks through the ``e3bench.tasks`` entry-point group.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from e3bench.core.api import Task
from e3bench.core.errors import E3Error

_BUILTIN: dict[str, tuple[str, dict[str, Any], str]] = {
    # name: (module:Class, default options, one-line description)
    "mmlu": ("e3bench.evals.tasks.multiple_choice:MMLU", {}, "MMLU, 57 subjects, 0-shot (lm-eval prompt)"),
    "mmlu_5shot": ("e3bench.evals.tasks.multiple_choice:MMLU", {"num_fewshot": 5}, "MMLU 5-shot (first 5 dev questions)"),
    "hellaswag": ("e3bench.evals.tasks.multiple_choice:HellaSwag", {}, "HellaSwag validation, acc / acc_norm"),
    "arc_easy": ("e3bench.evals.tasks.multiple_choice:ArcEasy", {}, "ARC-Easy test"),
    "boolq": ("e3bench.evals.tasks.multiple_choice:BoolQ", {}, "BoolQ (SuperGLUE) validation"),
    "copa": ("e3bench.evals.tasks.multiple_choice:Copa", {}, "COPA (SuperGLUE) validation"),
    "openbookqa": ("e3bench.evals.tasks.multiple_choice:OpenBookQA", {}, "OpenBookQA test"),
    "gsm8k": ("e3bench.evals.tasks.generative:GSM8K", {}, "GSM8K, generation, strict/flexible exact match"),
    "squad": ("e3bench.evals.tasks.generative:ExtractiveQA", {}, "extractive QA from JSONL {context, question, answers}: F1/EM"),
    "perplexity": ("e3bench.evals.tasks.perplexity:Perplexity", {}, "perplexity / bits per byte of a text file"),
    "jsonl_mc": ("e3bench.evals.tasks.multiple_choice:JsonlMultipleChoice", {}, "your JSONL {query, choices, gold}"),
    "jsonl_gen": ("e3bench.evals.tasks.generative:JsonlGenerative", {}, "your JSONL {prompt, answer}"),
}
_ALIASES = {
    "openbook_qa": "openbookqa",
    "arc-easy": "arc_easy",
    "gsm8k_cot": "gsm8k",
    "ppl": "perplexity",
    "wikitext": "perplexity",
}


def _load(target: str) -> Callable[..., Task]:
    import importlib

    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def _plugins() -> dict[str, Any]:
    from importlib.metadata import entry_points

    try:
        return {ep.name: ep for ep in entry_points(group="e3bench.tasks")}
    except Exception:  # pragma: no cover - broken plugin metadata must not break built-ins
        return {}


def task_names() -> list[str]:
    """All task names: built-ins and plugins."""
    return sorted(set(_BUILTIN) | set(_plugins()))


def describe_tasks() -> dict[str, str]:
    return {name: desc for name, (_, _, desc) in sorted(_BUILTIN.items())}


def get_task(name: str, **options: Any) -> Task:
    """The task called ``name``, configured with ``options``."""
    key = _ALIASES.get(name, name)
    if key in _BUILTIN:
        target, defaults, _ = _BUILTIN[key]
        cls = _load(target)
        kwargs = {**defaults, **options}
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise E3Error(f"task '{name}': {exc}", f"check the options given to '{name}'") from None
    plugins = _plugins()
    if key in plugins:
        return plugins[key].load()(**options)
    known = task_names()
    near = difflib.get_close_matches(name, known + list(_ALIASES), n=3, cutoff=0.5)
    hint = f" — did you mean {', '.join(repr(n) for n in near)}?" if near else ""
    raise E3Error(
        f"unknown task '{name}'{hint}",
        f"choose one of: {', '.join(known)} (or --engine lm-eval for lm-eval's task names)",
    )


def _coerce(value: str) -> Any:
    low = value.lower()
    if low in ("true", "false"):
        return low == "true"
    for typ in (int, float):
        try:
            return typ(value)
        except ValueError:
            pass
    return value.encode("utf-8").decode("unicode_escape") if "\\" in value else value


def parse_task_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"name"`` or ``"name:key=value,key=value"`` → ``(name, options)``.

    Values become bool/int/float where they parse; backslash escapes (``\\n``) are decoded.
    """
    name, _, rest = spec.partition(":")
    options: dict[str, Any] = {}
    if rest:
        for part in rest.split(","):
            if not part:
                continue
            key, eq, value = part.partition("=")
            if not eq:
                raise E3Error(f"task option '{part}' in '{spec}' is not key=value", "write name:key=value,key=value")
            options[key.strip()] = _coerce(value)
    return name.strip(), options


__all__ = ["describe_tasks", "get_task", "parse_task_spec", "task_names"]
