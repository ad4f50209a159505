"""One registry for every kind of plugin: backends, meters, tasks, executors and trackers.

Modelled on lm-evaluation-harness's ``lm_eval/api/registry.py``: one generic :class:`Registry`
per kind, names resolved lazily so ``e3bench --help`` (and every listing) imports nothing heavy.

* **Lazy placeholders.** An entry's ``target`` is ``"package.module:attr"``; the module is
  imported on the first :meth:`Registry.get`. An object can also be registered directly
  (``register(name, obj)`` or as a decorator, ``@registry.meters.register("mine")``).
* **Extras without importing.** ``extra`` and ``requires`` say which ``pip install
  'e3bench[extra]'`` provides the top-level modules the entry needs; :meth:`Registry.get` checks
  them with :func:`importlib.util.find_spec` (no import) and raises
  :class:`~e3bench.core.errors.MissingExtra` with that exact line.
* **Entry points.** Plugins declare entries in their own package metadata, one group per kind::

      [project.entry-points."e3bench.backends"]
      mybackend = "my_pkg.backend:MyBackend"

  Groups: ``e3bench.backends``, ``e3bench.meters``, ``e3bench.tasks``, ``e3bench.executors``,
  ``e3bench.trackers``. What each kind's object must be is documented where its built-ins are
  registered (named by ``builtins`` below). A plugin cannot replace a built-in name; the
  conflicting plugin entry is ignored and listed in :attr:`Registry.ignored`.
* **Built-ins are registered the same way.** Each kind's package calls :meth:`Registry.register`
  at import (``e3bench.backends``, ``e3bench.energy.meters``, ``e3bench.evals.tasks``,
  ``e3bench.sweep.executors``, ``e3bench.results.trackers``); the registry imports that package
  on first use, so a lookup never depends on import order.

This module imports nothing of e3bench except :mod:`e3bench.core.errors`.
"""

from __future__ import annotations

import importlib
import importlib.util
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from e3bench.core.errors import E3Error, MissingExtra, install_hint, unknown_name

T = TypeVar("T")

BUILTIN = "built-in"


@dataclass(frozen=True)
class Entry:
    """One registered name: where its implementation lives and what it needs.

    ``target`` is ``"module:attr"`` (lazy) or ``None`` when ``obj`` holds the object itself.
    ``extra``: the ``e3bench[extra]`` that installs ``requires`` (top-level module names).
    ``defaults``: keyword options the kind applies before the user's (e.g. ``mmlu_5shot`` is
    MMLU with ``num_fewshot=5``). ``origin``: ``"built-in"``, ``"plugin <dist> <version>"`` or
    ``"registered"`` (at run time, e.g. by a test or a notebook).
    """

    name: str
    target: str | None = None
    extra: str | None = None
    requires: tuple[str, ...] = ()
    description: str = ""
    defaults: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    aliases: tuple[str, ...] = ()
    origin: str = BUILTIN
    obj: Any = field(default=None, compare=False, repr=False)

    def missing_module(self) -> str | None:
        """The first module of ``requires`` that is not importable here (nothing is imported)."""
        for mod in self.requires:
            if importlib.util.find_spec(mod) is None:
                return mod
        return None

    @property
    def installed(self) -> bool:
        """True when every module in ``requires`` can be found."""
        return self.missing_module() is None

    @property
    def is_plugin(self) -> bool:
        """True for entries that came from another distribution's entry points."""
        return self.origin.startswith("plugin")


