"""Checks a run configuration against this installation, at the moment the config is built.

Names are checked against the registries (meters, tasks, trackers, backends), the region against
:func:`e3bench.energy.carbon.lookup`, a backend's ``backend_options`` against its ``Options`` model
and device/precision against its ``capabilities`` — so a typo fails before any subprocess, model
load or idle baseline. Every check returns ``(key, error)`` pairs instead of raising, so the
caller can report ALL problems at once, each at the YAML line or flag it came from
(:class:`ConfigError`).

Nothing heavy is imported: backend classes import their libraries lazily, task objects only
check their options and files, and missing extras are found with ``importlib.util.find_spec``.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e3bench.core import registry
from e3bench.core.errors import E3Error, MissingExtra, unknown_name
from e3bench.core.fmt import count

Found = list[tuple[str, E3Error]]  # (key path such as "tasks.0" or "backend_options.n_ctx", error)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config: ``where`` (``"sweep.yaml:4 (base.meter)"``, ``"--meter"``),
    ``problem`` and ``fix`` (both one line)."""

    where: str
    problem: str
    fix: str = ""

    def error(self) -> E3Error:
        """This problem as one :class:`E3Error` whose message starts with ``where``."""
        return E3Error(f"{self.where}: {self.problem}" if self.where else self.problem, self.fix)


class ConfigError(E3Error):
    """Every problem found while building a config; the CLI prints one ``error:`` line each.

    ``problem``/``fix`` are those of the first problem (plus a count), so code that reads a
    single E3Error still gets a useful message.
    """

    def __init__(self, problems: list[Problem]) -> None:
        first = problems[0].error()
        more = f" (and {count(len(problems) - 1, 'more problem')})" if len(problems) > 1 else ""
        super().__init__(first.problem + more, first.fix)
        self.problems = problems

    def one_lines(self) -> list[str]:
        """One line per problem: ``<where>: <problem> — fix: <fix>``."""
        return [p.error().one_line() for p in self.problems]


def raise_problems(problems: list[Problem]) -> None:
    """Raise :class:`ConfigError` for ``problems`` (duplicates dropped, order kept); no-op if empty."""
    unique = list(dict.fromkeys(problems))
    if unique:
        raise ConfigError(unique)


# ----------------------------------------------------------------------------- the checks
def check_meter(key: str, name: str | None) -> Found:
    """``name`` is ``auto`` or a registered meter whose extra is installed."""
    from e3bench.energy.meters import AUTO

    if name is None or name == AUTO:
        return []
    if name not in registry.meters:
        from e3bench.energy.meters import meter_choices

        return [(key, unknown_name("meter", name, meter_choices()))]
    missing = registry.meters.missing_extra(name)
    return [(key, missing)] if missing else []


def check_region(region: str | None) -> Found:
    """``region`` is a grid region :func:`e3bench.energy.carbon.lookup` knows (None = world)."""
    from e3bench.energy import carbon

    try:
        carbon.lookup(region)
    except E3Error as exc:
        return [("region", exc)]
    return []


def check_tasks(specs: tuple[str, ...], engine: str) -> Found:
    """Each task spec names a registered task whose options it accepts (e3bench engine), or
    lm-eval is installed (lm-eval engine: its own task names are checked when it runs)."""
    if not specs:
        return []
    if engine == "lm-eval":
        if importlib.util.find_spec("lm_eval") is None:
            return [("engine", MissingExtra("lm_eval", "lmeval", "--engine lm-eval"))]
        return []
    from e3bench.config.taskspec import parse_task_spec

    found: Found = []
    for i, spec in enumerate(specs):
        try:
            name, options = parse_task_spec(spec)
            registry.tasks.create(name, **options)  # the task checks its options and files
        except E3Error as exc:
            found.append((f"tasks.{i}", exc))
    return found


