"""e3bench finetune: LoRA / full fine-tuning for the three architectures on tiny local models."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from e3bench.core.errors import E3Error


@pytest.fixture(scope="module")
def mc_files(tmp_path_factory) -> tuple[Path, Path, Path]:
    """BoolQ-like (fixed labels) train/eval files and a COPA-like (per-item choices) file.
    The label is learnable: it is 'yes' exactly when the query contains the word 'blue'."""
    rng = random.Random(0)
    d = tmp_path_factory.mktemp("mc")
    words = ["red", "green", "blue", "small", "large", "fox", "dog", "jumps", "over", "the", "lazy", "energy", "joules", "watts"]

    def item():
        q = " ".join(rng.choice(words) for _ in range(8))
        return {"query": f"Passage: {q}\nQuestion: is it blue?", "choices": ["no", "yes"], "gold": int("blue" in q.split())}

    train, ev = d / "train.jsonl", d / "eval.jsonl"
    train.write_text("\n".join(json.dumps(item()) for _ in range(64)))
    ev.write_text("\n".join(json.dumps(item()) for _ in range(24)))
    copa = d / "copa.jsonl"
    rows = []
    for _ in range(40):
        a, b = rng.sample(words, 2)
        rows.append({"query": f"The {a} fox, therefore", "choices": [f"it was {a}", f"it was {b}"], "gold": 0})
    copa.write_text("\n".join(json.dumps(r) for r in rows))
    return train, ev, copa


def _cfg(model: Path, out: Path, **kw):
    from e3bench.train.finetune import FinetuneConfig

    base = dict(
        model=str(model), max_steps=4, eval_every=2, batch_size=4, max_eval_samples=16, lr=3e-3,
        meter="estimate", idle_seconds=0.1, output_dir=str(out), max_seq_len=64,
    )  # fmt: skip
    base.update(kw)
    return FinetuneConfig(**base)


@pytest.mark.parametrize("arch", ["encoder", "encoder-decoder", "decoder"])
def test_lora_all_three_architectures(tiny_models, mc_files, tmp_path, arch):
    from e3bench.train.finetune import run_finetune
    from e3bench.train.records import FinetuneRecord

    train, ev, _ = mc_files
    msgs: list[str] = []
    rec, path = run_finetune(
        _cfg(tiny_models[arch], tmp_path, train_file=str(train), eval_file=str(ev), target_accuracy=0.99),
        progress=msgs.append,
    )
    assert rec.status == "ok" and rec.steps == 4 and rec.samples_seen == 16
    assert rec.model["architecture"] == {"encoder": "encoder-only", "decoder": "decoder-only"}.get(arch, arch)
    assert 0 < rec.trainable_parameters < rec.total_parameters
    assert rec.tokens_seen > 0 and rec.train_tokens_per_s > 0 and rec.train_samples_per_s > 0
    assert [e.step for e in rec.evals] == [0, 2, 4]
    assert all(0 <= e.accuracy <= 1 and e.n_items == 16 for e in rec.evals)
    assert rec.evals[-1].train_time_s == pytest.approx(rec.train_time_s)
    assert rec.evals[2].tokens_seen > rec.evals[1].tokens_seen > 0
    # energy: estimated, labelled, net of idle, cumulative at each evaluation
    e = rec.train_energy
    assert e.window == "train" and e.method == "estimated" and e.sensor == "tdp-model" and e.basis == "net"
    assert e.gross_energy_j > e.net_energy_j > 0 and e.duration_s >= 0.99 * rec.train_time_s
    assert e.ept_total_j_per_token == pytest.approx(e.net_energy_j / rec.tokens_seen)
    assert e.mean_power_w == pytest.approx(e.gross_energy_j / e.duration_s)
    assert rec.energy.meter == "estimate" and rec.energy.idle.power_w > 0
    # gross training energy grows with every training step; net (idle-subtracted) never shrinks
    ev = rec.evals
    assert ev[0].train_energy_gross_j == 0 < ev[1].train_energy_gross_j < ev[2].train_energy_gross_j
    assert ev[0].train_energy_j == 0 <= ev[1].train_energy_j <= ev[2].train_energy_j
    assert rec.memory.peak_rss_bytes > 0
    # a 0.99 target on 16 items is out of reach in 4 steps: best and the budget spent are reported
    t = rec.target
    assert not t.reached and t.reached_at_step is None
    assert t.time_to_target_s is None and t.energy_to_target_j is None and t.samples_to_target is None
    assert t.budget_steps == 4 and t.budget_samples == 16 and t.budget_train_time_s == pytest.approx(rec.train_time_s)
    assert t.best_accuracy == max(e.accuracy for e in rec.evals) and t.budget_energy_j == rec.evals[-1].train_energy_j
    assert "never reached" in t.note and f"{t.best_accuracy:.3f}" in t.note
    # the JSON record is under <output_dir>/finetune and reads back
    assert path.parent == tmp_path / "finetune"
    assert FinetuneRecord.model_validate_json(path.read_text()).run_id == rec.run_id
    # a schema-1 record (EnergyFigures, flat meter fields) still reads, with the same figures
    v1 = json.loads(path.read_text())
    v1["schema_version"] = 1
    run = v1.pop("energy")
    v1.update(energy_meter=run["meter"], energy_meter_reason=run["meter_choice_reason"], idle=run["idle"])
    for k in ("train_energy", "eval_energy"):
        v1[k] = {**{f: v1[k][f] for f in ("method", "sensor", "basis", "gross_energy_j", "net_energy_j")},
                 "windows": 2, "j_per_token": v1[k]["ept_total_j_per_token"], "gross_energy_kwh": 0.0}  # fmt: skip
    old = FinetuneRecord.model_validate(v1)
    assert old.energy.meter == "estimate" and old.energy.idle.power_w == rec.energy.idle.power_w
    assert old.train_energy.ept_total_j_per_token == e.ept_total_j_per_token and old.train_energy.window == "train"
    # the adapter is a normal peft directory
    assert (Path(rec.checkpoint_dir) / "adapter" / "adapter_config.json").is_file()
    # `e3bench report` on a directory holding only training results reports them
    from e3bench.report.render import build_report

    rep = build_report(tmp_path)
    assert "finetune.csv" in rep.files and "runs.csv" not in rep.files
    assert rec.run_id in (rep.out_dir / "finetune.csv").read_text()
    assert "Fine-tuning (e3bench finetune)" in (rep.out_dir / "report.html").read_text()


@pytest.mark.parametrize(("mode", "lr"), [("lora", 1e-2), ("full", 3e-3)])
def test_finetuning_learns_the_blue_rule(tiny_models, mc_files, tmp_path, mode, lr):
    """The fixture's label is 'yes' exactly when the passage contains 'blue': 16 steps of LoRA
    or full fine-tuning of the tiny decoder must beat the majority class clearly, lower the
    held-out loss, and report the time and energy to a target between the two."""
    from e3bench.train.finetune import run_finetune

    train, ev, _ = mc_files
    rec, _ = run_finetune(_cfg(tiny_models["decoder"], tmp_path, train_file=str(train), eval_file=str(ev), mode=mode,
                               lr=lr, max_steps=16, eval_every=8, batch_size=8, max_eval_samples=24,
                               target_accuracy=0.8))  # fmt: skip
    majority = rec.data["majority_class_accuracy"]
    assert rec.status == "ok" and [e.step for e in rec.evals] == [0, 8, 16]
    assert rec.evals[0].accuracy <= majority + 0.01  # untrained: no better than always answering one label
    assert rec.final_accuracy >= majority + 0.2, (majority, [e.accuracy for e in rec.evals])
    assert rec.evals[-1].eval_loss < rec.evals[0].eval_loss - 0.2
    t = rec.target
    assert t.reached and t.reached_at_step in (8, 16)
    hit = next(e for e in rec.evals if e.step == t.reached_at_step)
    assert t.time_to_target_s == hit.train_time_s > 0 and t.samples_to_target == 8 * t.reached_at_step
    assert t.energy_to_target_j == hit.train_energy_j > 0


def test_encoder_head_and_decoder_method_are_recorded(tiny_models, mc_files, tmp_path):
    from e3bench.train.finetune import run_finetune

    train, ev, copa = mc_files
    rec, _ = run_finetune(_cfg(tiny_models["encoder"], tmp_path, train_file=str(train), eval_file=str(ev), max_steps=1))
    assert rec.method["mode"] == "labels" and "classification head" in rec.method["head"]
    # per-item choices (COPA-like): pairs for the encoder, sequence scores for the encoder-decoder
    rec, _ = run_finetune(_cfg(tiny_models["encoder"], tmp_path, train_file=str(copa), max_steps=1, eval_every=1))
    assert rec.method["mode"] == "choices" and "pair" in rec.method["head"]
    assert "held-out" in rec.data["eval_source"]
    rec, _ = run_finetune(_cfg(tiny_models["encoder-decoder"], tmp_path, train_file=str(copa), max_steps=1, eval_every=1))
    assert rec.method["mode"] == "choices" and "log p" in rec.method["head"]


def test_lora_trains_an_encoders_pooler_with_its_classifier(tiny_models, mc_files, tmp_path):
    """BERT's pooler (dense + tanh over [CLS]) belongs to the classification head: trained in full
    beside the adapters (all-MiniLM-L6-v2 ships an untrained one, which frozen kept MiniLM LoRA
    on BoolQ at the majority class); the rest of the encoder stays frozen; decoders have none."""
    from e3bench.train.finetune import load_task_data
    from e3bench.train.finetune.model import apply_lora, head_modules, load_model

    train, ev, _ = mc_files
    cfg = _cfg(tiny_models["encoder"], tmp_path, train_file=str(train), eval_file=str(ev))
    ld = load_model(cfg, load_task_data(cfg), lambda _: None)
    assert head_modules(ld) == ["pooler"]
    grads = {n: p.requires_grad for n, p in apply_lora(cfg, ld).named_parameters()}
    assert "pooler" in ld.head
    assert {n for n, g in grads.items() if g and "lora_" not in n} == {
        n for n in grads if ".modules_to_save." in n and ("pooler" in n or "classifier" in n)}  # fmt: skip
    assert any("pooler" in n and g for n, g in grads.items()) and not any(g for n, g in grads.items() if "encoder.layer.0.attention.self.query.base_layer" in n)
    dcfg = _cfg(tiny_models["decoder"], tmp_path, train_file=str(train), eval_file=str(ev))
    assert head_modules(load_model(dcfg, load_task_data(dcfg), lambda _: None)) == []


def test_decoder_choice_scores_agree_with_the_backends_loglikelihood(tiny_models, mc_files):
    """In choices mode a decoder's training score of a choice is log p(" " + choice | query),
    tokenized like lm-eval: it must equal what the inference scorer (backends.hf_scorer) gives
    for the same request, padding and batching notwithstanding."""
    import torch

    from e3bench.backends.hf_scorer import hf_loglikelihood_tokens
    from e3bench.backends.tokenization import encode_pair, resolve_max_length
    from e3bench.evals.data import read_jsonl
    from e3bench.train.finetune import FinetuneConfig
    from e3bench.train.finetune.data import TaskData
    from e3bench.train.finetune.model import load_model
    from e3bench.train.finetune.scorer import Scorer

    _, _, copa = mc_files
    rows = read_jsonl(copa)[:6]
    rows[0] = {**rows[0], "query": rows[0]["query"] + " and then, after a long while, the story went on"}
    cfg = FinetuneConfig(model=str(tiny_models["decoder"]))
    ld = load_model(cfg, TaskData(train=rows, eval=rows, info={}), lambda _m: None)
    assert ld.mode == "choices" and ld.architecture == "decoder-only"
    ld.model.eval()
    with torch.no_grad():
        scores, n_tok, gold = Scorer(ld, 64, "cpu").scores(ld.model, rows)
    encoded = [encode_pair(ld.tokenizer, r["query"], " " + c) for r in rows for c in r["choices"]]
    want = hf_loglikelihood_tokens(ld.model, encoded, device="cpu", architecture="decoder-only",
                                   max_length=resolve_max_length(ld.model.config, ld.tokenizer))  # fmt: skip
    assert scores.shape == (6, 2) and gold.tolist() == [r["gold"] for r in rows] and n_tok > 0
    assert scores.flatten().tolist() == pytest.approx([w.logprob for w in want], rel=1e-4, abs=1e-4)


def test_full_finetuning_trains_everything(tiny_models, mc_files, tmp_path):
    from e3bench.train.finetune import run_finetune

    train, ev, _ = mc_files
    rec, _ = run_finetune(_cfg(tiny_models["encoder"], tmp_path, train_file=str(train), eval_file=str(ev), mode="full", max_steps=2))
    assert rec.trainable_parameters == rec.total_parameters and rec.trainable_fraction == 1.0


def test_resume_continues_exactly(tiny_models, mc_files, tmp_path):
    """2 steps + resume to 4 steps = 4 steps in one go (same batches, optimizer state, RNG)."""
    from e3bench.train.finetune import run_finetune

    train, ev, _ = mc_files
    m = tiny_models["encoder-decoder"]
    # a 3-step warm-up: steps 2 and 3 only get the full learning rate if the LR schedulers resume
    kw = dict(train_file=str(train), eval_file=str(ev), eval_every=2, warmup_steps=3)
    straight, _ = run_finetune(_cfg(m, tmp_path / "a", max_steps=4, **kw))
    first, _ = run_finetune(_cfg(m, tmp_path / "b", max_steps=2, **kw))
    assert first.steps == 2 and first.checkpoint_dir
    resumed, _ = run_finetune(_cfg(m, tmp_path / "b", max_steps=4, **kw), resume=True)
    assert resumed.resumed_from_step == 2 and resumed.steps == 4
    assert [e.step for e in resumed.evals] == [0, 2, 4]
    assert resumed.evals[-1].eval_loss == pytest.approx(straight.evals[-1].eval_loss, rel=1e-5, abs=1e-6)
    assert resumed.samples_seen == straight.samples_seen and resumed.tokens_seen == straight.tokens_seen
    assert resumed.train_time_s > resumed.evals[1].train_time_s  # cumulative across sessions
    # --resume with nothing to resume starts fresh, and says so
    fresh, _ = run_finetune(_cfg(m, tmp_path / "c", max_steps=1, **kw), resume=True)
    assert fresh.resumed_from_step is None and any("no checkpoint" in w for w in fresh.warnings)


def test_target_reached_reports_time_and_energy(tiny_models, mc_files, tmp_path):
    from e3bench.train.finetune import run_finetune

    train, ev, _ = mc_files
    rec, _ = run_finetune(_cfg(tiny_models["encoder"], tmp_path, train_file=str(train), eval_file=str(ev),
                               target_accuracy=0.01, max_steps=2))  # fmt: skip
    t = rec.target
    assert t.reached and t.reached_at_step == 0 and t.time_to_target_s == 0.0 and "before any training" in t.note
    # met before training: nowhere is that shown as "0.0 s / 0 J to the target" (a free win on the
    # architecture comparison's Pareto front); the console says what happened instead
    from e3bench.report.architecture import Row, _finetune
    from e3bench.report.training import _finetune_row
    from e3bench.train.cli import format_finetune

    text = format_finetune(rec, width=200)
    assert "reached at step 0" not in text and "before any training" in text and "no time or energy" in text
    row = _finetune_row(rec)
    assert row["target_reached"] == "before training" and row["time_to_target_s"] is None
    arch = Row(label="m", fixture=True, architecture="encoder", params=1, task="boolq")
    _finetune(arch, rec)
    assert arch.s_to_target is None and arch.j_to_target is None and arch.samples_to_target is None


def test_absurd_learning_rate_diverges_and_is_recorded(tiny_models, mc_files, tmp_path):
    from e3bench.train.finetune import run_finetune

    train, ev, _ = mc_files
    rec, path = run_finetune(_cfg(tiny_models["encoder"], tmp_path, train_file=str(train), eval_file=str(ev),
                                  mode="full", lr=1e5, grad_clip=None, max_steps=20, eval_every=10))  # fmt: skip
    assert rec.status == "diverged" and rec.steps < 20 and "loss" in rec.error
    assert json.loads(path.read_text())["status"] == "diverged"


def test_bad_input_is_one_clear_error(tiny_models, tmp_path):
    from e3bench.train.finetune import run_finetune

    with pytest.raises(E3Error) as ei:
        run_finetune(_cfg(tiny_models["encoder"], tmp_path, task="boolk"))
    assert "unknown fine-tuning task 'boolk'" in ei.value.problem and "did you mean 'boolq'" in ei.value.fix
    with pytest.raises(E3Error) as ei:
        run_finetune(_cfg(tiny_models["encoder"], tmp_path, task="sentiment"))
    assert "copa" in ei.value.fix and "--train-file" in ei.value.fix
    with pytest.raises(E3Error) as ei:
        run_finetune(_cfg(tiny_models["encoder"], tmp_path, optimizer="adamx"))
    assert "unknown optimizer 'adamx'" in ei.value.problem and "did you mean 'adamw'" in ei.value.fix
    with pytest.raises(E3Error) as ei:
        run_finetune(_cfg(tiny_models["encoder"], tmp_path, optimizer="lion"))
    assert "galore" in ei.value.fix
    with pytest.raises(E3Error, match="not found"):
        run_finetune(_cfg(tiny_models["encoder"], tmp_path, train_file=str(tmp_path / "missing.jsonl")))
    with pytest.raises(E3Error, match="unknown model"):
        run_finetune(_cfg(Path("no-such-model-alias"), tmp_path))


def test_local_boolq_is_split_into_disjoint_parts(tmp_path, monkeypatch):
    from e3bench.train.finetune import FinetuneConfig, load_task_data

    d = tmp_path / "data" / "boolq"
    d.mkdir(parents=True)
    rows = [{"query": f"Passage: p{i}\nQuestion: q{i}?", "choices": ["no", "yes"], "gold": i % 2} for i in range(50)]
    (d / "test.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    monkeypatch.setenv("E3BENCH_DATA_DIR", str(tmp_path / "data"))
    data = load_task_data(FinetuneConfig(model="x", task="boolq", max_eval_samples=10, max_train_samples=30))
    assert len(data.eval) == 10 and len(data.train) == 30
    assert not {r["query"] for r in data.train} & {r["query"] for r in data.eval}
    assert "not comparable" in data.info["split_note"]
    assert data.info["majority_class_accuracy"] >= 0.5
    # with a train split too, both come from the data directory as they are
    (d / "train.jsonl").write_text("\n".join(json.dumps({**r, "query": "T" + r["query"]}) for r in rows[:20]))
    data = load_task_data(FinetuneConfig(model="x", task="boolq", max_eval_samples=50))
    assert data.info["train_source"] == str(d / "train.jsonl") and data.info["eval_source"] == str(d / "test.jsonl")
    assert len(data.train) == 20 and len(data.eval) == 50 and "split_note" not in data.info
    assert all(r["query"].startswith("T") for r in data.train) and data.info["majority_class_accuracy"] == 0.5
    # only a train split: the held-out items are a disjoint part of it
    (d / "test.jsonl").unlink()
    data = load_task_data(FinetuneConfig(model="x", task="boolq", max_eval_samples=5))
    assert len(data.train) == 15 and len(data.eval) == 5 and "held-out part of" in data.info["eval_source"]
    assert not {r["query"] for r in data.train} & {r["query"] for r in data.eval}


def test_lora_targets_error_lists_linear_modules(tiny_models, mc_files, tmp_path):
    from e3bench.train.finetune import run_finetune

    train, ev, _ = mc_files
    with pytest.raises(E3Error) as ei:
        run_finetune(_cfg(tiny_models["decoder"], tmp_path, train_file=str(train), eval_file=str(ev), lora_targets=("nope",)))
    assert "--lora-targets" in ei.value.fix and "q_proj" in ei.value.fix


def test_cli_finetune(tiny_models, mc_files, tmp_path):
    import typer
    from typer.testing import CliRunner

    from e3bench.train.cli import finetune

    app = typer.Typer()
    app.command()(finetune)
    app.command("noop")(lambda: None)
    train, ev, _ = mc_files
    r = CliRunner().invoke(app, [
        "finetune", "--model", str(tiny_models["encoder"]), "--train-file", str(train), "--eval-file", str(ev),
        "--max-steps", "2", "--eval-every", "1", "--batch-size", "4", "--meter", "none", "--idle-seconds", "0",
        "-q", "-o", str(tmp_path),
    ])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "encoder-only" in r.stdout and "tokens/s" in r.stdout and "result:" in r.stdout
    r = CliRunner().invoke(app, ["finetune", "--model", "x", "--mode", "qlora"])
    assert isinstance(r.exception, E3Error) and "--mode" in r.exception.problem


@pytest.mark.slow
def test_smollm2_boolq_lora_tiny_budget(bundled_gguf, tmp_path):
    """The bundled SmolLM2-135M on the real BoolQ data (verbalizer on ' no'/' yes')."""
    import os

    from e3bench.train.finetune import FinetuneConfig, run_finetune

    if not os.environ.get("E3BENCH_DATA_DIR"):
        pytest.skip("no local data directory (E3BENCH_DATA_DIR)")
    cfg = FinetuneConfig(model="smollm2-135m", task="boolq", max_steps=2, eval_every=2, batch_size=2,
                         max_eval_samples=8, max_seq_len=96, meter="estimate", idle_seconds=0.2,
                         output_dir=str(tmp_path))  # fmt: skip
    rec, _ = run_finetune(cfg)
    assert rec.method["mode"] == "labels" and len(set(rec.method["label_token_ids"])) == 2
    assert rec.trainable_parameters < 0.01 * rec.total_parameters and rec.steps == 2


def test_finetune_summary_energy_has_no_scientific_notation():
    """The summary printed '32.2 J ... = 8.950e-06 kWh' (project rule: no e-notation in output)."""
    from types import SimpleNamespace as NS

    from e3bench.train.cli import format_finetune

    e = NS(net_energy_j=32.2, gross_energy_j=300.0, basis="net", method="estimated", sensor="tdp-model")
    r = NS(target=None, train_energy=e, model={"architecture": "decoder-only", "name": "m"},
           data={"task": "boolq", "majority_class_accuracy": 0.625}, method={"fine_tuning": "lora", "mode": "labels"},
           status="ok", trainable_parameters=1, total_parameters=2, trainable_fraction=0.5, steps=6, samples_seen=12,
           tokens_seen=768, train_time_s=73.6, train_tokens_per_s=10.4, train_samples_per_s=0.16,
           final_accuracy=0.25, best_accuracy=0.375, evals=[], vs_majority=None, memory=None, warnings=[])  # fmt: skip
    line = next(x for x in format_finetune(r).splitlines() if "training energy" in x)
    assert line == "  training energy 32.2 J (net; estimated, tdp-model) = 0.00000894 kWh"


def test_an_encoder_reads_a_two_segment_query_as_a_pair_and_keeps_the_question(tiny_models, mc_files, tmp_path):
    """BoolQ's passage comes first; read as one sequence cut at max_len, the question's place
    depended on the cut. The encoder now reads (question, passage) as BERT's sentence pair, and a
    passage longer than max_len loses its end, never the question."""
    from e3bench.train.finetune import load_task_data
    from e3bench.train.finetune.model import load_model
    from e3bench.train.finetune.scorer import Scorer, text_pair

    assert text_pair("Passage: a b c\nQuestion: is it blue?") == ("Question: is it blue?", "Passage: a b c")
    assert text_pair("The man turned on the faucet, therefore") is None
    assert text_pair("\nQuestion: no context?") is None
    train, ev, _ = mc_files
    cfg = _cfg(tiny_models["encoder"], tmp_path, train_file=str(train), eval_file=str(ev))
    ld = load_model(cfg, load_task_data(cfg), lambda _: None)
    seen = {}

    def model(**enc):
        seen.update(enc)
        import torch

        return type("Out", (), {"logits": torch.zeros(enc["input_ids"].shape[0], 2)})()

    long = {"query": "Passage: " + "red fox " * 200 + "\nQuestion: is the sky blue?", "choices": ["no", "yes"], "gold": 1}
    Scorer(ld, 32, "cpu").scores(model, [long, {**long, "query": "Passage: short\nQuestion: is it?"}])
    assert seen["input_ids"].shape[1] == 32
    text = ld.tokenizer.decode(seen["input_ids"][0])
    assert "is the sky blue" in text and text.index("sky") < text.index("fox")


def test_an_encoder_classifies_on_the_pooling_its_folder_declares(tiny_models, mc_files, tmp_path):
    """all-MiniLM-L6-v2 was trained on mean-pooled tokens (sentence-transformers' 1_Pooling
    config); its [CLS] and BERT pooler are untrained. A folder that declares its pooling gets a
    classifier on that pooling (no pooler trained), pad tokens do not change the logits, and a
    folder without the declaration keeps the architecture's own head."""
    import shutil

    import torch

    from e3bench.train.finetune import load_task_data
    from e3bench.train.finetune.model import apply_lora, declared_pooling, head_modules, load_model, pooled_logits

    enc_dir = tmp_path / "st-encoder"
    shutil.copytree(tiny_models["encoder"], enc_dir)
    assert declared_pooling(str(enc_dir)) == (None, None)
    (enc_dir / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))  # fmt: skip
    (enc_dir / "1_Pooling").mkdir()
    conf = {"word_embedding_dimension": 32, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True}
    (enc_dir / "1_Pooling" / "config.json").write_text(json.dumps(conf))
    assert declared_pooling(str(enc_dir)) == ("mean", None)
    train, ev, _ = mc_files
    cfg = _cfg(enc_dir, tmp_path, train_file=str(train), eval_file=str(ev))
    ld = load_model(cfg, load_task_data(cfg), lambda _: None)
    assert ld.pooling == "mean" and "mean-pooled" in ld.head and head_modules(ld) == []
    model = apply_lora(cfg, ld).eval()
    trained = {n for n, p in model.named_parameters() if p.requires_grad and "lora_" not in n}
    assert trained and all("classifier" in n for n in trained)
    tok = ld.tokenizer
    short = tok(["is it blue"], return_tensors="pt")
    padded = tok(["is it blue", "a much longer second text with many more words"], padding=True, return_tensors="pt")
    with torch.no_grad():
        one, two = pooled_logits(ld, model, dict(short)), pooled_logits(ld, model, dict(padded))
        body = model.get_base_model().bert(**short).last_hidden_state.mean(1)
        assert torch.allclose(one[0], two[0], atol=1e-5)  # padding is masked out of the mean
        assert torch.allclose(one, model.get_base_model().classifier(body), atol=1e-5)
    conf.update(pooling_mode_mean_tokens=False, pooling_mode_max_tokens=True, pooling_mode_cls_token=True)
    (enc_dir / "1_Pooling" / "config.json").write_text(json.dumps(conf))
    pooling, note = declared_pooling(str(enc_dir))
    assert pooling is None and "not implemented" in note