class Registry(Generic[T]):
    """Name → implementation for one kind (``"backend"``, ``"meter"``, ...).

    ``group`` is the entry-point group plugins use; ``builtins`` is the module whose import
    registers the built-in entries (imported on first use). Lookups accept aliases.
    Unknown names raise the one "unknown <kind> 'x' — fix: did you mean 'y'?" error
    (:func:`~e3bench.core.errors.unknown_name`).
    """

    def __init__(self, kind: str, group: str, *, builtins: str | None = None, more: str = "") -> None:
        self.kind = kind
        self.group = group
        self.builtins = builtins
        self.more = more  # appended to the list of names when an unknown one has no close match
        self.ignored: list[str] = []  # plugin entries that lost to a built-in name
        self._entries: dict[str, Entry] = {}
        self._aliases: dict[str, str] = {}
        self._loaded: dict[str, T] = {}
        self._ready = False
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ registering
    def register(
        self,
        name: str,
        target: str | T | None = None,
        *,
        extra: str | None = None,
        requires: Iterable[str] = (),
        description: str = "",
        defaults: Mapping[str, Any] | None = None,
        aliases: Iterable[str] = (),
        origin: str | None = None,
        replace: bool = False,
    ) -> Any:
        """Register ``name``. ``target`` is ``"module:attr"`` (lazy) or the object itself.

        With ``target`` omitted this is a decorator: ``@registry.meters.register("mine")``.
        A name already registered raises ``ValueError`` unless ``replace=True``. ``origin`` is
        ``"registered"`` unless given; the built-ins modules use :meth:`builtin`.
        """
        if origin != BUILTIN:
            self._ensure()  # built-ins first, so a clash with one is reported, not hidden
        if target is None:

            def deco(obj: T) -> T:
                self.register(name, obj, extra=extra, requires=requires, description=description,
                              defaults=defaults, aliases=aliases, origin=origin, replace=replace)  # fmt: skip
                return obj

            return deco
        lazy = isinstance(target, str)
        if lazy and ":" not in target:  # type: ignore[operator]
            raise ValueError(f"lazy target {target!r} must look like 'package.module:attr'")
        origin = origin or "registered"
        entry = Entry(
            name=name,
            target=target if lazy else None,  # type: ignore[arg-type]
            extra=extra,
            requires=tuple(requires),
            description=description or (_first_line(getattr(target, "__doc__", None)) if not lazy else ""),
            defaults=MappingProxyType(dict(defaults or {})),
            aliases=tuple(aliases),
            origin=origin,
            obj=None if lazy else target,
        )
        with self._lock:
            self._add(entry, replace=replace)
        return target

    def builtin(self, name: str, target: str | T | None = None, **kwargs: Any) -> Any:
        """:meth:`register` for e3bench's own entries (``origin="built-in"``); called only while
        the kind's built-ins module is imported."""
        return self.register(name, target, origin=BUILTIN, **kwargs)

    def _add(self, entry: Entry, *, replace: bool) -> None:
        taken = entry.name in self._entries or entry.name in self._aliases
        if taken and not replace:
            raise ValueError(f"{self.kind} '{entry.name}' is already registered")
        self.unregister(entry.name)
        self._entries[entry.name] = entry
        for alias in entry.aliases:
            self._aliases[alias] = entry.name

    def unregister(self, name: str) -> None:
        """Remove ``name`` (and its aliases) if present; for tests and notebooks."""
        with self._lock:
            entry = self._entries.pop(name, None)
            self._loaded.pop(name, None)
            if entry is not None:
                for alias in entry.aliases:
                    self._aliases.pop(alias, None)

    # ------------------------------------------------------------------ discovery
    def _ensure(self) -> None:
        if self._ready:
            return
        with self._lock:
            if self._ready:
                return
            if self.builtins:
                importlib.import_module(self.builtins)  # registers the built-ins
            self._ready = True
            self._load_entry_points()

    def _load_entry_points(self) -> None:
        try:
            eps = list(metadata.entry_points(group=self.group))
        except Exception:  # noqa: BLE001 - broken metadata elsewhere must not break built-ins
            eps = []
        for ep in eps:
            dist = getattr(ep, "dist", None)
            origin = f"plugin {dist.name} {dist.version}" if dist is not None else "plugin"
            current = self._entries.get(ep.name)
            if current is not None and not current.is_plugin:
                self.ignored.append(f"{ep.name} = {ep.value} ({origin}): name taken by a built-in {self.kind}")
                continue
            extras = tuple(getattr(ep, "extras", ()) or ())
            entry = Entry(name=ep.name, target=f"{ep.module}:{ep.attr}", extra=extras[0] if extras else None,
                          origin=origin)  # fmt: skip
            self._add(entry, replace=True)

    def refresh(self) -> None:
        """Re-read the entry points (after installing a plugin in this process, or in tests)."""
        with self._lock:
            self._ensure()
            for name in [n for n, e in self._entries.items() if e.is_plugin]:
                self.unregister(name)
            self.ignored.clear()
            self._load_entry_points()

    # ------------------------------------------------------------------ lookup
    def entries(self) -> dict[str, Entry]:
        """Every entry by name (built-ins, plugins, run-time registrations), sorted by name."""
        self._ensure()
        return dict(sorted(self._entries.items()))

    def names(self) -> list[str]:
        """Sorted names (aliases excluded)."""
        return list(self.entries())

    def aliases(self) -> dict[str, str]:
        """Alias → canonical name."""
        self._ensure()
        return dict(self._aliases)

    def __contains__(self, name: object) -> bool:
        self._ensure()
        return name in self._entries or name in self._aliases

    def canonical(self, name: str) -> str:
        """The registered name for ``name`` or an alias of it; unknown names raise E3Error."""
        self._ensure()
        if name in self._entries:
            return name
        if name in self._aliases:
            return self._aliases[name]
        names = sorted(self._entries)
        raise unknown_name(self.kind, name, [*names, *self._aliases], fix=f"available: {', '.join(names)}{self.more}")

    def entry(self, name: str) -> Entry:
        """The :class:`Entry` for ``name`` (or an alias); unknown names raise E3Error."""
        return self._entries[self.canonical(name)]

    def missing_extra(self, name: str) -> MissingExtra | None:
        """The error :meth:`get` would raise for a missing dependency, or None (no import)."""
        entry = self.entry(name)
        mod = entry.missing_module()
        if mod is None:
            return None
        return MissingExtra(mod, entry.extra or entry.name, f"the {entry.name} {self.kind}")

    def get(self, name: str) -> T:
        """Import (once) and return the object registered as ``name``.

        Raises E3Error for an unknown name, :class:`MissingExtra` when a required module is
        not installed, and E3Error naming the plugin when a plugin's module fails to import.
        """
        key = self.canonical(name)
        with self._lock:
            if key in self._loaded:
                return self._loaded[key]
            entry = self._entries[key]
            missing = self.missing_extra(key)
            if missing is not None:
                raise missing
            obj = entry.obj if entry.target is None else _import(entry, self.kind)
            self._loaded[key] = obj
            return obj

    def create(self, name: str, **options: Any) -> Any:
        """Call the object registered as ``name`` with its entry's ``defaults`` updated by
        ``options`` (tasks, executors: classes or factories taking keyword options).

        Raises what :meth:`get` raises, and E3Error naming the entry when it rejects an option.
        """
        entry = self.entry(name)
        factory: Any = self.get(entry.name)
        try:
            return factory(**{**entry.defaults, **options})
        except TypeError as exc:
            raise E3Error(f"{self.kind} '{name}': {exc}", f"check the options given to '{name}'") from None

    def peek(self, name: str) -> T | None:
        """The object for ``name`` even when its extra is missing, for reading class attributes
        (``Options``, ``capabilities``); None when its module cannot be imported here.

        Only for kinds whose modules import their heavy libraries lazily (e3bench's own do).
        """
        key = self.canonical(name)
        if self.missing_extra(key) is None:
            return self.get(key)
        entry = self._entries[key]
        if entry.target is None:
            return entry.obj
        try:
            return _import(entry, self.kind)
        except (ImportError, E3Error):
            return None

    def installed(self) -> dict[str, bool]:
        """Name → whether its required modules are importable here (nothing is imported)."""
        return {name: e.installed for name, e in self.entries().items()}


