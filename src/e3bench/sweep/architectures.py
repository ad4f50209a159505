"""The architecture comparison: a sweep file with an ``architectures:`` block
(``configs/sweeps/architectures.yaml``; docs/architectures.md).

```yaml
name: architectures
base: {backend: pytorch, dtype: fp32, prompt_tokens: 128, max_new_tokens: 16, batch_sizes: [1]}
grid:
  model: [minilm-l6, flan-t5-small, smollm2-135m]
architectures:
  tasks: {boolq: {target_accuracy: 0.7}, copa: {target_accuracy: 0.6}}
  fewshot: 2             # solved training items before each held-out item (generators)
  fixtures: []           # models to label as random-weights fixtures (the marker file also says so)
  finetune: {mode: lora, max_steps: 60, batch_size: 8, eval_every: 20, max_eval_samples: 100}
```

``e3bench sweep`` runs it in three steps, each through the path it has anyway:

1. **items** (:func:`read`): for each task, the fine-tuning split of :func:`e3bench.train.finetune.
   load_task_data` (seeded, so every model gets the same items) is written as a JSONL file of the
   held-out items, each prefixed with ``fewshot`` solved training items — the generators' few-shot
   prompts, scored by the ``jsonl_mc`` task;
2. **inference**: the grid, with those few-shot tasks, through the sweep's executor and the one
   runner (encoders: forward latency and energy per sequence; generators: TTFT, TPOT and energy per
   token, and the few-shot scores; an encoder-only model cannot score text, so it gets no task:
   :meth:`Spec.grid_extra`, from its config.json);
3. **fine-tuning** (:func:`run_finetunes`): every model on every task with the same settings, by
   :func:`e3bench.train.finetune.run_finetune` (records in ``<sweep folder>/finetune/``); then the
   comparison record (:func:`write_record`, :mod:`e3bench.results.architectures`) ties them together.

Everything is resumable: completed inference runs (by config hash) and fine-tuning runs (by
config hash, status ok) are not run again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e3bench.config import yamlfile
from e3bench.config.validate import Problem, raise_problems
from e3bench.core import ids
from e3bench.core.errors import E3Error
from e3bench.core.fsutil import atomic_write_text
from e3bench.results import store
from e3bench.results.architectures import FILE_NAME, FIXTURE_MARKER, ArchitecturesRecord, ArchModel, ArchTask

#: The sweep file's key that makes it an architecture comparison.
KEY = "architectures"
_KEYS = ("tasks", "fewshot", "fixtures", "finetune")
#: Run settings the fine-tuning takes from the sweep's ``base`` (same meter, machine, seed), unless
#: the ``finetune`` block sets them.
SHARED = ("device", "meter", "cpu_tdp_w", "region", "threads", "idle_seconds", "seed")
#: Fine-tuning settings the comparison sets itself (per model and task, and where records go).
_OWN = ("model", "task", "output_dir", "train_file", "eval_file")


@dataclass
class Spec:
    """An architecture comparison read from a sweep file: the sweep folder ``root``, the tasks
    (their items written), the shared fine-tuning settings, the declared fixtures, and ``layer``:
    the few-shot task specs of the inference runs (:meth:`grid_extra` gives them to each model that
    can score text)."""

    name: str
    root: Path
    fewshot: int
    prompt_tokens: int
    tasks: list[ArchTask]
    finetune: dict[str, Any]
    fixtures: list[str]
    task_specs: list[str]
    targets: dict[str, float] = field(default_factory=dict)

    def grid_extra(self, key: str, value: Any) -> dict[str, Any]:
        """More fields for grid value ``value`` of ``key`` (:func:`e3bench.sweep.plan.expand`'s
        ``extra``): a model gets the few-shot tasks, or none when its config.json says it is
        encoder-only (no language-model head: the runner would refuse the run)."""
        if key != "model":
            return {}
        return {"tasks": [] if encoder_only(str(value)) else list(self.task_specs)}


def _where(doc: yamlfile.YamlFile) -> Callable[[str], str]:
    return lambda key: doc.where(f"{KEY}.{key}")


def read(path: str | Path, *, output_dir: str | None = None, write_items: bool = True) -> Spec | None:
    """The comparison of sweep file ``path`` (None: the file has no ``architectures:`` block).

    Checks the block (every problem at its line, before anything runs) and writes each task's
    few-shot items file into ``<sweep folder>/items/`` (``write_items``). Raises
    :class:`~e3bench.config.validate.ConfigError` / :class:`E3Error`.
    """
    doc = yamlfile.load(path, what="sweep file", hint="check the path given to e3bench sweep")
    data = doc.data or {}
    if KEY not in data:
        return None
    where = _where(doc)
    block, base = data[KEY], data.get("base") or {}
    if not isinstance(block, dict) or not isinstance(base, dict):
        raise E3Error(f"'{KEY}' and 'base' in {path} must be mappings", "see docs/architectures.md")
    problems = [Problem(where(k), f"unknown key '{k}' in {KEY}", f"valid keys: {', '.join(_KEYS)}")
                for k in block if k not in _KEYS]  # fmt: skip
    if "model" not in (data.get("grid") or {}):
        problems.append(Problem(doc.where("grid"), "an architecture comparison needs its models under grid.model",
                                "e.g. grid: {model: [minilm-l6, flan-t5-small, smollm2-135m]}"))  # fmt: skip
    problems += [Problem(doc.where(f"base.{k}"), f"base.{k} is set by the comparison (the few-shot tasks over "
                         "the fine-tuning's held-out items)", f"remove base.{k}") for k in ("tasks", "limit") if k in base]  # fmt: skip
    tasks = block.get("tasks") or {}
    if isinstance(tasks, list):
        tasks = {t: {} for t in tasks}
    if not isinstance(tasks, dict) or not tasks:
        problems.append(Problem(where("tasks"), "architectures.tasks must name at least one task",
                                "e.g. tasks: {boolq: {target_accuracy: 0.7}}"))  # fmt: skip
        tasks = {}
    fewshot = block.get("fewshot", 0)
    if isinstance(fewshot, bool) or not isinstance(fewshot, int) or not 0 <= fewshot <= 8:
        problems.append(Problem(where("fewshot"), f"fewshot must be a whole number 0..8 (got {fewshot!r})", "e.g. fewshot: 2"))
        fewshot = 0
    fixtures = block.get("fixtures") or []
    if not isinstance(fixtures, list):
        problems.append(Problem(where("fixtures"), "fixtures must be a list of model names", "e.g. fixtures: [path/to/tiny-t5]"))
        fixtures = []
    ft = dict(block.get("finetune") or {})
    problems += [Problem(where(f"finetune.{k}"), f"finetune.{k} is set by the comparison", f"remove finetune.{k}")
                 for k in _OWN if k in ft]  # fmt: skip
    ft = {**{k: base[k] for k in SHARED if k in base}, **{k: v for k, v in ft.items() if k not in _OWN}}
    raise_problems(problems)
    configs = {t: _check_finetune(ft, str(t), opts, where) for t, opts in tasks.items()}
    name = str(data.get("name") or Path(path).stem)
    root = store.run_dir(output_dir or data.get("output_dir") or "results", name)
    arch_tasks = [_items(root, cfg, fewshot, write_items) for cfg in configs.values()]
    # few-shot scored by plain acc (acc_norm=false): the SuperGLUE tasks' standard metric (lm-eval
    # reports acc only) and what the fine-tuned classifiers' accuracy is — one headline everywhere
    return Spec(name=name, root=root, fewshot=fewshot, prompt_tokens=int(base.get("prompt_tokens", 128)), tasks=arch_tasks,
                finetune=ft, fixtures=[str(f) for f in fixtures], task_specs=[f"jsonl_mc:path={t.items_file},label={t.fewshot_label},acc_norm=false" for t in arch_tasks],
                targets={t: c.target_accuracy for t, c in configs.items()})  # fmt: skip


def _check_finetune(ft: dict[str, Any], task: str, opts: Any, where):
    """The fine-tuning config of ``task`` (for a placeholder model), or the ConfigError naming the
    bad option at its line."""
    from pydantic import ValidationError

    from e3bench.train.finetune import FinetuneConfig

    opts = opts or {}
    if not isinstance(opts, dict):
        raise_problems([Problem(where(f"tasks.{task}"), f"task '{task}' takes a mapping of fine-tuning options",
                                "e.g. boolq: {target_accuracy: 0.7}")])  # fmt: skip
    try:
        return FinetuneConfig(model="-", task=task, **{**ft, **opts})
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(x) for x in err["loc"])
        at = f"tasks.{task}.{key}" if key in opts else f"finetune.{key}"
        raise_problems([Problem(where(at), f"{key}: {err['msg']}", "see e3bench finetune --help for the option")])


def _items(root: Path, cfg, fewshot: int, write: bool) -> ArchTask:
    """Write ``<root>/items/<task>-<k>shot.jsonl``: the fine-tuning's held-out items of ``cfg``'s
    task (the same seeded split :func:`~e3bench.train.finetune.load_task_data` gives every model),
    each query prefixed with the first ``fewshot`` training items solved, and suffixed as the
    task's built-in evaluation does (``\\nAnswer:`` for BoolQ)."""
    from e3bench.evals.tasks import get_task
    from e3bench.train.finetune import load_task_data

    data = load_task_data(cfg)
    try:
        suffix = str(getattr(get_task(cfg.task), "suffix", "") or "")
    except E3Error:  # a task without a built-in evaluation (a user's file): no suffix
        suffix = ""
    shots = "".join(f"{r['query']}{suffix} {r['choices'][int(r['gold'])]}\n\n" for r in data.train[:fewshot])
    rows = [{"query": shots + r["query"] + suffix, "choices": list(r["choices"]), "gold": int(r["gold"])} for r in data.eval]
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    path = root / "items" / f"{cfg.task}-{fewshot}shot.jsonl"
    if write:
        try:
            atomic_write_text(path, text)
        except OSError as exc:
            raise E3Error(f"cannot write the few-shot items to {path}: {exc.strerror}", "pass a writable --output-dir") from None
    return ArchTask(task=cfg.task, fewshot_label=f"{cfg.task}_{fewshot}shot", items_file=str(path),
                    items_sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(), n_eval=len(data.eval),
                    n_train=len(data.train), majority_class_accuracy=float(data.info["majority_class_accuracy"]),
                    target_accuracy=cfg.target_accuracy)  # fmt: skip


