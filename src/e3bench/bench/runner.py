"""The only orchestrator: ``run_one(RunConfig) -> ResultRecord``.

load → one-off work (roofline bandwidth) → one untimed request (weights resident) → idle
baseline (model loaded, before warm-up) → warm up → timed + metered windows (per batch size) → evaluate tasks on the SAME loaded backend →
record. Every timed window is bracketed by ``backend.synchronize()`` and read on
``timing.clock``; every metered window by ``meter.begin/end``. The peak RSS reported is that of
the measured phase (after load and the one-off work); the lifetime peak is kept beside it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from e3bench.backends import models
from e3bench.backends.factory import make_backend
from e3bench.bench import envinfo, limits, loops, prompts
from e3bench.energy.window import MeteredWindow
from e3bench.config.run import RunConfig
from e3bench.config.validate import Problem, raise_problems, semantic_checks
from e3bench.core.api import Backend
from e3bench.core import registry
from e3bench.core.devices import device_index
from e3bench.core.host import THREADS_SOURCES, PeakRss, peak_rss_bytes, release_free_memory, resolve_threads
from e3bench.core.ids import run_id, utc_now_iso
from e3bench.core.progress import Reporter, as_reporter
from e3bench.core.timing import clock
from e3bench.results.schema import BatchResult, Efficiency, FailedBatch, ModelInfo, ResultRecord, TaskResult

#: a :class:`~e3bench.core.progress.Reporter` (stages with counts) or a plain line callback
Progress = Reporter | Callable[[str], None]


class Runner:
    """One run of one configuration; see :func:`run_one`."""

    def __init__(self, cfg: RunConfig, *, backend: Backend | None = None, progress: Progress | None = None):
        self.cfg = cfg
        self.backend = backend
        self.progress = as_reporter(progress)  # notes: self.progress(msg); long steps: .stage(...)
        self.warnings: list[str] = []
        self.oom_batch: int | None = None  # the smallest batch size that ran out of memory
        self.run_id = run_id(cfg.config_hash())  # names the record and its samples files

    def _tasks(self, window: MeteredWindow) -> list[TaskResult]:
        if not self.cfg.tasks:
            return []
        from e3bench.evals.engine import run_tasks

        assert self.backend is not None
        return run_tasks(
            self.backend, window, self.cfg, run_id=self.run_id, progress=self.progress, warnings=self.warnings
        )

    # ---------------------------------------------------------------------- run
    def run(self) -> ResultRecord:
        """Load → idle baseline → warm-up → metered speed windows per batch size → tasks on the
        same backend → record. User errors raise :class:`E3Error`; the backend and the meters
        are closed whatever happens after they were created."""
        cfg = self.cfg
        t_run = clock()
        threads, source = resolve_threads(cfg.threads)  # one count for every backend and executor
        manifest = envinfo.collect(torch_threads=cfg.threads)
        manifest.threads, manifest.threads_source = threads, THREADS_SOURCES[source]
        busy = envinfo.busy_warning(manifest)
        if busy:
            self.warnings.append(busy)
        # the config's own checks (meters, region, tasks, trackers, backend options), for callers
        # that built a RunConfig without build_config: fail before any work, not after
        found = semantic_checks(cfg.model_dump(), runnable=False, skip=set())
        raise_problems([Problem(key, err.problem, err.fix) for key, err in found])
        from e3bench.evals.engine import preflight

        spec = models.resolve(cfg.model, trust_remote_code=cfg.trust_remote_code, revision=cfg.revision)
        config = limits.peek_config(spec, cfg.cache_dir)
        # lm-eval's task names, data, and tasks an encoder-only model cannot run: before the load
        # (the default task, not asked for, is skipped with a warning after it instead)
        preflight(cfg, None if cfg.defaulted("tasks") else limits.config_architecture(config or {}))
        # capabilities (architecture × backend × precision × device), then fit: refused here,
        # before any meter, idle window or load
        cls = type(self.backend) if self.backend is not None else registry.backends.get(cfg.backend)
        raise_problems([Problem("", e.problem, e.fix) for e in limits.capability_problems(
            cls, spec=spec, config=config, device=cfg.device, precision=cfg.dtype)])  # fmt: skip
        self._check_fit(config)
        if self.backend is None:
            self.backend = make_backend(cfg.backend, cfg.backend_options, cache_dir=cfg.cache_dir, threads=threads)
        backend = self.backend
        window: MeteredWindow | None = None
        try:
            window = MeteredWindow.create(  # a meter that cannot work fails before the model loads
                cfg.meter, device=cfg.device, cpu_tdp_w=cfg.cpu_tdp_w, region=cfg.region,
                cross_choice=cfg.cross_check_meter, sync=backend.synchronize, timeout_s=cfg.meter_timeout_s, pue=cfg.pue,
            )  # fmt: skip
            return self._measure(spec, backend, window, manifest, t_run)
        finally:
            backend.close()
            if window is not None:
                window.close()

    def _measure(self, spec, backend: Backend, window: MeteredWindow, manifest, t_run: float) -> ResultRecord:
        cfg = self.cfg
        with self.progress.stage(f"loading {spec.name} ({cfg.backend}, {cfg.dtype}, {cfg.device})", unit="steps"):
            t0 = clock()
            info = backend.load(spec, cfg.dtype, cfg.device)
            backend.synchronize()
            load_s = clock() - t0
        if "torch" in sys.modules:
            import torch

            manifest.torch_threads = torch.get_num_threads()
        self._check_threads(backend, manifest)
        model_info = ModelInfo(
            name=spec.name,
            source=spec.source,
            path=spec.path,
            gguf_file=spec.gguf_file,
            architecture=info.architecture,
            model_type=info.model_type,
            parameters=info.parameters,
            weights_bytes=info.weights_bytes,
            dtype=info.dtype,
            device=info.device,
            notes=list(info.notes) + cfg.model_notes(),
        )
        ps = prompts.load_prompts(backend.encode, cfg.prompts, cfg.prompt_tokens)
        self._check_fit(limits.peek_config(spec, cfg.cache_dir), backend=backend,
                        architecture=info.architecture, ps=ps)  # fmt: skip
        eff = Efficiency(
            load_time_s=load_s,
            load_note="backend.load() wall time incl. tokenizer; GGUF conversion is cached after the first run",
            prompt_source=ps.source,
            peak_rss_bytes=0,
        )
        rule = loops.StoppingRule(cfg.warmup_iters, cfg.min_iters, cfg.min_seconds, cfg.max_seconds)
        bandwidth = None if info.architecture == "encoder-only" else self._bandwidth(manifest)
        lifetime_before = peak_rss_bytes()  # load, conversions and the bandwidth probe
        release_free_memory()  # what a conversion freed must not stay resident in the measured phase
        mem = PeakRss()
        mem.start()  # the measured phase starts here: one-off work above is not in its peak
        if cfg.idle_seconds > 0 and window.measures:  # idle must see the model as the work does
            eff.priming_s = loops.prime(backend, ps, encoder_only=info.architecture == "encoder-only",
                        max_new_tokens=min(cfg.max_new_tokens, 4), seed=cfg.seed)  # fmt: skip
            window.measure_idle(cfg.idle_seconds, idle_state(cfg), self.progress)
        backend.reset_peak_memory()
        try:
            for batch in cfg.batch_sizes:
                self._measure_batch(backend, window, ps, batch, rule, info.architecture, eff)
            tasks = self._tasks(window)
        finally:
            eff.peak_rss_bytes = mem.stop()
            eff.peak_rss_method = mem.method
            eff.peak_rss_includes = self._peak_includes()
            eff.peak_rss_lifetime_bytes = max(peak_rss_bytes(), lifetime_before)
            peak_dev, peak_method = backend.peak_memory()
            if peak_dev is not None:
                eff.peak_device_memory_bytes = peak_dev
                eff.peak_device_memory_method = peak_method
        for r in [*eff.generation, *eff.forward]:
            if r.cut_by_max_seconds:
                self.warnings.append(f"bs{r.batch_size}: {r.cut_by_max_seconds}")
        self.warnings.extend(window.problems)
        if eff.generation and bandwidth is not None:
            eff.roofline = self._roofline(bandwidth, info.weights_bytes, eff.generation)
        return ResultRecord(
            run_id=self.run_id,
            created_utc=utc_now_iso(),
            status="ok",
            config=cfg.model_dump(mode="json"),
            config_hash=cfg.config_hash(),
            manifest=manifest,
            model=model_info,
            efficiency=eff,
            energy=window.run_info(),
            effectiveness=tasks,
            warnings=self.warnings,
            duration_s=clock() - t_run,
        )

    def _check_threads(self, backend: Backend, manifest) -> None:
        """Keep the thread counts the backend reports (read back from its engine) and warn when
        one is not the run's count."""
        read_back = getattr(backend, "threads_in_use", None)
        manifest.backend_threads = dict(read_back()) if callable(read_back) else {}
        off = {k: v for k, v in manifest.backend_threads.items() if v != manifest.threads}
        if off:
            self.warnings.append(
                f"the {backend.name} backend runs with {', '.join(f'{k} = {v}' for k, v in off.items())}, "
                f"not the run's {manifest.threads} threads ({manifest.threads_source})"
            )

    def _measure_batch(self, backend: Backend, window: MeteredWindow, ps, batch: int, rule, architecture: str,
                       eff: Efficiency) -> None:  # fmt: skip
        """Measure one batch size into ``eff``. A batch that runs out of memory is recorded in
        ``eff.failed_batches`` with the allocator's reason (the sizes measured before it stay);
        larger sizes after it are skipped and recorded so."""
        cfg = self.cfg
        if self.oom_batch is not None and batch >= self.oom_batch:
            eff.failed_batches.append(FailedBatch(
                batch_size=batch, error=f"batch size {batch} skipped: batch size {self.oom_batch} already ran out of memory"))  # fmt: skip
            return
        reason = None
        try:
            if architecture == "encoder-only":
                eff.forward.append(loops.forward(backend, window, ps, batch, rule=rule, progress=self.progress))
            else:
                eff.generation.append(
                    loops.generation(backend, window, ps, batch, max_new_tokens=cfg.max_new_tokens,
                                     seed=cfg.seed, rule=rule, warnings=self.warnings, progress=self.progress)  # fmt: skip
                )
        except Exception as exc:
            if not limits.out_of_memory(exc):
                raise
            reason = limits.oom_reason(exc, batch, cfg.device)
        if reason is not None:  # outside the handler: the traceback's frames (and tensors) are gone
            limits.free_memory()
            eff.failed_batches.append(FailedBatch(batch_size=batch, error=reason))
            self.oom_batch = min(batch, self.oom_batch or batch)
            self.warnings.append(f"{reason}; the batch sizes measured before it are kept")
            self.progress(reason)

    def _check_fit(self, config: dict | None, *, backend: Backend | None = None,
                   architecture: str | None = None, ps: prompts.PromptSet | None = None) -> None:  # fmt: skip
        """Refuse (every problem at once) prompts + output longer than the model's context and
        batches whose KV cache alone exceeds the free memory: before the load from ``config``
        (config.json, when on disk); after it (``backend`` given) the context again, from the
        backend's ``context_length`` and the real prompts."""
        cfg = self.cfg
        synthetic = cfg.prompts in (None, "synthetic")
        if ps is None and not synthetic:
            return  # a file's or dataset's prompt lengths are known once the tokenizer is
        longest = max(ps.lengths) if ps is not None else cfg.prompt_tokens
        what = "--prompt-tokens" if synthetic else f"the longest prompt ({ps.source if ps else cfg.prompts})"
        config = config or {}
        arch = architecture or limits.config_architecture(config)
        context = getattr(backend, "context_length", None) if backend is not None else None
        source = f"the {getattr(backend, 'name', cfg.backend)} backend's context_length"
        if context is None and (found := limits.config_context(config)) is not None:
            context, source = found[0], f"{found[1]} in the model's config.json"
        errors = []
        if context is not None:
            errors.append(limits.context_problem(
                prompt_tokens=longest, max_new_tokens=cfg.max_new_tokens, architecture=arch, context=context,
                source=source, prompt_what=what, llamacpp=cfg.backend == "llamacpp"))  # fmt: skip
        if backend is None:  # after a load, free memory no longer means room for the KV cache (vLLM and
            # llama.cpp reserve theirs at load): the out-of-memory catch around each batch size remains
            errors.append(limits.memory_problem(
                config, architecture=arch, batch_sizes=cfg.batch_sizes, tokens=longest + cfg.max_new_tokens,
                dtype=cfg.dtype, backend=cfg.backend, device=cfg.device))  # fmt: skip
        raise_problems([Problem("", e.problem, e.fix) for e in errors if e is not None])

    def _bandwidth(self, manifest):
        """The memory bandwidth for the roofline (GPU: vendor spec; CPU: measured with its
        conditions and cached, re-measured when suspect); None when unknown."""
        from e3bench.bench import roofline

        idx = device_index(self.cfg.device)
        if idx is not None and manifest.gpus:
            gpu = manifest.gpus[idx] if idx < len(manifest.gpus) else manifest.gpus[0]  # torch's numbering
            bw = roofline.gpu_bandwidth(gpu.name)
            if bw is None:
                self.warnings.append(f"no bandwidth spec for GPU '{gpu.name}'; roofline skipped")
            return bw
        with self.progress.stage("memory bandwidth for the roofline (cached; re-measured when suspect)", unit="steps"):
            bw = roofline.cpu_bandwidth(models.cache_root(self.cfg.cache_dir), manifest.cpu_model)
        if bw.other_cpu_busy_pct is not None and bw.other_cpu_busy_pct >= roofline.BUSY_PCT:
            self.warnings.append(
                f"roofline bandwidth {bw.bytes_per_s / 1e9:.1f} GB/s was measured while other processes used "
                f"{bw.other_cpu_busy_pct:.0f}% of the CPUs: the bound may be too low"
            )
        return bw

    def _peak_includes(self) -> str:
        cfg = self.cfg
        parts = [f"warm-up and measured iterations of batch size(s) {', '.join(map(str, cfg.batch_sizes))}"]
        if cfg.tasks:
            parts.append(f"tasks {', '.join(cfg.tasks)}")
        return (
            "the loaded model plus " + " and ".join(parts) + " (from after load, once freed memory was returned "
            "to the OS; model load, GGUF conversion, the roofline bandwidth probe and other one-off work are "
            "only in peak_rss_lifetime_bytes)"
        )

    def _roofline(self, bw, weights_bytes: int, gens: list[BatchResult]):
        from e3bench.bench import roofline

        decode = {g.batch_size: g.decode_tokens_per_s.mean for g in gens if g.decode_tokens_per_s}
        rl = roofline.roofline(bw, weights_bytes, decode)
        for g in gens:  # a fraction above 1 is a measurement error: no fraction, a warning
            g.roofline_fraction = rl.fraction_of_bound.get(g.batch_size)
        if rl.measurement_error:
            self.warnings.append(f"roofline: {rl.measurement_error}")
        return rl


def idle_state(cfg: RunConfig) -> str:
    """What is resident while the run's idle baseline is metered (kept in the record)."""
    where = "on the GPU (CUDA context and weights resident)" if cfg.device.startswith("cuda") else "in memory"
    return f"model loaded {where} and primed by one untimed batch-1 request, before warm-up"


def run_one(cfg: RunConfig, *, backend: Backend | None = None, progress: Progress | None = None) -> ResultRecord:
    """Run one configuration end to end. User errors raise :class:`E3Error`."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return Runner(cfg, backend=backend, progress=progress).run()
