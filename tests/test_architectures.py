"""The architecture comparison: the sweep file's ``architectures:`` block expands to the right
runs (inference with few-shot tasks over the fine-tuning's held-out items, one fine-tuning per
model and task, same settings), the report section's values come from the records it names, and
random-weights fixtures are labelled as such; one small end-to-end run on the tiny fixtures."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from e3bench.config.validate import ConfigError
from e3bench.core.timing import summarize
from e3bench.energy.accounting import EnergySummary
from e3bench.results.architectures import FIXTURE_MARKER, ArchitecturesRecord, ArchModel, ArchTask
from e3bench.results.schema import Efficiency, ForwardResult, ModelInfo
from e3bench.sweep import architectures as arch
from e3bench.sweep.plan import expand
from fakes_report import MANIFEST, batch, record

_YAML = """name: arch
output_dir: {out}
base:
  backend: pytorch
  prompt_tokens: 32
  max_new_tokens: 4
  batch_sizes: [1]
  min_iters: 2
  min_seconds: 0.1
  idle_seconds: 0
  meter: estimate
  seed: 3
grid:
  model: [{enc}, {encdec}, {dec}]
architectures:
  tasks: {{boolq: {{target_accuracy: 0.7}}, copa: {{target_accuracy: 0.6}}}}
  fewshot: 2
  finetune: {{mode: lora, max_steps: {steps}, batch_size: 4, eval_every: {every}, max_eval_samples: 12, max_train_samples: 24, max_seq_len: 64}}
