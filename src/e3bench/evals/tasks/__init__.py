"""Built-in evaluation tasks, their registry entries, and the lookup every caller uses.

>>> from e3bench.evals.tasks import get_task
>>> task = get_task("mmlu", num_fewshot=5)        # or get_task("mmlu_5shot")
>>> score = task.evaluate(backend, limit=10, seed=0)   # -> e3bench.core.api.TaskScore

``get_task(name, **options)`` returns a :class:`e3bench.core.api.Task`; an unknown name is the
one did-you-mean :class:`E3Error`. Options per task are the keyword arguments of its class
(``data_dir``, ``sample`` for all; ``num_fewshot``/``subjects`` for MMLU; ``path`` for file tasks; ...).
``parse_task_spec("jsonl_mc:path=my.jsonl,suffix=\\nAnswer:")`` splits a CLI spec into
``(name, options)``; :func:`split_task_list` splits a comma list of such specs.

Tasks live in :data:`e3bench.core.registry.tasks`. A registered task (built-in, or from the
``e3bench.tasks`` entry-point group) is a class or factory called with keyword options that
returns a :class:`~e3bench.core.api.Task`; the entry's ``defaults`` are applied first.
"""

from __future__ import annotations

from typing import Any

from e3bench.core.api import Task
from e3bench.core.errors import E3Error
from e3bench.core.registry import tasks as _registry

_MC = "e3bench.evals.tasks.multiple_choice"
_GEN = "e3bench.evals.tasks.generative"
# name: (module:Class, default options, one-line description, aliases)
_BUILTIN: list[tuple[str, str, dict[str, Any], str, tuple[str, ...]]] = [
    ("mmlu", f"{_MC}:MMLU", {}, "MMLU, 57 subjects, 0-shot (lm-eval prompt)", ()),
    ("mmlu_5shot", f"{_MC}:MMLU", {"num_fewshot": 5}, "MMLU 5-shot (first 5 dev questions)", ()),
    ("hellaswag", f"{_MC}:HellaSwag", {}, "HellaSwag validation, acc / acc_norm", ()),
    ("arc_easy", f"{_MC}:ArcEasy", {}, "ARC-Easy test", ("arc-easy",)),
    ("boolq", f"{_MC}:BoolQ", {}, "BoolQ (SuperGLUE) validation", ()),
    ("copa", f"{_MC}:Copa", {}, "COPA (SuperGLUE) validation", ()),
    ("openbookqa", f"{_MC}:OpenBookQA", {}, "OpenBookQA test", ("openbook_qa",)),
    ("gsm8k", f"{_GEN}:GSM8K", {}, "GSM8K, generation, strict/flexible exact match", ("gsm8k_cot",)),
    ("squad", f"{_GEN}:ExtractiveQA", {}, "extractive QA from JSONL {context, question, answers}: F1/EM", ()),
    ("perplexity", "e3bench.evals.tasks.perplexity:Perplexity", {}, "perplexity / bits per byte of a text file",
     ("ppl", "wikitext")),
    ("jsonl_mc", f"{_MC}:JsonlMultipleChoice", {}, "your JSONL {query, choices, gold}", ()),
    ("jsonl_gen", f"{_GEN}:JsonlGenerative", {}, "your JSONL {prompt, answer}", ()),
]  # fmt: skip
for _name, _target, _defaults, _desc, _aliases in _BUILTIN:
    _registry.builtin(_name, _target, defaults=_defaults, description=_desc, aliases=_aliases)


def task_names() -> list[str]:
    """All task names: built-ins and plugins (aliases excluded)."""
    return _registry.names()


def describe_tasks() -> dict[str, str]:
    """Task name → one-line description, built-ins and plugins (a plugin without a description
    shows where it comes from)."""
    return {name: e.description or e.origin for name, e in _registry.entries().items()}


def get_task(name: str, **options: Any) -> Task:
    """The task called ``name`` (or an alias), configured with ``options``.

    Raises the one "unknown task" :class:`E3Error` (did you mean ...) for an unknown name and an
    E3Error naming the task when its class rejects an option.
    """
    entry = _registry.entry(name)
    factory = _registry.get(entry.name)
    kwargs = {**entry.defaults, **options}
    try:
        return factory(**kwargs)
    except TypeError as exc:
        raise E3Error(f"task '{name}': {exc}", f"check the options given to '{name}'") from None


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


def split_task_list(text: str) -> tuple[str, ...]:
    """Split a comma list of task specs, keeping each spec's own ``key=value`` options.

    ``"mmlu:num_fewshot=1,subjects=anatomy,hellaswag"`` → ``("mmlu:num_fewshot=1,subjects=anatomy",
    "hellaswag")``: a piece whose first ``=`` comes before any ``:`` continues the previous spec's
    options; any other piece starts a new task. Empty pieces are dropped.
    """
    specs: list[str] = []
    for piece in (p.strip() for p in text.split(",")):
        if not piece:
            continue
        eq, colon = piece.find("="), piece.find(":")
        continues = eq > 0 and (colon < 0 or eq < colon)
        if continues and specs and ":" in specs[-1]:
            specs[-1] += "," + piece
        else:
            specs.append(piece)
    return tuple(specs)


__all__ = ["describe_tasks", "get_task", "parse_task_spec", "split_task_list", "task_names"]