def encoder_only(model: str) -> bool:
    """True when ``model``'s config.json, found on disk without loading anything (a folder, the
    hub cache, the GGUF conversion cache), says it is encoder-only; False when it says otherwise
    or nothing is on disk (the runner checks again after the load)."""
    from e3bench.backends.models import resolve
    from e3bench.bench import limits

    try:
        config = limits.peek_config(resolve(model))
    except E3Error:
        return False
    return limits.config_architecture(config or {}) == "encoder-only"


def models_of(runs) -> list[str]:
    """The distinct models of the inference runs (``RunConfig``), in plan order."""
    return list(dict.fromkeys(c.model for c in runs))


def finetune_configs(spec: Spec, models: list[str]) -> list:
    """One :class:`~e3bench.train.finetune.FinetuneConfig` per model and task: the same settings
    for every model; records go to ``<sweep folder>/finetune/``."""
    from e3bench.train.finetune import FinetuneConfig

    return [FinetuneConfig(**{**spec.finetune, "target_accuracy": spec.targets[t.task]}, model=m, task=t.task,
                           output_dir=str(spec.root)) for m in models for t in spec.tasks]  # fmt: skip


def fixture_note(model: str, declared: list[str]) -> str | None:
    """Why ``model`` is a random-weights fixture (None: it is not known to be one): named in the
    sweep file's ``fixtures``, or its folder holds :data:`~e3bench.results.architectures.FIXTURE_MARKER`."""
    if model in declared:
        return "declared a fixture in the sweep file (architectures.fixtures)"
    p = Path(model).expanduser()
    if (p / FIXTURE_MARKER).is_file():
        return f"random weights: its folder holds {FIXTURE_MARKER} (a test fixture, not a pretrained model)"
    return None


