"""The syntax of a task in a config: ``name`` or ``name:key=value,key=value``.

>>> parse_task_spec("jsonl_mc:path=my.jsonl,suffix=\\\\nAnswer:")
('jsonl_mc', {'path': 'my.jsonl', 'suffix': '\\nAnswer:'})
>>> split_task_list("mmlu:num_fewshot=1,subjects=anatomy,hellaswag")
('mmlu:num_fewshot=1,subjects=anatomy', 'hellaswag')

Which names exist and which options a task takes is the task registry's business
(:data:`e3bench.core.registry.tasks`); this module only splits text.
"""

from __future__ import annotations

from typing import Any

from e3bench.core.errors import E3Error


def _value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for typ in (int, float):
        try:
            return typ(text)
        except ValueError:
            pass
    return text.encode("utf-8").decode("unicode_escape") if "\\" in text else text


def parse_task_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"name"`` or ``"name:key=value,key=value"`` → ``(name, options)``.

    Values become bool/int/float where they parse; backslash escapes (``\\n``) are decoded.
    Raises :class:`E3Error` for an option that is not ``key=value``.
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
            options[key.strip()] = _value(value)
    return name.strip(), options


def split_task_list(text: str) -> tuple[str, ...]:
    """Split a comma list of task specs, keeping each spec's own ``key=value`` options.

    A piece whose first ``=`` comes before any ``:`` continues the previous spec's options; any
    other piece starts a new task. Empty pieces are dropped.
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
