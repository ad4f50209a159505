"""The only orchestrator: ``run_one(RunConfig) -> ResultRecord``.

load → warm up → timed + metered windows (per batch size) → evaluate tasks on the SAME loaded
backend → record. Every timed window is bracketed by ``backend.synchronize()`` and read on
``timing.clock``; every metered window by ``meter.begin/end``.
"""

from __future__ import annotations

import datetime as dt
import os
import resource
import sys
from collections.abc import Callable
from typing import Any

from e3bench.bench import envinfo
from e3bench.backends import models
from e3bench.bench import prompts
from e3bench.backends.factory import make_backend
from e3bench.core.api import Backend, GenParams
from e3bench.config.run import RunConfig
from e3bench.core.errors import E3Error
from e3bench.results.schema import (
    BatchResult,
    Efficiency,
    EnergyRun,
    ForwardResult,
    ModelInfo,
    RawSamples,
    ResultRecord,
    TaskResult,
)
from e3bench.core.timing import TokenClock, clock, summarize

Progress = Callable[[str], None]


def _peak_rss_bytes() -> int:
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(ru if sys.platform == "darwin" else ru * 1024)  # Linux reports KiB


def _run_id(cfg: RunConfig) -> str:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"{stamp}-{cfg.config_hash()[:10]}"


