"""SuperGLUE breadth (issue 16): hub-schema rows of RTE, CB, WiC, WSC, MultiRC and ReCoRD become
e3bench rows with lm-eval's prompts; CB macro-F1, MultiRC F1a/EM and ReCoRD F1/EM computed in one
place and checked against hand-computed values; fine-tuning reads the tasks and reports the
metrics; the learning margin over the majority class has a Wilson CI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from e3bench.core.errors import E3Error
from e3bench.evals.hub_schemas import DATASETS
from e3bench.evals.tasks import get_task
from test_task_shapes import Recorder

HUB = Path(__file__).parent / "data" / "hub"


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ------------------------------------------------------------------------ hub rows → e3bench rows
def test_hub_rows_become_lm_eval_prompts():
    rte = DATASETS["rte"].mapper({"premise": "A cat sat.", "hypothesis": "An animal sat.", "idx": 0, "label": 0})
    assert rte == {"query": "A cat sat.\nQuestion: An animal sat. True or False?\nAnswer:", "choices": ["True", "False"],
                   "gold": 0}  # fmt: skip
    cb = DATASETS["cb"].mapper({"premise": "He left.", "hypothesis": "he is gone", "idx": 3, "label": 2})
    assert cb == {"query": "He left.\nQuestion: he is gone. True, False, or Neither?\nAnswer:",
                  "choices": ["True", "False", "Neither"], "gold": 2}  # fmt: skip
    wic = DATASETS["wic"].mapper({"word": "beat", "sentence1": "We beat them.", "sentence2": "A beat drum.",
                                  "start1": 3, "end1": 7, "start2": 2, "end2": 6, "idx": 1, "label": 1})  # fmt: skip
    assert wic["query"] == ("Sentence 1: We beat them.\nSentence 2: A beat drum.\nQuestion: Is the word 'beat' used "
                            "in the same way in the two sentences above?\nAnswer:")  # fmt: skip
    assert (wic["choices"], wic["gold"]) == (["no", "yes"], 1)
    wsc = DATASETS["wsc"].mapper({"text": "The men refused the women because they feared violence .", "span1_index": 1,
                                  "span2_index": 6, "span1_text": "men", "span2_text": "they", "idx": 0, "label": 1})  # fmt: skip
    assert wsc["query"] == ('Passage: The men refused the women because *they* feared violence.\nQuestion: In the '
                            'passage above, does the pronoun "*they*" refer to "*men*"?\nAnswer:')  # fmt: skip
    assert (wsc["choices"], wsc["gold"]) == (["no", "yes"], 1)


def test_multirc_rows_keep_lm_eval_requests_and_the_right_gold():
    """lm-eval's choices are [yes, no] with target = label (1 = correct answer), i.e. "no" for a
    correct answer; e3bench sends the same requests and takes the right choice as gold."""
    row = {"paragraph": "P.", "question": "Q?", "answer": "A", "idx": {"paragraph": 4, "question": 2, "answer": 9}}
    correct = DATASETS["multirc"].mapper({**row, "label": 1})
    wrong = DATASETS["multirc"].mapper({**row, "label": 0})
    assert correct == {"query": "P.\nQuestion: Q?\nAnswer:", "question_id": "4-2", "gold": 0,
                       "choices": ["A\nIs the answer correct? yes", "A\nIs the answer correct? no"]}  # fmt: skip
    assert wrong["gold"] == 1


def test_record_rows_are_lm_eval_doc_to_text_and_choices():
    doc = {"passage": "Lead text.\n@highlight\nFirst point\n@highlight\nSecond", "query": "@placeholder won.",
           "entities": ["Oslo", "Bergen", "Oslo"], "answers": ["Oslo", "Oslo"], "idx": {"passage": 0, "query": 0}}  # fmt: skip
    r = DATASETS["record"].mapper(doc)
    assert r["query"] == "Lead text.\n\n  - First point.\n  - Second.\n"
    assert r["choices"] == ["  - Bergen won.", "  - Oslo won."] and r["gold"] == 1
    assert (r["entities"], r["answers"]) == (["Bergen", "Oslo"], ["Oslo"])


# --------------------------------------------------------------------------------- metrics
def test_macro_f1_matches_sklearn_and_hand_values():
    from e3bench.evals.tasks.metrics import macro_f1

    golds, preds = [0, 1, 2, 0, 1, 2], [0, 1, 1, 0, 2, 2]
    # class 0: F1 1; class 1: tp 1, fp 1, fn 1 → 0.5; class 2: the same → 0.5
    assert macro_f1(golds, preds, 3) == pytest.approx(2 / 3)
    sk = pytest.importorskip("sklearn.metrics")
    for g, p in ((golds, preds), ([0, 0, 1, 2], [1, 1, 1, 1]), ([2, 2, 2], [2, 2, 2])):
        assert macro_f1(g, p, 3) == pytest.approx(sk.f1_score(g, p, labels=[0, 1, 2], average="macro", zero_division=0))


def test_multirc_f1a_and_em_by_hand():
    from e3bench.evals.tasks.metrics import multirc_f1a_em, task_metrics

    # choice 0 = "the answer is correct"; two questions, q1 all right, q2 one option wrong
    golds, preds, qids = [0, 1, 0, 0, 1], [0, 1, 0, 1, 0], ["q1", "q1", "q1", "q2", "q2"]
    # positive = 0: tp 2 (items 0, 2), fn 1 (item 3), fp 1 (item 4) → F1 = 4 / 6
    f1a, em = multirc_f1a_em(golds, preds, qids)
    assert (f1a, em) == (pytest.approx(2 / 3), 0.5)
    rows = [{"gold": g, "pred": p, "question_id": q, "query": "x"} for g, p, q in zip(golds, preds, qids)]
    assert task_metrics("multirc", rows) == {"f1a": pytest.approx(2 / 3), "em": 0.5}
    assert task_metrics("cb", [{"gold": 0, "pred": 0}, {"gold": 1, "pred": 2}]) == {"f1": pytest.approx(1 / 3)}
    assert task_metrics("boolq", rows) == {}


def test_squad_f1_em_by_hand():
    from e3bench.evals.tasks.metrics import squad_f1_em

    assert squad_f1_em("The Oslo team", ["oslo team"]) == (1.0, 1.0)  # articles, case
    # "new york city" vs "york": p 1/3, r 1 → F1 0.5; best over answers
    assert squad_f1_em("New York City", ["York", "Boston"]) == (pytest.approx(0.5), 0.0)
    assert squad_f1_em("Paris", ["Rome"]) == (0.0, 0.0)


# ----------------------------------------------------------------------------- eval tasks
def test_multirc_task_reports_acc_f1a_em(tmp_path):
    rows = [json.loads(x) for x in (HUB / "multirc" / "test.jsonl").read_text().splitlines()]
    _jsonl(tmp_path / "multirc" / "test.jsonl", rows)
    # the model says "yes" to every option: right on the 5 correct options, wrong on the 5 others
    table = {(f"{r['paragraph']}\nQuestion: {r['question']}\nAnswer:", f" {r['answer']}\nIs the answer correct? yes"):
             (-1.0, False) for r in rows}  # fmt: skip
    be = Recorder(table)
    score = get_task("multirc", data_dir=str(tmp_path)).evaluate(be)
    assert len(be.requests) == 20 and score.n_items == 10
    assert score.metrics["acc"] == pytest.approx(0.5)
    assert score.metrics["f1a"] == pytest.approx(2 * 5 / (2 * 5 + 5))  # tp 5, fp 5
    assert score.metrics["em"] == 0.0  # every question has a wrong option marked correct
    assert score.details["n_questions"] == 4 and score.stderr["f1a"] >= 0


def test_record_task_requests_and_f1_em(tmp_path):
    _jsonl(tmp_path / "record" / "test.jsonl", [json.loads(x) for x in (HUB / "record" / "test.jsonl").read_text().splitlines()])
    ctx = "A team from Oslo won the robotics cup in Tokyo. Their robot, named Fjord, solved the maze in 41 seconds.\n\n" \
          "  - Oslo team wins robotics cup.\n  - Robot Fjord sets a record.\n"
    be = Recorder({(ctx, "  - The robot from Tokyo beat 30 other teams."): (-1.0, False)})  # a wrong pick
    score = get_task("record", data_dir=str(tmp_path)).evaluate(be)
    assert (ctx, "  - The robot from Oslo beat 30 other teams.") in be.requests  # no delimiter
    assert score.samples[1]["pred"] == 2 and (score.samples[1]["f1"], score.samples[1]["em"]) == (0.0, 0.0)
    # the others pick the first entity (all tie): "Ann Lee" (sorted: Ann Lee, CNN, Springfield) is
    # right; "Amazon" is not Brazil/Peru
    assert [s["em"] for s in score.samples] == [1.0, 0.0, 0.0]
    assert score.metrics == {"f1": pytest.approx(1 / 3), "em": pytest.approx(1 / 3)}


def test_superglue_tasks_without_data_fail_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    for name in ("multirc", "record"):
        with pytest.raises(E3Error) as ei:
            get_task(name, data_dir=str(tmp_path)).load_rows()
        line = ei.value.one_line()
        assert f"could not find data for '{name}'" in line and f"aps/super_glue ({name})" in line and "\n" not in line


# ----------------------------------------------------------------------------- fine-tuning
def _hub_dir(tmp_path: Path, task: str) -> Path:
    rows = [json.loads(x) for x in (HUB / task / "test.jsonl").read_text().splitlines()]
    _jsonl(tmp_path / task / "train.jsonl", rows)
    _jsonl(tmp_path / task / "test.jsonl", rows)
    return tmp_path


@pytest.mark.parametrize("task, metrics", [("cb", {"f1"}), ("multirc", {"f1a", "em"}), ("rte", set()), ("wic", set())])
def test_finetune_reads_superglue_hub_rows_and_reports_their_metrics(task, metrics, tiny_models, tmp_path, monkeypatch):
    from e3bench.train.finetune import FinetuneConfig, load_task_data, run_finetune

    monkeypatch.setenv("E3BENCH_DATA_DIR", str(_hub_dir(tmp_path / "data", task)))
    cfg = FinetuneConfig(model=str(tiny_models["encoder"]), task=task, max_steps=1, eval_every=1, batch_size=4,
                         meter="none", idle_seconds=0, output_dir=str(tmp_path / "out"), max_seq_len=64)  # fmt: skip
    data = load_task_data(cfg)
    assert all(set(r) >= {"query", "choices", "gold"} for r in data.train + data.eval)
    rec, _ = run_finetune(cfg)
    assert set(rec.evals[-1].metrics) == metrics
    if task == "cb":
        from e3bench.evals.tasks.metrics import macro_f1

        assert 0 <= rec.evals[-1].metrics["f1"] <= 1
        assert rec.data["n_eval"] == 8 and macro_f1([0], [0], 3) == pytest.approx(1 / 3)


def test_finetune_superglue_task_without_data_is_one_line(tmp_path, monkeypatch):
    from e3bench.train.finetune import FinetuneConfig, load_task_data

    monkeypatch.setenv("E3BENCH_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(E3Error) as ei:
        load_task_data(FinetuneConfig(model="x", task="wsc"))
    assert "could not find data for 'wsc' (split train)" in ei.value.one_line()
    assert "aps/super_glue (wsc.fixed)" in ei.value.one_line()


# ------------------------------------------------------------------ the margin over majority
def test_wilson_interval_matches_scipy_and_hand_values():
    from e3bench.core.timing import wilson_interval

    lo, hi = wilson_interval(5 / 20, 20)
    assert (round(lo, 3), round(hi, 3)) == (0.112, 0.469)
    assert all(math.isnan(x) for x in wilson_interval(0.5, 0))
    stats = pytest.importorskip("scipy.stats")
    for k, n in ((5, 20), (0, 10), (300, 400), (271, 400)):
        ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        got = wilson_interval(k / n, n, z=float(stats.norm.ppf(0.975)))
        assert got == (pytest.approx(ci.low, abs=1e-9), pytest.approx(ci.high, abs=1e-9))


def test_margin_over_majority_is_the_wilson_interval_shifted():
    from e3bench.train.finetune.record import margin_over_majority
    from e3bench.train.records import EvalPoint

    point = EvalPoint(step=200, samples_seen=1600, tokens_seen=1, train_time_s=1.0, wall_time_s=1.0, train_energy_j=None,
                      train_energy_gross_j=None, accuracy=0.7, eval_loss=0.6, n_items=400, eval_s=1.0)  # fmt: skip
    m = margin_over_majority(point, 0.6)
    # Wilson 95 % for 280/400: centre (0.7 + 1.96²/800)/(1 + 1.96²/400), half-width as in the formula
    z2 = 1.96**2
    centre = (0.7 + z2 / 800) / (1 + z2 / 400)
    half = 1.96 * math.sqrt(0.7 * 0.3 / 400 + z2 / (4 * 400**2)) / (1 + z2 / 400)
    assert m.margin == pytest.approx(0.1)
    assert (m.ci95_low, m.ci95_high) == (pytest.approx(centre - half - 0.6), pytest.approx(centre + half - 0.6))
    assert round(m.ci95_low, 3) == 0.053 and m.clear and m.n_items == 400 and "step 200" in m.which
    assert not margin_over_majority(point.model_copy(update={"accuracy": 0.62}), 0.6).clear
