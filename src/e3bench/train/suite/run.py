"""``run_suite``: validate every configuration, meter an idle baseline once, train each
configuration (baseline first) on the shared corpus and tokenizer, compare with the baseline,
judge every claim, and write ``suite.json`` (after every configuration), ``REPORT.md`` and
``loss_curves.png``.

With ``seeds`` > 1 the whole set runs once per seed (``train.seed + k``), round by round, the
order reversed every other round, so that a change of machine load during the suite falls on
every configuration alike rather than on one of them; the first round's results are
``record.configs``, the others' ``record.repeats``."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from e3bench.core import ids
from e3bench.core.errors import E3Error
from e3bench.core.fmt import count
from e3bench.core.progress import Reporter, as_reporter
from e3bench.core.fsutil import atomic_write_text
from e3bench.core.host import THREADS_SOURCES, resolve_threads
from e3bench.core.timing import clock
from e3bench.train.records import ConfigResult, SuiteRecord
from e3bench.train.shared import claims
from e3bench.train.shared import device as dev
from e3bench.train.shared.energy import training_energy
from e3bench.train.suite import data, report
from e3bench.train.suite.compare import attach_comparisons, compare
from e3bench.train.suite.loop import run_config
from e3bench.train.suite.spec import TrainSpec, expand_paths, load_spec, toml_str

#: a :class:`~e3bench.core.progress.Reporter` (stages: configurations, steps) or a line callback
Progress = Reporter | Callable[[str], None]


def run_suite(
    paths: Sequence[str | Path],
    *,
    output_dir: str | Path = "results",
    sets: Sequence[str] = (),
    text: str | None = None,
    max_steps: int | None = None,
    device: str | None = None,
    meter: str = "auto",
    idle_seconds: float = 2.0,
    cpu_tdp_w: float | None = None,
    region: str | None = None,
    threads: int | None = None,
    baseline: str | None = None,
    plot: bool = True,
    progress: Progress | None = None,
    seeds: int = 1,
) -> tuple[SuiteRecord, Path]:
    """Run every configuration in ``paths`` (files, directories, globs); write suite.json,
    REPORT.md and loss_curves.png under ``<output_dir>/train/<suite_id>/``; return the record
    and that directory.

    ``text``, ``max_steps`` and ``device`` override every file, as do ``sets``
    (``section.key=value``). Raises :class:`E3Error` before any training for invalid files,
    duplicate names, an unknown ``baseline``, mixed devices or an unusable precision; a
    configuration that fails while training is recorded and the suite continues. ``seeds``:
    runs per configuration (interleaved rounds, see the module docstring).
    """
    if seeds < 1:
        raise E3Error(f"--seeds must be at least 1 (got {seeds})", "pass --seeds 1, 2, 3, ...")
    progress = as_reporter(progress)
    t0 = clock()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    files = expand_paths(paths)
    extra: list[str] = list(sets)
    if text:
        extra.append(f"data.text={toml_str(text)}")
    if max_steps is not None:  # 0 is refused by the spec (train.max_steps ≥ 1), not ignored
        extra.append(f"train.max_steps={max_steps}")
    if device:
        extra.append(f"train.device={toml_str(device)}")
    specs = [load_spec(f, extra) for f in files]  # every file validated before any training
    base_name = _baseline_name(specs, baseline)
    order = sorted(range(len(specs)), key=lambda i: specs[i].name != base_name)  # baseline first
    device_, prec = _device(specs)
    source = "user" if threads else None
    if device_ == "cpu":  # off CPU torch's own default; on CPU the one thread rule, one core spare
        threads, source = resolve_threads(threads, spare_cores=1)
        progress(f"torch threads: {threads} ({THREADS_SOURCES[source]}; --threads N to choose)")
    dev.set_threads(threads)
    manifest, warnings = _environment(threads, device_)
    manifest.threads_source = THREADS_SOURCES[source] if source else None
    suite_id = ids.run_id(ids.stable_hash({"configs": [s.model_dump(mode="json") for s in specs]}))
    out_dir = Path(output_dir) / "train" / suite_id
    corpora = _Corpora(progress)
    corpus0, tok0 = corpora.get(specs[order[0]])  # a missing corpus fails before the idle baseline
    energy = training_energy(
        meter, device=device_, cpu_tdp_w=cpu_tdp_w, idle_seconds=idle_seconds, region=region, progress=progress
    )
    record = SuiteRecord(
        suite_id=suite_id, created_utc=ids.utc_now_iso(), baseline=base_name, corpus=corpus0.describe(),
        tokenizer=tok0.describe(), device=device_, precision=prec.note, manifest=manifest,
        energy=energy.window_.run_info(), warnings=warnings, seeds=[specs[order[0]].train.seed + k for k in range(seeds)],
    )  # fmt: skip
    shapes = {(s.model, s.data.batch_size, s.data.tokenizer, s.data.vocab_size) for s in specs}
    if len(shapes) > 1:
        warnings.append("configurations differ in model, batch or tokenizer: compare them at equal tokens only")
    for w in claims.missing_references(specs):
        progress(f"warning: {w}")
        warnings.append(w)
    runs = [(k, i) for k in range(seeds) for i in (order if k % 2 == 0 else order[::-1])]
    shown = progress.stage(f"training suite: {count(len(order), 'configuration')} × {count(seeds, 'seed')}",
                           total=len(runs), unit="runs")  # fmt: skip
    try:
        for k, i in runs:
            spec = specs[i]
            if k:
                spec = spec.model_copy(update={"train": spec.train.model_copy(update={"seed": spec.train.seed + k})})
            dest = record.configs if k == 0 else record.repeats
            progress(f"== {spec.name} ({files[i]}), seed {spec.train.seed}")
            shown.update(detail=f"{spec.name} seed {spec.train.seed}")
            try:
                _, tok = corpora.get(spec)
            except E3Error as exc:
                dest.append(ConfigResult(name=spec.name, status="failed", reason=exc.one_line(), seed=spec.train.seed))
                shown.advance()
                continue
            dest.append(run_config(spec, tok, energy, device=device_, progress=progress, file=str(files[i])))
            if record.energy is not None and record.energy.idle is None:  # idle is per config (after its
                record.energy = energy.window_.run_info()  # model is built); the suite shows the first one's
            _save(record, base_name, out_dir, t0)
            shown.advance()
    finally:
        shown.close()
        energy.window_.close()
    _save(record, base_name, out_dir, t0)
    report.write_report(record, out_dir, plot=plot)
    return record, out_dir


def _save(record: SuiteRecord, base_name: str, out_dir: Path, t0: float) -> None:
    attach_comparisons(record, base_name)
    record.claims = claims.judge([*record.configs, *record.repeats], base_name, compare)
    record.duration_s = clock() - t0
    atomic_write_text(out_dir / "suite.json", record.model_dump_json(indent=1))


def _baseline_name(specs: list[TrainSpec], baseline: str | None) -> str:
    """The baseline: ``baseline``, else the config named "baseline", else the first."""
    names = [s.name for s in specs]
    dups = {n for n in names if names.count(n) > 1}
    if dups:
        raise E3Error(f"configuration names must be unique; repeated: {', '.join(sorted(dups))}", "rename one")
    base_name = baseline or ("baseline" if "baseline" in names else names[0])
    if base_name not in names:
        raise E3Error(f"--baseline '{base_name}' is not among the configs ({', '.join(names)})", "pick one of them")
    return base_name


def _device(specs: list[TrainSpec]):
    """(device, precision of the first config); every config must resolve to the same device
    and a usable precision."""
    device = dev.resolve_device(specs[0].train.device)
    for s in specs:
        if dev.resolve_device(s.train.device) != device:
            raise E3Error("all configurations of a suite must run on one device", "set train.device the same everywhere")
    for s in specs:  # fail on unusable precision before training anything
        dev.resolve_precision(s.train.precision, device)
    return device, dev.resolve_precision(specs[0].train.precision, device)


def _environment(threads: int | None, device: str):
    import torch

    from e3bench.bench import envinfo

    manifest = envinfo.collect(torch_threads=threads)
    manifest.torch_threads = torch.get_num_threads()
    busy = envinfo.busy_warning(manifest, "suite") if device == "cpu" else None
    return manifest, [busy] if busy else []


class _Corpora:
    """Corpora and trained tokenizers, each made once for all configurations that share it."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self._corpora: dict[tuple, Any] = {}
        self._toks: dict[tuple, Any] = {}

    def get(self, spec: TrainSpec):
        """(Corpus, TokenizedCorpus) of ``spec``'s data section."""
        d = spec.data
        ckey = (d.text, d.hf_dataset, d.hf_config, d.hf_split, d.hf_field, d.max_chars, d.val_fraction)
        if ckey not in self._corpora:
            self._corpora[ckey] = data.load_corpus(
                d.text, hf_dataset=d.hf_dataset, hf_config=d.hf_config, hf_split=d.hf_split,
                hf_field=d.hf_field, max_chars=d.max_chars, val_fraction=d.val_fraction,
            )  # fmt: skip
        tkey = (ckey, d.tokenizer, d.vocab_size)
        if tkey not in self._toks:
            t = self._toks[tkey] = data.train_tokenizer(self._corpora[ckey], d.tokenizer, d.vocab_size)
            self.progress(
                f"tokenizer: {t.kind}, vocab {t.vocab_size}, {t.train_ids.numel():,} train / "
                f"{t.val_ids.numel():,} val tokens ({t.train_seconds:.1f} s)"
            )
        return self._corpora[ckey], self._toks[tkey]