class _Measure:
    """Warm-up (outside any meter window), then measure until ≥ min_iters AND ≥ min_seconds
    (capped by max_seconds)."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg

    def warmup(self, step: Callable[[int], None]) -> None:
        for i in range(self.cfg.warmup_iters):
            step(-1 - i)

    def measure(self, step: Callable[[int], None]) -> tuple[int, float]:
        n, t0 = 0, clock()
        while True:
            step(n)
            n += 1
            elapsed = clock() - t0
            if n >= self.cfg.min_iters and elapsed >= self.cfg.min_seconds:
                break
            if elapsed >= self.cfg.max_seconds and n >= 2:
                break
        return n, clock() - t0


class Runner:
    def __init__(self, cfg: RunConfig, *, backend: Backend | None = None, progress: Progress | None = None):
        self.cfg = cfg
        self.backend = backend
        self.progress = progress or (lambda _msg: None)
        self.warnings: list[str] = []
        self.meter = None
        self.cross = None  # optional cross-check meter over the same windows
        self.idle = None
        self.cross_idle = None
        self.last_cross_reading = None

    # ------------------------------------------------------------------ energy
    def _setup_energy(self) -> EnergyRun:
        from e3bench.energy import accounting as energy
        from e3bench.energy.meters import make_meter

        cfg = self.cfg
        meter, why = make_meter(cfg.meter, device=cfg.device, cpu_tdp_w=cfg.cpu_tdp_w)
        self.meter = meter
        run = EnergyRun(meter=meter.name, meter_choice_reason=why)
        if cfg.cross_check_meter:
            self.cross, _ = make_meter(cfg.cross_check_meter, device=cfg.device, cpu_tdp_w=cfg.cpu_tdp_w)
            run.cross_check_meter = self.cross.name
        if cfg.idle_seconds > 0 and cfg.meter != "none":
            self.progress(f"measuring idle power for {cfg.idle_seconds:g} s ({run.meter})")
            self.idle = energy.measure_idle_baseline(meter, cfg.idle_seconds)
            run.idle = self.idle.model_dump(mode="json")
            if self.cross is not None:
                self.cross_idle = energy.measure_idle_baseline(self.cross, cfg.idle_seconds)
                run.cross_check_idle = self.cross_idle.model_dump(mode="json")
        return run

    def _meters(self):
        return [m for m in (self.meter, self.cross) if m is not None]

    def _metered(self, window: str, fn: Callable[[], Any]) -> tuple[Any, Any]:
        """Run ``fn`` inside a synchronized meter window; return (result, reading).

        With a cross-check meter, both meters see the same window; its reading is kept in
        ``self.last_cross_reading``.
        """
        assert self.backend is not None
        self.backend.synchronize()
        for m in self._meters():
            m.begin(window)
        try:
            result = fn()
        finally:
            self.backend.synchronize()
            reading = self.meter.end(window)
            self.last_cross_reading = self.cross.end(window) if self.cross is not None else None
        return result, reading

    def _energy_summary(
        self, reading, *, input_tokens: int, output_tokens: int, requests: int, intervals=None, idle=None
    ):
        """Energy figures for one window; ``intervals`` = (start, first token, end) per request
        split the window's power trace into prefill and decode energy."""
        from e3bench.energy import accounting as energy

        phases = durations = None
        if intervals and reading.samples and reading.method != "missing":
            phases = energy.attribute_phases(reading.samples, intervals)
            durations = energy.phase_durations(intervals)
        summary = energy.summarize(
            reading,
            idle if idle is not None else self.idle,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            requests=requests,
            phases=phases,
            phase_durations_s=durations,
            region=self.cfg.region,
        )
        return summary.model_dump(mode="json")

    def _cross_summary(self, **counts):
        if self.last_cross_reading is None:
            return None
        out = self._energy_summary(self.last_cross_reading, idle=self.cross_idle, **counts)
        out["notes"] = list(out.get("notes", [])) + ["cross-check meter over the same window"]
        return out

    # ------------------------------------------------------------------- phases
    def _generation(self, ps: prompts.PromptSet, batch: int) -> BatchResult:
        b = self.backend
        assert b is not None
        params = GenParams(
            max_new_tokens=self.cfg.max_new_tokens,
            min_new_tokens=self.cfg.max_new_tokens,
            ignore_eos=True,
            seed=self.cfg.seed,
        )
        tc = TokenClock()
        raw = RawSamples()
        intervals: list[tuple[float, float, float]] = []
        in_tokens: list[int] = []

        def step(i: int) -> None:
            batch_ids = ps.batch(batch, offset=max(i, 0) * batch)
            b.synchronize()
            tc.start()
            gens = b.generate(batch_ids, params, on_token=tc)
            b.synchronize()
            t_end = clock()
            if i < 0:
                return  # warm-up
            n_out = min(len(g.token_ids) for g in gens) if gens else 0
            e2e = t_end - tc.t_start
            raw.e2e_ms.append(e2e * 1e3)
            raw.output_tokens.append(n_out)
            if tc.stamps:
                raw.ttft_ms.append(tc.ttft_s * 1e3)
                raw.itl_ms.append([g * 1e3 for g in tc.itl_s()])
                intervals.append((tc.t_start, tc.stamps[0], t_end))
            in_tokens.append(sum(len(x) for x in batch_ids))

        m = _Measure(self.cfg)
        m.warmup(step)  # energy and tokens below cover exactly the measured iterations
        (n, measured_s), reading = self._metered(f"generate-bs{batch}", lambda: m.measure(step))
        ttft_s = [t / 1e3 for t in raw.ttft_ms]
        e2e_s = [t / 1e3 for t in raw.e2e_ms]
        if len(ttft_s) != len(e2e_s):
            ttft_s = []
            self.warnings.append(f"bs{batch}: backend gave no per-token callbacks; TTFT/TPOT/ITL unavailable")
        tpot = [(e - t) / (o - 1) for e, t, o in zip(e2e_s, ttft_s, raw.output_tokens, strict=False) if o > 1]
        prefill = [
            n_in / t for n_in, t in zip(in_tokens, ttft_s, strict=False) if t > 0
        ]
        decode = [
            batch * (o - 1) / (e - t)
            for e, t, o in zip(e2e_s, ttft_s, raw.output_tokens, strict=False)
            if o > 1 and e > t
        ]
        total_out = batch * sum(raw.output_tokens)
        total_in = sum(in_tokens)
        result = BatchResult(
            batch_size=batch,
            iterations=n,
            measured_s=measured_s,
            input_tokens_per_request_mean=total_in / max(1, n * batch),
            output_tokens_per_request=sum(raw.output_tokens) / max(1, n),
            e2e_ms=summarize(raw.e2e_ms),
            ttft_ms=summarize(raw.ttft_ms),
            tpot_ms=summarize([x * 1e3 for x in tpot]),
            itl_ms=summarize([g for it in raw.itl_ms for g in it]),
            prefill_tokens_per_s=summarize(prefill),
            decode_tokens_per_s=summarize(decode),
            throughput_tokens_per_s=total_out / sum(e2e_s),
            requests_per_s=n * batch / sum(e2e_s),
            raw=raw,
        )
        counts = dict(input_tokens=total_in, output_tokens=total_out, requests=n * batch, intervals=intervals)
        result.energy = self._energy_summary(reading, **counts)
        result.energy_cross_check = self._cross_summary(**counts)
        return result

    def _forward(self, ps: prompts.PromptSet, batch: int) -> ForwardResult:
        b = self.backend
        assert b is not None
        lat: list[float] = []
        in_tokens: list[int] = []

        def step(i: int) -> None:
            ids = ps.batch(batch, offset=max(i, 0) * batch)
            b.synchronize()
            t0 = clock()
            b.forward(ids)
            b.synchronize()
            if i >= 0:
                lat.append((clock() - t0) * 1e3)
                in_tokens.append(sum(len(x) for x in ids))

        m = _Measure(self.cfg)
        m.warmup(step)
        (n, measured_s), reading = self._metered(f"forward-bs{batch}", lambda: m.measure(step))
        res = ForwardResult(
            batch_size=batch,
            iterations=n,
            measured_s=measured_s,
            input_tokens_per_request_mean=sum(in_tokens) / max(1, n * batch),
            latency_ms=summarize(lat),
            tokens_per_s=sum(in_tokens) / (sum(lat) / 1e3),
            raw_latency_ms=lat,
        )
        res.energy = self._energy_summary(reading, input_tokens=sum(in_tokens), output_tokens=0, requests=n * batch)
        return res

    def _tasks(self) -> list[TaskResult]:
        if not self.cfg.tasks:
            return []
        from e3bench.evals.engine import run_tasks

        return run_tasks(self, self.cfg)

    # ---------------------------------------------------------------------- run
    def run(self) -> ResultRecord:
        cfg = self.cfg
        t_run = clock()
        manifest = envinfo.collect(torch_threads=cfg.threads)
        busy = envinfo.busy_warning(manifest)
        if busy:
            self.warnings.append(busy)
        from e3bench.energy import carbon

        carbon.lookup(cfg.region)  # unknown region: fail before any work, not after
        from e3bench.evals.engine import check_tasks

        check_tasks(cfg)  # unknown task / missing extra: fail before the model loads
        spec = models.resolve(cfg.model)
        if self.backend is None:
            self.backend = make_backend(cfg.backend, cfg.backend_options, cache_dir=cfg.cache_dir, threads=cfg.threads)
        backend = self.backend
        reason = backend.capabilities.check(device=cfg.device, precision=cfg.dtype)
        if reason:
            raise E3Error(f"{backend.name} backend: {reason}", "choose a supported --dtype / --device")
        energy_run = self._setup_energy()

        self.progress(f"loading {spec.name} ({cfg.backend}, {cfg.dtype}, {cfg.device})")
        t0 = clock()
        info = backend.load(spec, cfg.dtype, cfg.device)
        backend.synchronize()
        load_s = clock() - t0
        if "torch" in sys.modules:
            import torch

            manifest.torch_threads = torch.get_num_threads()
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
            notes=list(info.notes),
        )
        ps = prompts.load_prompts(backend.encode, cfg.prompts, cfg.prompt_tokens)
        eff = Efficiency(
            load_time_s=load_s,
            load_note="backend.load() wall time incl. tokenizer; GGUF conversion is cached after the first run",
            prompt_source=ps.source,
            peak_rss_bytes=0,
        )
        backend.reset_peak_memory()
        try:
            for batch in cfg.batch_sizes:
                if info.architecture == "encoder-only":
                    self.progress(f"forward latency, batch {batch}")
                    eff.forward.append(self._forward(ps, batch))
                else:
                    self.progress(f"generation, batch {batch}: {cfg.max_new_tokens} tokens per request")
                    eff.generation.append(self._generation(ps, batch))
            if eff.generation:
                eff.roofline = self._roofline(info.weights_bytes, eff.generation, manifest)
            tasks = self._tasks()
        finally:
            eff.peak_rss_bytes = _peak_rss_bytes()
            peak_dev, peak_method = backend.peak_memory()
            if peak_dev is not None:
                eff.peak_device_memory_bytes = peak_dev
                eff.peak_device_memory_method = peak_method
            backend.close()
            for m in self._meters():
                m.close()
        return ResultRecord(
            run_id=_run_id(cfg),
            created_utc=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            status="ok",
            config=cfg.model_dump(mode="json"),
            config_hash=cfg.config_hash(),
            manifest=manifest,
            model=model_info,
            efficiency=eff,
            energy=energy_run,
            effectiveness=tasks,
            warnings=self.warnings,
            duration_s=clock() - t_run,
        )

    def _roofline(self, weights_bytes: int, gens: list[BatchResult], manifest):
        from e3bench.bench import roofline

        if self.cfg.device == "cuda" and manifest.gpus:
            bw = roofline.gpu_bandwidth(manifest.gpus[0].name)
            if bw is None:
                self.warnings.append(f"no bandwidth spec for GPU '{manifest.gpus[0].name}'; roofline skipped")
                return None
        else:
            self.progress("memory bandwidth for the roofline (measured once, then cached)")
            bw = roofline.cpu_bandwidth(models.cache_root(self.cfg.cache_dir), manifest.cpu_model)
        decode = {g.batch_size: g.decode_tokens_per_s.mean for g in gens if g.decode_tokens_per_s}
        rl = roofline.roofline(bw, weights_bytes, decode)
        for g in gens:
            g.roofline_fraction = rl.fraction_of_bound.get(g.batch_size)
        return rl


def run_one(cfg: RunConfig, *, backend: Backend | None = None, progress: Progress | None = None) -> ResultRecord:
    """Run one configuration end to end. User errors raise :class:`E3Error`."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return Runner(cfg, backend=backend, progress=progress).run()


def failed_record(cfg: RunConfig, error: str) -> ResultRecord:
    """A record for a run that could not complete (sweeps keep going)."""
    return ResultRecord(
        run_id=_run_id(cfg),
        created_utc=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        status="failed",
        error=error,
        config=cfg.model_dump(mode="json"),
        config_hash=cfg.config_hash(),
        manifest=envinfo.collect(sample_cpu=False),  # nothing ran: no contention to report
    )

