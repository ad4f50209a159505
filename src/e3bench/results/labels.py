"""The one way a configuration is named in sweep output, tables, plots and summaries.

``config_label(config)`` is ``"<model> <backend> <dtype> <device>"`` plus every backend option
that was set (``[compile=True]``): options are part of what is measured, so two configurations
that differ only there never print the same label. :func:`distinct_labels` names a whole set:
where labels would still collide (a sweep over ``seed`` or ``max_new_tokens``), each colliding
label gets the run options that differ inside its group (``seed=1``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

#: fields that say where results go or how they are logged, not what is measured: never part of
#: a run's identity (:meth:`e3bench.config.run.RunConfig.identity`), a label, nor compared by the
#: report. The one list (config re-exports it; it lives here because results sits below config).
NOT_IDENTITY = ("output_dir", "sweep", "cache_dir", "log_samples", "trackers", "meter_timeout_s")
#: ...and the fields :func:`config_label` already shows
_NOT_IN_SUFFIX = (*NOT_IDENTITY, "model", "backend", "dtype", "device", "backend_options")


def _as_dict(config: Any) -> dict[str, Any]:
    return dict(config.model_dump(mode="json") if hasattr(config, "model_dump") else config)


def _value(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return ",".join(map(str, v))
    return str(v)


def model_display(model: str) -> str:
    """How a model is named in labels, legends and tables: the last part of a path or hub id
    (``/root/.cache/.../SmolLM2-135M`` → ``SmolLM2-135M``, ``org/name`` → ``name``)."""
    return str(model).rstrip("/").split("/")[-1] or str(model)


def config_label(config: Mapping[str, Any] | Any, *, model_name: str | None = None) -> str:
    """``"tiny-llama pytorch fp32 cpu [compile=True]"`` for a RunConfig or its stored dict
    (``record.config``); ``model_name`` overrides the config's model (the record's resolved name).
    Backend options are listed sorted by key; none: no brackets."""
    c = _as_dict(config)
    model = model_display(str(model_name or c.get("model", "?")))
    opts = c.get("backend_options") or {}  # records made before backend_options have none
    extra = " [" + ", ".join(f"{k}={_value(v)}" for k, v in sorted(opts.items())) + "]" if opts else ""
    return f"{model} {c.get('backend')} {c.get('dtype')} {c.get('device')}{extra}"


def distinct_labels(configs: Sequence[Mapping[str, Any] | Any], *, model_names: Sequence[str | None] | None = None) -> list[str]:
    """One label per config (same order): :func:`config_label`, and where two configs would
    share one, the other run options that differ among them, e.g. ``"... cpu (seed=1)"``.
    Configs that are the same apart from where results go keep the same label."""
    dicts = [_as_dict(c) for c in configs]
    names = list(model_names) if model_names is not None else [None] * len(dicts)
    base = [config_label(d, model_name=n) for d, n in zip(dicts, names, strict=True)]
    groups: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(base):
        groups[label].append(i)
    out = list(base)
    for label, idx in groups.items():
        if len(idx) < 2:
            continue
        keys = sorted({k for i in idx for k in dicts[i]} - set(_NOT_IN_SUFFIX))
        differ = [k for k in keys if len({_value(dicts[i].get(k)) for i in idx}) > 1]
        for i in idx:
            if differ:
                out[i] = f"{label} (" + ", ".join(f"{k}={_value(dicts[i].get(k))}" for k in differ) + ")"
    return out