def test_lr_schedule_option_linear_decays_over_the_budget():
    """--lr-schedule linear: warm-up, then linear decay to 0 at --max-steps; the default stays
    constant (a decay spans the budget, which --resume may extend)."""
    from e3bench.train.finetune import FinetuneConfig
    from e3bench.train.shared.optim import lr_factor

    f = [lr_factor(s, warmup_steps=2, total_steps=10, schedule="linear", min_ratio=0.0) for s in range(10)]
    assert f[:3] == [0.5, 1.0, 1.0] and f[6] == pytest.approx(0.5) and f[9] == pytest.approx(0.125)
    assert all(a > b for a, b in zip(f[2:], f[3:], strict=False))
    assert FinetuneConfig(model="m").lr_schedule == "constant"
    assert FinetuneConfig(model="m").config_hash() != FinetuneConfig(model="m", lr_schedule="linear").config_hash()


def test_users_data_is_recorded_under_its_file_name_and_an_empty_file_is_named(tmp_path):
    """`finetune --train-file mine.jsonl` recorded the task as 'boolq' (the --task default) for
    anybody's data; an empty file said "task 'boolq' has no training or evaluation items"."""
    from e3bench.core.errors import E3Error
    from e3bench.train.finetune.config import FinetuneConfig
    from e3bench.train.finetune.data import load_task_data

    good = tmp_path / "mine.jsonl"
    good.write_text("".join(json.dumps({"query": f"q{i}", "choices": ["a", "b"], "gold": i % 2}) + "\n" for i in range(6)))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert FinetuneConfig(model="m", train_file=str(good)).task == "mine"
    assert FinetuneConfig(model="m", train_file=str(good), task="rte").task == "rte"  # said: a label
    assert FinetuneConfig(model="m").task == "boolq"
    assert FinetuneConfig(model="m").config_hash() == FinetuneConfig(model="m", task="boolq").config_hash()
    with pytest.raises(E3Error, match="empty.jsonl has no training items"):
        load_task_data(FinetuneConfig(model="m", train_file=str(empty), eval_file=str(good)))
    with pytest.raises(E3Error, match="empty.jsonl has no evaluation items"):
        load_task_data(FinetuneConfig(model="m", train_file=str(good), eval_file=str(empty)))