def _import(entry: Entry, kind: str) -> Any:
    module, _, attr = (entry.target or "").partition(":")
    try:
        obj: Any = importlib.import_module(module.strip())
        for part in attr.strip().split("."):
            obj = getattr(obj, part)
        return obj
    except (ImportError, AttributeError) as exc:
        if not entry.is_plugin:
            raise  # a broken built-in is a bug: keep the traceback
        raise E3Error(
            f"the {kind} '{entry.name}' ({entry.origin}) could not be loaded from {entry.target}: "
            f"{type(exc).__name__}: {exc}",
            "reinstall or upgrade that plugin package",
        ) from exc


def describe_options(model: Any) -> str:
    """``"n_ctx (int, default 2048): context length; n_batch (...)"`` for a pydantic options
    model, or ``"it takes no options"``; what an options error lists as its fix."""
    parts = []
    for key, f in model.model_fields.items():
        kind = getattr(f.annotation, "__name__", None) or str(f.annotation).replace("typing.", "")
        desc = f": {f.description}" if f.description else ""
        parts.append(f"{key} ({kind}, default {f.default!r}){desc}")
    return "; ".join(parts) if parts else "it takes no options"


def check_options(
    kind: str, name: str, model: Any, options: Mapping[str, Any] | None, *, reserved: Mapping[str, str] | None = None
) -> tuple[Any, list[tuple[str, E3Error]]]:
    """Validate ``options`` (a dict from YAML / ``--set``) with an entry's pydantic ``model``
    (``extra="forbid"``; None = not typed, only ``reserved`` is checked): the one wording of
    option errors, for config time and build time.

    Returns ``(validated model or None, [(key, E3Error), ...])`` with EVERY problem: keys in
    ``reserved`` (key → the flag that sets it instead, e.g. ``threads`` → ``--threads``), unknown
    keys, and bad values. Callers that build raise the first; config validation reports all.
    """
    from pydantic import ValidationError

    options = dict(options or {})
    errors: list[tuple[str, E3Error]] = []
    for key in options:
        if key in (reserved or {}):
            errors.append((key, E3Error(f"{kind}_options.{key} is a run option", f"use {reserved[key]} instead")))  # type: ignore[index]
    rest = {k: v for k, v in options.items() if k not in (reserved or {})}
    if model is None:  # an entry without an options model: only the reserved keys are checked
        return None, errors
    listing = f"its options: {describe_options(model)}"
    try:
        validated = model.model_validate(rest)
    except ValidationError as exc:
        for err in exc.errors():
            key = ".".join(str(p) for p in err.get("loc", ())) or "?"
            if err.get("type") == "extra_forbidden":
                errors.append((key, E3Error(f"{kind} '{name}' has no option '{key}'", listing)))
            else:
                msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
                errors.append((key, E3Error(f"{kind} '{name}' option {key}={err.get('input')!r} is invalid: {msg}", listing)))
        return None, errors
    return (validated if not errors else None), errors


