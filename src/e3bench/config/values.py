"""How text from a YAML file, a flag or ``--set`` becomes a :class:`~e3bench.config.run.RunConfig`
field value: the other spellings of keys, the flag of each field, list coercion, and the
defaults ``e3bench run`` adds (its quality task).

>>> coerce("batch_sizes", "1,4,8")
(1, 4, 8)
>>> coerce("tasks", "none"), coerce("tasks", ""), coerce("tasks", [])
((), (), ())
"""

from __future__ import annotations

from typing import Any

from e3bench.core.errors import E3Error

#: the quality task of ``e3bench run`` when the user names none (``--tasks none``: no task) and
#: its fixed subset: the first DEFAULT_LIMIT items (ARC-Easy test, lm-eval's prompt). Sized by
#: measurement so the whole default run stays within ~3 minutes on a 2-core CPU (README):
#: SmolLM2-135M fp32 scores 0.36 CPU-s per item on one thread (10 items, process_time), so 100
#: items cost ~36 CPU-s beside ~1 min of load, idle baseline and speed windows; stderr ≈ ±0.05.
DEFAULT_TASKS: tuple[str, ...] = ("arc_easy",)
DEFAULT_LIMIT = 100
#: the word that means "no tasks" in --tasks / --set tasks= (YAML: ``tasks: []`` or ``none``)
NO_TASKS = "none"

#: other spellings accepted for a field (YAML, --set, sweep files)
ALIASES = {"batch_size": "batch_sizes", "batch-size": "batch_sizes", "task": "tasks", "model-args": "model_args"}
#: the command-line flag of each field where it is not ``--<field-with-dashes>``
FLAGS = {"batch_sizes": "--batch-size", "cross_check_meter": "--cross-check", "backend_options": "--backend-option"}
_LISTS = ("batch_sizes", "trackers")  # and tasks (_task_tuple)


def flag_of(field: str) -> str:
    """The ``e3bench run`` flag that sets ``field`` (``batch_sizes`` → ``--batch-size``)."""
    return FLAGS.get(field, "--" + field.replace("_", "-"))


def coerce(key: str, value: Any) -> Any:
    """Turn CLI strings (``"1,4,8"``, ``"null"``) into what field ``key`` expects.

    Raises :class:`E3Error` for a batch-size list that is not integers and for ``none`` listed
    beside tasks.
    """
    if key == "tasks":
        return _task_tuple(value)
    if key in _LISTS:
        if isinstance(value, str):
            parts = [p.strip() for p in value.split(",") if p.strip()]
            if key == "batch_sizes":
                try:
                    return tuple(int(p) for p in parts)
                except ValueError:
                    if value.strip().lower() == "auto":
                        raise E3Error("--batch-size sets the speed run's batch sizes and takes numbers, got 'auto'",
                                      "for lm-eval's --batch_size auto (the batch that scores tasks) use "
                                      "--score-batch-size auto; e.g. --batch-size 1,4,8") from None  # fmt: skip
                    raise E3Error(f"batch_sizes must be integers, got '{value}'", "e.g. --batch-size 1,4,8") from None
            return tuple(parts)
        if isinstance(value, int):
            return (value,)
        if isinstance(value, list):
            return tuple(value)
    if isinstance(value, str) and value.lower() in ("null", "~"):
        return None
    return value


def _task_tuple(value: Any) -> Any:
    """``tasks`` as a tuple of specs; ``none``, ``""``, null and ``[]`` are no task. ``none``
    beside a task is an :class:`E3Error` (it would otherwise be looked up as a task name)."""
    if value is None:
        return ()
    if isinstance(value, str):
        from e3bench.config.taskspec import split_task_list

        value = split_task_list(value)
    elif isinstance(value, list):
        value = tuple(value)
    if not isinstance(value, tuple):
        return value  # the schema says what is wrong with it
    specs = tuple(v for v in value if not (isinstance(v, str) and v.strip().lower() == NO_TASKS))
    if specs and len(specs) != len(value):
        raise E3Error(f"tasks: '{NO_TASKS}' means no task and cannot be listed with tasks ({', '.join(map(str, specs))})",
                      f"drop '{NO_TASKS}', or give --tasks {NO_TASKS} alone")  # fmt: skip
    return specs


