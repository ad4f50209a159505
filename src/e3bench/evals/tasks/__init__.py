"""Built-in evaluation tasks, their registry entries, and the lookup every caller uses.

>>> from e3bench.evals.tasks import get_task
>>> task = get_task("mmlu", num_fewshot=5)        # or get_task("mmlu_5shot")
>>> score = task.evaluate(backend, limit=10, seed=0)   # -> e3bench.core.api.TaskScore

``get_task(name, **options)`` returns a :class:`e3bench.core.api.Task`; an unknown name is the
one did-you-mean :class:`E3Error`. Options per task are the keyword arguments of its class
(``data_dir``, ``sample`` for all; ``num_fewshot``/``subjects`` for MMLU; ``path`` for file tasks; ...).
``parse_task_spec("jsonl_mc:path=my.jsonl,suffix=\\nAnswer:")`` splits a CLI spec into
``(name, options)``; :func:`split_task_list` splits a comma list of such specs (both live in
:mod:`e3bench.config.taskspec`: they are config syntax).

Tasks live in :data:`e3bench.core.registry.tasks`. A registered task (built-in, or from the
``e3bench.tasks`` entry-point group) is a class or factory called with keyword options that
returns a :class:`~e3bench.core.api.Task`; the entry's ``defaults`` are applied first.
"""

from __future__ import annotations

from typing import Any

from e3bench.config.taskspec import parse_task_spec, split_task_list
from e3bench.core.api import Task
from e3bench.core.registry import tasks as _registry

_MC = "e3bench.evals.tasks.multiple_choice"
_GEN = "e3bench.evals.tasks.generative"
_PC = "e3bench.evals.tasks.partial_context"
_SC = "e3bench.evals.tasks.single_continuation"
_SG = "e3bench.evals.tasks.superglue"
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
    ("arc_challenge", f"{_MC}:ArcChallenge", {}, "ARC-Challenge test, acc / acc_norm (hub allenai/ai2_arc)", ("arc-challenge",)),
    ("piqa", f"{_MC}:PIQA", {}, "PIQA validation, acc / acc_norm (hub baber/piqa)", ()),
    ("siqa", f"{_MC}:SIQA", {}, "Social IQa validation, acc (hub lighteval/siqa)", ("social_iqa",)),
    ("commonsense_qa", f"{_MC}:CommonsenseQA", {}, "CommonsenseQA validation, acc (hub tau/commonsense_qa)", ("csqa",)),
    ("rte", f"{_MC}:RTE", {}, "SuperGLUE RTE validation, acc (hub aps/super_glue rte)", ("sglue_rte",)),
    ("cb", f"{_MC}:CB", {}, "SuperGLUE CB validation, acc / f1 (hub aps/super_glue cb)", ()),
    ("wic", f"{_MC}:WiC", {}, "SuperGLUE WiC validation, acc (hub aps/super_glue wic)", ()),
    ("wsc", f"{_MC}:WSC", {}, "SuperGLUE WSC validation, acc (hub aps/super_glue wsc.fixed)", ()),
    ("multirc", f"{_SG}:MultiRC", {}, "SuperGLUE MultiRC validation, acc / f1a / em (hub aps/super_glue multirc)", ()),
    ("record", f"{_SG}:ReCoRD", {}, "SuperGLUE ReCoRD validation, f1 / em (hub aps/super_glue record)", ()),
    ("winogrande", f"{_PC}:Winogrande", {}, "WinoGrande validation, partial-context acc (hub allenai/winogrande xl)", ()),
    ("lambada_openai", f"{_SC}:LambadaOpenAI", {}, "LAMBADA OpenAI test: greedy-match acc, perplexity (hub EleutherAI/lambada_openai)",
     ()),
    ("jsonl_partial", f"{_PC}:JsonlPartial", {}, "your JSONL {context_options, continuation, gold}", ()),
    ("jsonl_cont", f"{_SC}:JsonlContinuation", {}, "your JSONL {context, continuation}: acc, perplexity", ()),
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
    """The task called ``name`` (or an alias), configured with ``options`` over its defaults.

    Raises the one "unknown task" :class:`E3Error` (did you mean ...) for an unknown name and an
    E3Error naming the task when its class rejects an option.
    """
    return _registry.create(name, **options)


__all__ = ["describe_tasks", "get_task", "parse_task_spec", "split_task_list", "task_names"]