def _first_line(doc: str | None) -> str:
    return doc.strip().splitlines()[0] if doc and doc.strip() else ""


def describe(reg: Registry[Any]) -> list[dict[str, str]]:
    """Rows for listings (``e3bench models`` / ``tasks`` / ``plugins``): name, origin,
    installed (``yes`` or the pip line), description and aliases. Imports nothing."""
    rows = []
    for name, e in reg.entries().items():
        miss = e.missing_module()
        rows.append({
            "name": name,
            "origin": e.origin,
            "installed": "yes" if miss is None else f"no: {install_hint(e.extra or name)}",
            "description": e.description,
            "aliases": ", ".join(e.aliases),
        })  # fmt: skip
    return rows


#: What every backend is built with besides its ``Options``: ``cls(options, cache_dir=..., threads=...)``;
#: these keys are run options (key → the flag that sets them), never ``backend_options``.
BACKEND_RUN_OPTIONS: Mapping[str, str] = MappingProxyType({"cache_dir": "--cache-dir", "threads": "--threads"})
#: classes implementing :class:`e3bench.core.api.Backend` (registered in ``e3bench.backends``)
backends: Registry[Any] = Registry("backend", "e3bench.backends", builtins="e3bench.backends")
#: :class:`e3bench.energy.meters.MeterSpec` objects (registered in ``e3bench.energy.meters``)
meters: Registry[Any] = Registry("meter", "e3bench.meters", builtins="e3bench.energy.meters")
#: task classes (or factories) called with keyword options (``e3bench.evals.tasks``)
tasks: Registry[Callable[..., Any]] = Registry(
    "task", "e3bench.tasks", builtins="e3bench.evals.tasks", more=" (or --engine lm-eval for lm-eval's task names)"
)
#: executor classes taking keyword options (``e3bench.sweep.executors``)
executors: Registry[Any] = Registry("executor", "e3bench.executors", builtins="e3bench.sweep.executors")
#: tracker functions ``log(record, *, project, group, output_dir) -> str`` (``e3bench.results.trackers``)
trackers: Registry[Callable[..., str]] = Registry("tracker", "e3bench.trackers", builtins="e3bench.results.trackers")

ALL: dict[str, Registry[Any]] = {r.kind: r for r in (backends, meters, tasks, executors, trackers)}
