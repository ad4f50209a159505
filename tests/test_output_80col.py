"""Output that stays readable at 80 columns: notes and summaries wrap at spaces, never inside a
path (a path copied from the terminal must not pick up a line break), and the GGUF cache notes
name the cache folder once instead of repeating it in every entry."""

from __future__ import annotations

import io
import json
import shutil

LONG = "/root/.cache/e3bench/gguf-converted/SmolLM2-135M-Instruct.Q4_1-98362432-he012d3a0616a6851"


def _bars(width: int = 80):
    from e3bench.cli.progress import Bars

    out = io.StringIO()
    rep = Bars(out)
    rep.console.width = width
    return rep, out


def test_a_note_wraps_at_spaces_and_keeps_a_long_path_whole():
    rep, out = _bars()
    rep.note(f"GGUF SmolLM2-135M-Instruct.Q4_1.gguf dequantised to safetensors (reused cache: {LONG})")
    lines = out.getvalue().splitlines()
    assert "  " + LONG + ")" in lines  # whole, on a line of its own (the terminal wraps it softly)
    assert lines[0] == "· GGUF SmolLM2-135M-Instruct.Q4_1.gguf dequantised to safetensors (reused cache:"
    assert all(len(x) <= 80 for x in lines if LONG not in x)


def test_finetune_summary_wraps_at_spaces_with_an_indent():
    from types import SimpleNamespace as NS

    from e3bench.train.cli import format_finetune

    warning = ("the local data directory has only the task's public evaluation split; it was split into disjoint "
               f"fine-tuning and held-out parts, so accuracies are not comparable; see {LONG}")  # fmt: skip
    r = NS(target=None, train_energy=None, model={"architecture": "decoder-only", "name": "m"},
           data={"task": "boolq", "majority_class_accuracy": 0.625}, method={"fine_tuning": "lora", "mode": "labels"},
           status="ok", trainable_parameters=1, total_parameters=2, trainable_fraction=0.5, steps=1, samples_seen=2,
           tokens_seen=768, train_time_s=73.6, train_tokens_per_s=10.4, train_samples_per_s=0.16,
           final_accuracy=0.25, best_accuracy=0.375, memory=None, warnings=[warning], evals=[], vs_majority=None)  # fmt: skip
    lines = format_finetune(r, width=80).splitlines()
    assert "  1 step, 2 samples, 768 tokens in 73.6 s: 10 tokens/s, 0.16 samples/s" in lines  # not "1 steps"
    assert all(len(x) <= 80 for x in lines if LONG not in x), lines
    start = lines.index(next(x for x in lines if x.startswith("  warning: the local data")))
    assert all(x.startswith("    ") for x in lines[start + 1 :])  # continuation indented under the text
    assert " ".join(x.strip() for x in lines[start:]) == f"warning: {warning}"  # every word, in order
    assert LONG in lines[-1]


def test_stale_gguf_cache_entries_name_the_folder_once(tiny_models, tmp_path):
    from e3bench.backends.models import gguf_cache_dir, load_converted_gguf
    from e3bench.core.api import ModelSpec

    src = tmp_path / "gguf"
    src.mkdir()
    (src / "m.Q4_1.gguf").write_bytes(b"GGUF" + b"\0" * 60)
    spec = ModelSpec(name="m", source="gguf", path=str(src), gguf_file="m.Q4_1.gguf")
    target = gguf_cache_dir(spec, str(tmp_path / "cache"))
    shutil.copytree(tiny_models["decoder"], target)  # a converted copy already there
    (target / "e3bench-converted.json").write_text(json.dumps({"source_gguf": "x"}))
    stale = [target.parent / f"m.Q4_1-64-{t}" for t in (1796027876, 1796033487)]  # an older e3bench's keys
    for d in stale:
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"\0" * 1000)
    path, cached, notes = load_converted_gguf(spec, str(tmp_path / "cache"))
    assert path == target and cached
    (note,) = notes
    assert note.count(str(target.parent)) == 1  # the folder once, then the entries' names
    assert note.endswith(f"delete them to free 0 MB: in {target.parent}: m.Q4_1-64-1796027876, m.Q4_1-64-1796033487")


# --------------------------------------------------------------------------- progress at 80 columns
IDLE = ("measuring idle power for 3 s (estimate; model loaded in memory and primed by one untimed batch-1 request, "
        "before warm-up)")  # fmt: skip


def _shown(rep) -> str:
    """The progress display as a terminal of the reporter's width shows it (no colours)."""
    from rich.console import Console

    buf = io.StringIO()
    Console(file=buf, width=rep.console.width, force_terminal=False).print(rep.progress.make_tasks_table(rep.progress.tasks))
    return buf.getvalue()


def _words(text: str) -> str:
    return " ".join(text.split())


def test_stage_labels_and_the_sweeps_configuration_are_whole_at_80_columns():
    rep, out = _bars()
    sweep = rep.stage("sweep tiny-sweep", total=2, unit="runs")
    run = rep.stage("run tiny-llama pytorch bf16 cpu (batch 1,4; prompt 128 → 32 tokens)", unit="steps")
    run.update(detail="generation, batch 1: 32 tokens per request")
    idle = rep.stage(IDLE)
    gen = rep.stage("generation, batch 1: 32 tokens per request", total=5, unit="iterations")
    gen.clock = lambda: gen.started + 40
    gen.advance()
    shown = _shown(rep)
    rep.progress.stop()
    lines = shown.splitlines()
    assert "…" not in shown and all(len(x.rstrip()) <= 80 for x in lines)
    for label in (sweep.label, run.label, run.detail, IDLE, gen.label):
        assert label in _words(shown), (label, shown)  # whole (wrapped at spaces at most)
    assert "1/5 iterations  40.0 s/iteration  ETA 2:40" in shown
    idle.clock = lambda: idle.started + 3
    for st in (gen, idle, run, sweep):
        st.close()
    done = out.getvalue()
    assert "…" not in done and all(len(x) <= 80 for x in done.splitlines())
    assert "· generation, batch 1: 32 tokens per request:\n  done, 1/5 iterations in 40 s (40.0 s/iteration)" in done
    assert _words(f"· {IDLE}: done, 3 s") in _words(done)


def test_results_printed_above_the_bars_are_not_erased_when_they_come_back(monkeypatch):
    """A sweep prints "[1/2] ok ..." above its bars (Bars.above); rich then redrew the bars by
    first moving up and erasing as many lines as the bars had: the result line was wiped."""
    from rich.console import Console

    from e3bench.cli import progress

    monkeypatch.setattr(progress, "_isatty", lambda stream: True)
    out = io.StringIO()
    rep = progress.Bars(out)
    rep.console = Console(file=out, width=80, force_terminal=True, highlight=False)
    rep.progress = progress._progress(rep.console)
    sweep = rep.stage("sweep s", total=2, unit="runs")
    run = rep.stage("run a", unit="steps")
    rep.progress.refresh()
    rep.above(lambda: print("[1/2] ok a", file=out))
    rep.progress.refresh()
    after = out.getvalue().split("[1/2] ok a\n", 1)[1]
    first_text = min(after.index(c) for c in "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏" if c in after)
    assert "\x1b[1A" not in after[:first_text]  # no cursor-up over the result line before the bars
    for st in (run, sweep):
        st.close()