"""


def _sweep_file(tmp_path: Path, tiny_models, *, steps: int = 6, every: int = 3, extra: str = "") -> Path:
    p = tmp_path / "arch.yaml"
    p.write_text(_YAML.format(out=tmp_path / "out", enc=tiny_models["encoder"], encdec=tiny_models["encoder-decoder"],
                              dec=tiny_models["decoder"], steps=steps, every=every) + extra)  # fmt: skip
    return p


# ------------------------------------------------------------------------------------ plan
def test_plan_expands_to_inference_with_fewshot_items_and_one_finetune_per_model_and_task(tmp_path, tiny_models):
    from e3bench.train.finetune import load_task_data

    path = _sweep_file(tmp_path, tiny_models)
    spec = arch.read(path)
    plan = expand(path, extra=spec.grid_extra)
    boolq = str(tmp_path / "out" / "arch" / "items" / "boolq-2shot.jsonl")
    copa = str(tmp_path / "out" / "arch" / "items" / "copa-2shot.jsonl")
    assert [c.model for c in plan.runs] == [str(tiny_models[k]) for k in ("encoder", "encoder-decoder", "decoder")]
    for c in plan.runs:  # same input length, same seed for every architecture
        assert c.prompt_tokens == 32 and c.seed == 3 and c.limit is None
    # the generators get the few-shot tasks; the encoder (config.json: BERT) none, it cannot score text
    # (plain acc: the SuperGLUE tasks' metric, the one the fine-tuned accuracy is compared with)
    assert [c.tasks for c in plan.runs] == [(), *[(f"jsonl_mc:path={boolq},label=boolq_2shot,acc_norm=false",
                                                   f"jsonl_mc:path={copa},label=copa_2shot,acc_norm=false")] * 2]  # fmt: skip
    tunes = arch.finetune_configs(spec, arch.models_of(plan.runs))
    assert [(Path(t.model).name, t.task) for t in tunes] == [
        ("tiny-bert", "boolq"), ("tiny-bert", "copa"), ("tiny-t5", "boolq"), ("tiny-t5", "copa"),
        ("tiny-llama", "boolq"), ("tiny-llama", "copa")]  # fmt: skip
    assert {t.target_accuracy for t in tunes if t.task == "boolq"} == {0.7}
    assert {t.target_accuracy for t in tunes if t.task == "copa"} == {0.6}
    # the same budget for all; meter and seed from base; records into the sweep folder
    same = {(t.mode, t.max_steps, t.batch_size, t.max_eval_samples, t.seed, t.meter, t.idle_seconds, t.output_dir) for t in tunes}
    assert same == {("lora", 6, 4, 12, 3, "estimate", 0, str(tmp_path / "out" / "arch"))}
    # the few-shot items are the fine-tuning's held-out items, after 2 solved training items
    data = load_task_data(tunes[0])
    rows = [json.loads(line) for line in Path(boolq).read_text().splitlines()]
    assert len(rows) == len(data.eval) == 12
    shots = "".join(f"{r['query']}\nAnswer: {r['choices'][r['gold']]}\n\n" for r in data.train[:2])
    assert rows[0]["query"] == shots + data.eval[0]["query"] + "\nAnswer:"
    assert [(r["choices"], r["gold"]) for r in rows] == [(e["choices"], e["gold"]) for e in data.eval]
    assert spec.tasks[0].n_eval == 12 and spec.tasks[0].majority_class_accuracy == pytest.approx(
        max(sum(r["gold"] == g for r in rows) for g in (0, 1)) / 12)


def test_a_plain_sweep_file_is_no_architecture_comparison(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("grid:\n  dtype: [fp32]\n")
    assert arch.read(p) is None


@pytest.mark.parametrize(("extra_base", "block", "expected"), [
    ("  tasks: [copa]\n", "  tasks: [copa]\n", "base.tasks is set by the comparison"),
    ("", "  tasks: [copa]\n  fewshot: -1\n", "fewshot must be a whole number 0..8"),
    ("", "  tasks: [copa]\n  finetune: {model: x}\n", "finetune.model is set by the comparison"),
    ("", "  tasks: [copa]\n  bogus: 1\n", "unknown key 'bogus' in architectures"),
    ("", "  tasks: [copa]\n", "an architecture comparison needs its models under grid.model"),
    ("", "  tasks: [copa]\n  finetune: {max_steps: 0}\n", "max_steps: Input should be greater than or equal to 1"),
])  # fmt: skip
def test_bad_architectures_block_names_the_problem_before_anything_runs(tmp_path, extra_base, block, expected):
    p = tmp_path / "a.yaml"
    grid = "  dtype: [fp32]\n" if "grid.model" in expected else "  model: [x]\n"
    p.write_text(f"base:\n  prompt_tokens: 32\n{extra_base}grid:\n{grid}architectures:\n{block}")
    with pytest.raises(ConfigError) as err:
        arch.read(p, output_dir=str(tmp_path / "out"))
    assert expected in str(err.value)
    assert not (tmp_path / "out").exists()  # nothing written


# -------------------------------------------------------------------------------- fixtures
def test_fixture_is_known_from_the_marker_or_the_sweep_file(tmp_path, tiny_models):
    assert (tiny_models["encoder-decoder"] / FIXTURE_MARKER).is_file()  # the builder marks its models
    assert "random weights" in arch.fixture_note(str(tiny_models["encoder-decoder"]), [])
    plain = tmp_path / "real"
    plain.mkdir()
    assert arch.fixture_note(str(plain), []) is None
    assert arch.fixture_note("smollm2-135m", []) is None
    assert "declared" in arch.fixture_note("my-model", ["my-model"])


# ------------------------------------------------------------------------- section values
def _forward(latency: float, j_per_request: float) -> Efficiency:
    e = EnergySummary(window="forward-bs1", method="estimated", sensor="tdp-model", basis="net",
                      energy_per_request_j=j_per_request)  # fmt: skip
    f = ForwardResult(batch_size=1, iterations=3, measured_s=1.0, input_tokens_per_request_mean=32,
                      latency_ms=summarize([latency] * 3), tokens_per_s=100.0, energy=e, raw_latency_ms=[latency] * 3)  # fmt: skip
    return Efficiency(load_time_s=1.0, load_note="", prompt_source="synthetic", forward=[f], peak_rss_bytes=1)


def _finetune(config_hash: str, model: str, arch_name: str, evals: list[tuple[int, float, float]], *, reached_at: int | None):
    """A fine-tuning record; ``evals``: (step, accuracy, cumulative training J), 40 items each,
    each evaluation 2 s and 4 J; 10 s of training per 10 steps."""
    from e3bench.train.finetune.record import margin_over_majority, target_result
    from e3bench.train.finetune.state import TrainerState
    from e3bench.train.records import EvalPoint, FinetuneRecord

    pts = [EvalPoint(step=s, samples_seen=8 * s, tokens_seen=100 * s, train_time_s=float(s), wall_time_s=float(s),
                     train_energy_j=j, train_energy_gross_j=j, accuracy=a, eval_loss=0.5, n_items=40, eval_s=2.0,
                     eval_energy_j=4.0) for s, a, j in evals]  # fmt: skip
    st = TrainerState(step=evals[-1][0], samples=8 * evals[-1][0], tokens=100 * evals[-1][0], train_time_s=float(evals[-1][0]))
    target = target_result(0.7, pts, st)
    assert target.reached == (reached_at is not None)
    return FinetuneRecord(run_id=f"ft-{model}", created_utc="2026-12-01T00:00:00Z", status="ok", config={"model": model, "task": "boolq"},
                          config_hash=config_hash, manifest=MANIFEST, model={"name": model, "architecture": arch_name},
                          method={}, data={}, trainable_parameters=10, total_parameters=1000, trainable_fraction=0.01,
                          steps=st.step, samples_seen=st.samples, tokens_seen=st.tokens, train_time_s=st.train_time_s,
                          train_tokens_per_s=1.0, train_samples_per_s=1.0, load_time_s=1.0, evals=pts,
                          best_accuracy=max(a for _, a, _ in evals), target=target,
                          vs_majority=margin_over_majority(pts[-1], 0.625))  # fmt: skip


def _comparison() -> tuple[ArchitecturesRecord, dict, dict]:
    gen = record(batches=[batch(1, [50.0] * 3, 0.02, ttft=[80.0] * 3)], task=("boolq_2shot", "acc", 0.6, 0.05, 40),
                 prompt_tokens=32)  # fmt: skip
    gen.effectiveness[0].energy = EnergySummary(window="task", method="estimated", sensor="tdp-model", basis="net",
                                                net_energy_j=20.0)  # fmt: skip
    g = gen.efficiency.generation[0]
    g.energy = g.energy.model_copy(update={"energy_per_request_j": 1.5})
    enc = gen.model_copy(update={
        "config_hash": "enc0", "efficiency": _forward(12.0, 0.25), "effectiveness": [],
        "model": ModelInfo(name="minilm-l6", source="alias", path="p", architecture="encoder-only", model_type="bert",
                           parameters=22_700_000, weights_bytes=1, dtype="fp32", device="cpu")})  # fmt: skip
    gen = gen.model_copy(update={"model": gen.model.model_copy(update={"architecture": "decoder-only"})})
    comp = ArchitecturesRecord(
        sweep="arch", created_utc="2026-12-01T00:00:00Z", prompt_tokens=32, fewshot=2,
        tasks=[ArchTask(task="boolq", fewshot_label="boolq_2shot", items_file="i", items_sha256="0", n_eval=40,
                        n_train=100, majority_class_accuracy=0.625, target_accuracy=0.7)],
        models=[ArchModel(model="minilm-l6", inference_hash="enc0", finetune_hashes={"boolq": "ftenc"}),
                ArchModel(model="/x/tiny-llama", fixture=True, fixture_note="random weights: marker",
                          inference_hash=gen.config_hash, finetune_hashes={"boolq": "ftgen"})])  # fmt: skip
    tunes = {"ftenc": _finetune("ftenc", "minilm-l6", "encoder-only", [(0, 0.6, 0.0), (10, 0.75, 50.0), (20, 0.8, 100.0)], reached_at=10),
             "ftgen": _finetune("ftgen", "/x/tiny-llama", "decoder-only", [(0, 0.5, 0.0), (20, 0.65, 400.0)], reached_at=None)}  # fmt: skip
    return comp, {"enc0": enc, gen.config_hash: gen}, tunes


def test_section_values_come_from_the_records_the_comparison_names():
    from e3bench.report.architecture import rows_of

    comp, runs, tunes = _comparison()
    enc, gen = rows_of(comp, runs, tunes)
    # encoder: forward latency and energy per sequence; fine-tuned classifier per item; target at step 10
    assert (enc.label, enc.fixture, enc.architecture, enc.params) == ("minilm-l6", False, "encoder-only", 22_700_000)
    assert (enc.latency_is, enc.latency_ms, enc.tpot_ms, enc.j_per_request) == ("forward, bs1", 12.0, None, 0.25)
    assert (enc.ms_per_item, enc.j_per_item) == (50.0, 0.1)  # 2 s and 4 J over 40 items
    assert (enc.s_to_target, enc.j_to_target, enc.samples_to_target, enc.train_j) == (10.0, 50.0, 80, 100.0)
    assert enc.finetuned.estimate == 0.8 and enc.finetuned.low == pytest.approx(0.6524, abs=1e-4)  # Wilson, 32/40
    assert enc.fewshot is None and enc.acc_per_kj == pytest.approx(8.0)  # 0.8 / 0.1 kJ
    # decoder: TTFT and TPOT, few-shot score with its energy per item, target never reached
    assert (gen.label, gen.fixture, gen.architecture) == ("tiny-llama (fixture)", True, "decoder-only")
    assert (gen.latency_is, gen.latency_ms, gen.tpot_ms, gen.j_per_request) == ("TTFT, bs1", 80.0, 20.0, 1.5)
    assert gen.fewshot.estimate == 0.6 and gen.fewshot_j_per_item == 0.5  # 20 J over 40 items
    assert (gen.s_to_target, gen.j_to_target, gen.train_j) == (None, None, 400.0)
    assert gen.finetuned.estimate == 0.65 and gen.acc_per_kj is None  # a fixture: chance accuracy per toy joule
    cells = gen.cells()
    assert cells["weights"] == "random fixture" and cells["fine-tuned acc [95% CI]"].startswith("0.65 [")
    assert enc.cells()["weights"] == "pretrained" and enc.cells()["few-shot acc [95% CI]"] is None
    # did it learn: the last evaluation (not the best) over the majority class, Wilson interval shifted
    assert enc.vs_majority.estimate == pytest.approx(0.8 - 0.625) and enc.vs_majority.low == pytest.approx(0.6524 - 0.625, abs=1e-4)
    assert enc.cells()["final − majority [95% CI]"] == "+0.175 [+0.027, +0.270]"
    assert cells["final − majority [95% CI]"].startswith("+0.025 [-")  # 0.65 of 40: not clearly above


def test_section_labels_fixtures_and_draws_three_figures(tmp_path):
    from e3bench.report.architecture import figures, load

    comp, runs, tunes = _comparison()
    others = {"architectures": [(tmp_path / "architectures.json", comp.model_dump(mode="json"))],
              "finetune": [(tmp_path / f"{k}.json", t.model_dump(mode="json")) for k, t in tunes.items()]}  # fmt: skip
    sec = load([(tmp_path / "r.json", r) for r in runs.values()], others)
    assert [r.label for r in sec.rows] == ["minilm-l6", "tiny-llama (fixture)"]
    assert sec.fixtures == ["tiny-llama (fixture) is a fixture (random weights: marker): its numbers measure the code "
                            "path and the cost of its size, not what the architecture can learn."]  # fmt: skip
    lines = sec.lines()
    assert lines[0].startswith("- **Architectures, boolq:** accuracy [95 % CI]: minilm-l6 (encoder-only) fine-tuned 0.8 [")
    assert lines[-1].startswith("- **Fixture:** tiny-llama (fixture) is a fixture")
    figs = {f.name: f for f in figures(sec.rows)}
    assert set(figs) == {"arch_accuracy_vs_training_energy", "arch_accuracy_vs_inference_energy", "arch_three_es"}
    three = figs["arch_three_es"].panels
    assert [m.y.estimate for m in three[0].marks] == [1.0, pytest.approx(12 / 80)]  # latency: best ÷ value
    assert [m.y.estimate for m in three[2].marks] == [1.0, pytest.approx(0.65 / 0.8)]  # accuracy: value ÷ best
    train = figs["arch_accuracy_vs_training_energy"].panels[0].marks
    assert [(m.label, m.x.estimate, m.y.estimate) for m in train] == [("minilm-l6", 100.0, 0.8), ("tiny-llama (fixture)", 400.0, 0.65)]
    assert not load([], {}).rows  # no comparison in the folder: no section


# ------------------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_architectures_sweep_end_to_end_on_tiny_fixtures(tmp_path, tiny_models):
    from conftest import run_cli

    path = _sweep_file(tmp_path, tiny_models, steps=2, every=2)
    path.write_text(path.read_text().replace("{boolq: {target_accuracy: 0.7}, copa: {target_accuracy: 0.6}}", "[copa]"))
    r = run_cli("sweep", str(path))
    assert r.returncode == 0, r.stderr[-2000:]
    root = tmp_path / "out" / "arch"
    assert "done: 6 ok, 0 failed" in r.stdout  # 3 inference runs + 3 fine-tunings
    comp = ArchitecturesRecord.model_validate_json((root / "architectures.json").read_text())
    assert [m.fixture for m in comp.models] == [True, True, True]
    again = run_cli("sweep", str(path))  # resumable: nothing runs twice
    assert "3 runs (3 already complete)" in again.stdout and again.stdout.count("already complete") == 4
    r = run_cli("report", str(root))
    assert r.returncode == 0, r.stderr[-2000:]
    with open(root / "report" / "architectures.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["model"], r["weights"], r["architecture"], r["task"]) for r in rows] == [
        ("tiny-bert (fixture)", "random fixture", "encoder-only", "copa"),
        ("tiny-t5 (fixture)", "random fixture", "encoder-decoder", "copa"),
        ("tiny-llama (fixture)", "random fixture", "decoder-only", "copa")]  # fmt: skip
    fts = {json.loads(p.read_text())["config_hash"]: json.loads(p.read_text()) for p in (root / "finetune").glob("*.json")}
    ft = fts[comp.models[2].finetune_hashes["copa"]]
    assert rows[2]["fine-tuned acc [95% CI]"].startswith(f"{ft['best_accuracy']:.3g} [")
    m = ft["vs_majority"]
    from e3bench.report.tables import csv_safe  # a signed cell starts with + or -: formula-safe in the CSV

    assert rows[2]["final − majority [95% CI]"] == csv_safe(f"{m['margin']:+.3f} [{m['ci95_low']:+.3f}, {m['ci95_high']:+.3f}]")
    assert float(rows[2]["fine-tune J (budget)"]) == pytest.approx(ft["target"]["budget_energy_j"])
    assert rows[0]["latency is"] == "forward, bs1" and rows[0]["few-shot acc [95% CI]"] == ""
    page = (root / "report" / "report.html").read_text()
    assert "Architecture comparison" in page and "fig-arch_three_es" in page and "(fixture)" in page
    assert (root / "report" / "plots" / "arch_accuracy_vs_training_energy.pdf").is_file()
    # the fixtures are labelled in every section, not only the comparison's table
    with open(root / "report" / "finetune.csv", newline="") as fh:
        assert sorted(r["model"].rsplit(" ", 1)[-1] for r in csv.DictReader(fh)) == ["(fixture)"] * 3
    with open(root / "report" / "pivot.csv", newline="") as fh:
        labels = [r["configuration"] for r in csv.DictReader(fh)]
    assert len(labels) == 2 and all(" (fixture) " in lb for lb in labels), labels  # the generators (pivot: generation)
    # the generators' few-shot scores are plain acc, the metric the fine-tuned accuracy is compared with
    recs = [json.loads(p.read_text()) for p in root.glob("*/runs/*.json")] or [
        json.loads(p.read_text()) for p in root.rglob("*.json") if '"effectiveness"' in p.read_text()]
    few = [t for r in recs for t in r.get("effectiveness") or [] if t["task"] == "copa_1shot" or "shot" in t["task"]]
    assert few and all(set(t["metrics"]) == {"acc"} for t in few), [t["metrics"] for t in few]


def test_a_fixture_outside_any_comparison_is_labelled_by_its_marker(tmp_path):
    """A fine-tuning run or a run of a random-weights model (its folder holds the marker) was
    labelled '(fixture)' only when an architecture comparison named it; alone it read as a real model.
    The summary line's training energy of 0.127 J read '0 J fine-tuning'."""
    from types import SimpleNamespace

    from e3bench.report.architecture import Row, Section, mark_fixtures

    fx = tmp_path / "tiny"
    fx.mkdir()
    (fx / FIXTURE_MARKER).write_text("{}")
    real = tmp_path / "real"
    real.mkdir()
    cfg = SimpleNamespace(config_hash="h1", label="tiny pytorch fp32 cpu", model="tiny", config={"model": str(fx)})
    other = SimpleNamespace(config_hash="h2", label="real pytorch fp32 cpu", model="real", config={"model": str(real)})
    rows = [{"config_hash": "h3", "model": "tiny", "model_path": str(fx)}, {"config_hash": "h4", "model": "x"}]
    mark_fixtures(Section(), [cfg, other], rows)
    assert cfg.label == "tiny (fixture) pytorch fp32 cpu" and other.label == "real pytorch fp32 cpu"
    assert [r["model"] for r in rows] == ["tiny (fixture)", "x"]
    sec = Section(rows=[Row(label="m", fixture=False, architecture="decoder-only", params=1, task="copa", train_j=0.127)])
    assert "0.127 J fine-tuning" in sec.lines()[0]