def _done(root: Path) -> dict[str, str]:
    """config hash → run id of the fine-tuning records under ``root/finetune`` with status ok."""
    found = store.scan(root / "finetune").others.get("finetune", [])
    return {d.get("config_hash", ""): d.get("run_id", "") for _, d in found if d.get("status") == "ok"}


def run_finetunes(spec: Spec, configs: list, *, say: Callable[[str], None], progress=None) -> list[str]:
    """Fine-tune every config not done yet (one with a record of status ok is skipped), in order;
    one ``"<label>: <reason>"`` line per failed one (an E3Error or a diverged run)."""
    from e3bench.train.finetune import run_finetune

    done = _done(spec.root)
    failed: list[str] = []
    for i, cfg in enumerate(configs, 1):
        label = f"fine-tune {cfg.model} on {cfg.task}"
        if cfg.config_hash() in done:
            say(f"[{i}/{len(configs)}] {label}: already complete")
            continue
        try:
            rec, _ = run_finetune(cfg, progress=progress)
        except E3Error as exc:
            failed.append(f"{label}: {exc.one_line()}")
            say(f"[{i}/{len(configs)}] FAILED {label}: {exc.one_line()}")
            continue
        if rec.status != "ok":
            failed.append(f"{label}: {rec.status} ({rec.error})")
        best = "n/a" if rec.best_accuracy is None else f"{rec.best_accuracy:.3f}"
        say(f"[{i}/{len(configs)}] {rec.status} {label}: best accuracy {best} in {rec.train_time_s:.0f} s training")
    return failed


def write_record(spec: Spec, runs, configs: list) -> Path:
    """Write ``<sweep folder>/architectures.json`` tying the inference runs (``RunConfig``) and the
    fine-tuning ``configs`` of each model together; returns its path."""
    models = []
    for m in models_of(runs):
        note = fixture_note(m, spec.fixtures)
        models.append(ArchModel(
            model=m, fixture=note is not None, fixture_note=note,
            inference_hash=next((c.config_hash() for c in runs if c.model == m), None),
            finetune_hashes={c.task: c.config_hash() for c in configs if c.model == m},
        ))  # fmt: skip
    record = ArchitecturesRecord(sweep=spec.name, created_utc=ids.utc_now_iso(), prompt_tokens=spec.prompt_tokens,
                                 fewshot=spec.fewshot, tasks=spec.tasks, models=models, finetune=spec.finetune)  # fmt: skip
    path = spec.root / FILE_NAME
    try:
        atomic_write_text(path, record.model_dump_json(indent=1))
    except OSError as exc:
        raise E3Error(f"cannot write {path}: {exc.strerror}", "pass a writable --output-dir") from None
    return path