def check_lmeval_options(values: Mapping[str, Any], *, runnable: bool) -> Found:
    """``num_fewshot`` and ``include_path`` are lm-eval engine options; with ``runnable`` the
    include path must be a folder here."""
    found: Found = []
    lm_eval = values.get("engine") == "lm-eval"
    if values.get("num_fewshot") is not None and not lm_eval:
        found.append(("num_fewshot", E3Error(
            "--num-fewshot applies to --engine lm-eval only",
            "add --engine lm-eval, or give an e3bench task its own option, e.g. --tasks mmlu:num_fewshot=5",
        )))  # fmt: skip
    path = values.get("include_path")
    if path is not None:
        if not lm_eval:
            found.append(("include_path", E3Error(
                "--include-path (lm-eval task YAMLs) applies to --engine lm-eval only",
                "add --engine lm-eval, or use e3bench's jsonl_mc / jsonl_gen tasks for your own data",
            )))  # fmt: skip
        elif runnable and not Path(str(path)).expanduser().is_dir():
            found.append(("include_path", E3Error(
                f"lm-eval include path {path} is not a folder", "pass --include-path DIR, a folder of lm-eval task YAMLs"
            )))  # fmt: skip
        elif runnable and not values.get("trust_remote_code"):
            code = _code_in_task_folder(Path(str(path)).expanduser())
            if code is not None:
                found.append(("include_path", E3Error(
                    f"lm-eval include path {path} holds Python code that lm-eval would run ({code})",
                    "read it, then pass --trust-remote-code to allow it",
                )))  # fmt: skip
    return found


def _code_in_task_folder(folder: Path) -> str | None:
    """The first file under ``folder`` whose code lm-eval would import: a ``.py`` file, or a
    YAML with a ``!function`` tag (lm-eval imports the named module). None: no code."""
    for f in sorted(folder.rglob("*")):
        if f.suffix == ".py":
            return f"{f.name}"
        if f.suffix in (".yaml", ".yml"):
            try:
                if "!function" in f.read_text(encoding="utf-8", errors="replace"):
                    return f"{f.name}: !function"
            except OSError:
                continue
    return None


def check_trackers(names: tuple[str, ...]) -> Found:
    """Each tracker is registered and its extra is installed (checked before any run: a run
    must not finish only to say it could not be logged)."""
    found: Found = []
    for i, n in enumerate(names):
        if n not in registry.trackers:
            found.append((f"trackers.{i}", unknown_name("tracker", n, registry.trackers.names())))
        elif (missing := registry.trackers.missing_extra(n)) is not None:
            found.append((f"trackers.{i}", missing))
    return found


def check_backend(values: Mapping[str, Any], *, runnable: bool) -> Found:
    """The backend is registered; its ``backend_options`` fit its ``Options`` model (checked
    even when its extra is not installed here); and, with ``runnable``, it is installed and
    supports the device and precision."""
    name = values.get("backend")
    if name not in registry.backends:
        return [("backend", unknown_name("backend", str(name), registry.backends.names()))]
    missing = registry.backends.missing_extra(name)
    if missing is not None and runnable:
        return [("backend", missing)]
    cls = registry.backends.peek(name)  # built-in backend modules import their libraries lazily
    if cls is None:
        return []
    found = option_problems(name, cls, dict(values.get("backend_options") or {}))
    if runnable:
        missing = precision_extra_missing(cls, values.get("dtype"))
        reason = capability_problem(cls, device=values.get("device"), precision=values.get("dtype"))
        if missing is not None and reason is not None and reason.endswith(f"({missing.fix})"):
            found.append(("dtype", missing))
        elif reason:
            key = "device" if reason.startswith("device") else "dtype"
            found.append((key, E3Error(f"{name} backend: {reason}", "choose a supported --dtype / --device")))
    return found


def precision_extra_missing(cls: type, precision: Any) -> MissingExtra | None:
    """The missing extra of ``precision`` on backend class ``cls`` (``capabilities.precision_extras``)."""
    caps = getattr(cls, "capabilities", None)
    if caps is None or not isinstance(precision, str) or not hasattr(caps, "missing_extra"):
        return None
    return caps.missing_extra(precision.lower())