def test_the_summary_does_not_rank_fixtures_beside_real_models():
    """A random-weights fixture (tiny, fast, chance accuracy) won 'Fastest decode', 'Least energy
    per token' and the Pareto front of the architecture sweep beside SmolLM2: it is named as not
    ranked instead, and its accuracy per kJ is not given; among fixtures only, they are ranked."""
    from fakes_report import summary

    from e3bench.core.timing import summarize
    from e3bench.report.compare import BatchFigures, TaskScore
    from e3bench.report.sections import executive_lines

    def cfg(name: str, tok_s: float, ept: float, acc: float, fixture: bool):
        b = BatchFigures(1, 1, "iterations", summarize([tok_s, tok_s * 1.01]), None, None, None,
                         summarize([ept]), "estimated")  # fmt: skip
        c = summary("fp32", tasks={"copa": TaskScore("copa", "acc", acc, 0.05, 100)}, batches={1: b})
        c.label, c.config_hash, c.fixture = name, name, fixture
        return c

    real, toy = cfg("smollm2", 7.0, 0.05, 0.6, False), cfg("tiny-t5 (fixture)", 140.0, 0.003, 0.55, True)
    text = "\n".join(executive_lines([real, toy], []))
    assert "**Not ranked:** tiny-t5 (fixture)" in text
    assert "Fastest decode:** batch 1: smollm2" in text and "Least energy per token:** batch 1: smollm2" in text
    assert "tiny-t5" not in text.split("Not ranked")[1].split("\n", 1)[1]  # named once, ranked nowhere
    only_toys = "\n".join(executive_lines([toy], []))
    assert "Not ranked" not in only_toys and "Fastest decode:** batch 1: tiny-t5 (fixture)" in only_toys