def option_problems(name: str, cls: type, options: dict[str, Any]) -> Found:
    """Problems of ``options`` for backend ``name``: run options given as backend options, and
    whatever ``cls.Options`` (pydantic, ``extra="forbid"``) rejects — all of them, in the wording
    of :func:`e3bench.core.registry.check_options` (the same check a backend is built with).
    A backend class without an ``Options`` model gets only the run-option check."""
    model = getattr(cls, "Options", None)
    _, errors = registry.check_options("backend", name, model, options, reserved=registry.BACKEND_RUN_OPTIONS)
    return [(f"backend_options.{key.split('.')[0]}", err) for key, err in errors]


def capability_problem(cls: type, *, device: Any, precision: Any) -> str | None:
    """Why ``cls`` cannot run ``precision`` on ``device`` here, or None: what its
    ``capabilities.check`` rules out, else a precision whose extra is not installed (the reason
    then ends with the extra's :func:`~e3bench.core.errors.install_hint` in parentheses)."""
    caps = getattr(cls, "capabilities", None)
    if caps is None or not isinstance(device, str) or not isinstance(precision, str):
        return None
    reason = caps.check(device=device, precision=precision.lower())
    missing = precision_extra_missing(cls, precision) if reason is None else None
    return f"{missing.problem} ({missing.fix})" if missing is not None else reason


def unrunnable_reason(backend: str, device: str, dtype: str) -> str | None:
    """Why a (valid) config cannot run on this installation — backend extra missing, or a
    device/precision its capabilities rule out — or None. Sweeps skip such runs with this reason."""
    if backend not in registry.backends:
        return None  # reported as a config problem instead
    missing = registry.backends.missing_extra(backend)
    if missing is not None:
        return f"backend '{backend}' not installed ({missing.fix})"
    return capability_problem(registry.backends.get(backend), device=device, precision=dtype)


def check_device(device: Any, *, runnable: bool) -> Found:
    """With ``runnable``, a ``cuda:N`` device names a GPU torch sees here
    (:func:`e3bench.core.devices.check_visible`; without torch the backend's library decides).
    The spelling itself is the schema's check."""
    from e3bench.core.devices import check_visible, device_problem

    if not runnable or not isinstance(device, str) or device_problem(device) is not None:
        return []
    try:
        check_visible(device)
    except E3Error as exc:
        return [("device", exc)]
    return []


def check_output_dir(folder: str | os.PathLike) -> Found:
    """Records can be written under ``folder`` (created if missing): its nearest existing
    ancestor is a writable directory. Checked before a run so a bad ``--output-dir`` does not
    cost the whole benchmark first."""
    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    fix = "choose a writable --output-dir"
    if not probe.is_dir():
        return [("output_dir", E3Error(f"cannot write results under {folder}: {probe} is a file", fix))]
    if not os.access(probe, os.W_OK | os.X_OK):
        return [("output_dir", E3Error(f"cannot write results under {folder}: {probe} is not writable", fix))]
    return []


def semantic_checks(values: Mapping[str, Any], *, runnable: bool, skip: set[str]) -> Found:
    """Run every check on the merged field ``values`` (defaults filled in), skipping checks that
    read a field in ``skip`` (already reported by the schema validation)."""
    checks: list[tuple[set[str], Callable[[], Found]]] = [
        ({"meter"}, lambda: check_meter("meter", values.get("meter"))),
        ({"cross_check_meter"}, lambda: check_meter("cross_check_meter", values.get("cross_check_meter"))),
        ({"region"}, lambda: check_region(values.get("region"))),
        ({"tasks", "engine"}, lambda: check_tasks(tuple(values.get("tasks") or ()), str(values.get("engine")))),
        ({"trackers"}, lambda: check_trackers(tuple(values.get("trackers") or ()))),
        ({"engine", "num_fewshot", "include_path", "trust_remote_code"}, lambda: check_lmeval_options(values, runnable=runnable)),
        ({"backend", "backend_options", "device", "dtype"}, lambda: check_backend(values, runnable=runnable)),
        ({"device"}, lambda: check_device(values.get("device"), runnable=runnable)),
    ]
    if runnable:  # this machine writes the record
        out = Path(str(values.get("output_dir"))) / str(values.get("sweep"))
        checks.append(({"output_dir", "sweep"}, lambda: check_output_dir(out)))
    found: Found = []
    for keys, check in checks:
        if not keys & skip:
            found.extend(check())
    return found
