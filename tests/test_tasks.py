"""Tasks: metric math on crafted items, answer extraction, registry, data loading errors."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import ClassVar

import pytest

from e3bench.core.api import Capabilities, GenParams, Generation, LogLik, TaskScore
from e3bench.core.errors import E3Error
from e3bench.evals.tasks import get_task, parse_task_spec, task_names
from e3bench.evals.tasks.base import MCItem, argmax, mean_stderr, ratio_stderr, score_multiple_choice
from e3bench.evals.tasks.generative import (
    cut_at_stop,
    extract_flexible,
    extract_strict,
    gsm8k_exact_match,
    squad_exact,
    squad_f1,
)
from e3bench.evals.tasks.multiple_choice import mmlu_prompt

from conftest import SHARED_DATA  # noqa: E402

SHARED = Path(os.environ.get("E3BENCH_DATA_DIR") or SHARED_DATA)


class TableBackend:
    """Log-likelihoods from a table {(context, continuation): logprob}; generation from a map."""

    name: ClassVar[str] = "table"
    capabilities: ClassVar[Capabilities] = Capabilities(
        devices=frozenset({"cpu"}), precisions=frozenset({"fp32"}),
        architectures=frozenset({"decoder-only"}), loglikelihood=True,
    )

    def __init__(self, table=None, gens=None, architecture="decoder-only"):
        self.table = table or {}
        self.gens = gens or {}
        self.architecture = architecture
        self.device = "cpu"
        self.calls: list = []

    def encode(self, text):
        return [ord(c) for c in text]

    def encode_context(self, text, *, max_new_tokens):
        return self.encode(text), False

    def decode(self, ids):
        return "".join(chr(i) for i in ids)

    def loglikelihood(self, requests):
        self.calls.append(list(requests))
        return [LogLik(self.table.get(r, -100.0), False, 1) for r in requests]

    def generate(self, prompts, params: GenParams):
        out = []
        for p in prompts:
            text = self.gens[self.decode(p)]
            out.append(Generation(self.encode(text), text))
        return out


# ------------------------------------------------------------------ multiple choice math
def test_acc_and_acc_norm_on_crafted_items():
    items = [
        # raw: choice 1 wins (-2 > -3); per char: " a"?? choices lengths 1 and 10 → -3/1 vs -2/10 → choice 1
        MCItem("q1", ["a", "bbbbbbbbbb"], gold=1),
        # raw: choice 0 wins (-5 > -6); norm: -5/2=-2.5 vs -6/6=-1 → choice 1 (gold)
        MCItem("q2", ["xx", "yyyyyy"], gold=1),
        # tie → first index (numpy argmax rule)
        MCItem("q3", ["p", "q"], gold=0),
    ]
    table = {
        ("q1", " a"): -3.0, ("q1", " bbbbbbbbbb"): -2.0,
        ("q2", " xx"): -5.0, ("q2", " yyyyyy"): -6.0,
        ("q3", " p"): -1.0, ("q3", " q"): -1.0,
    }
    rows = score_multiple_choice(TableBackend(table), items)
    assert [r["pred"] for r in rows] == [1, 0, 0]
    assert [r["pred_norm"] for r in rows] == [1, 1, 0]
    assert [r["acc"] for r in rows] == [1.0, 0.0, 1.0]
    assert [r["acc_norm"] for r in rows] == [1.0, 1.0, 1.0]


def test_mean_stderr_matches_lm_eval_definition():
    xs = [1.0, 0.0, 1.0, 1.0]
    mu = 0.75
    want = math.sqrt(sum((x - mu) ** 2 for x in xs) / 3) / 2
    assert mean_stderr(xs) == pytest.approx(want)
    assert math.isnan(mean_stderr([1.0]))
    lm_metrics = pytest.importorskip("lm_eval.api.metrics")
    assert mean_stderr(xs) == pytest.approx(lm_metrics.mean_stderr(xs))


def test_ratio_stderr_zero_when_ratio_constant():
    assert ratio_stderr([2.0, 4.0, 6.0], [1.0, 2.0, 3.0]) == pytest.approx(0.0)
    assert ratio_stderr([1.0, 4.0, 6.0], [1.0, 2.0, 3.0]) > 0


def test_argmax_first_of_ties():
    assert argmax([1.0, 3.0, 3.0]) == 1


def test_jsonl_multiple_choice_task(tmp_path):
    f = tmp_path / "mc.jsonl"
    f.write_text(
        json.dumps({"query": "2+2=", "choices": ["4", "5"], "gold": 0}) + "\n"
        + json.dumps({"query": "Sky is", "choices": ["green", "blue"], "gold": 1}) + "\n"
    )
    table = {("2+2=", " 4"): -1.0, ("2+2=", " 5"): -2.0, ("Sky is", " green"): -1.0, ("Sky is", " blue"): -3.0}
    score = get_task("jsonl_mc", path=str(f)).evaluate(TableBackend(table), limit=None, seed=0)
    assert isinstance(score, TaskScore)
    assert score.n_items == 2
    assert score.metrics["acc"] == 0.5
    assert score.stderr["acc"] == pytest.approx(0.5)
    assert score.samples[1]["pred"] == 0 and score.samples[1]["gold"] == 1


def test_limit_first_n_and_seeded_sample(tmp_path):
    f = tmp_path / "mc.jsonl"
    f.write_text("".join(json.dumps({"query": f"q{i}", "choices": ["a", "b"], "gold": 0}) + "\n" for i in range(20)))
    b = TableBackend()

    def asked(task, **kw) -> list[str]:  # the contexts one evaluation scored (over its pieces)
        before = len(b.calls)
        task.evaluate(b, **kw)
        return [c for call in b.calls[before:] for c, _ in call][::2]

    assert asked(get_task("jsonl_mc", path=str(f)), limit=3, seed=0) == ["q0", "q1", "q2"]
    # a seeded sample: random.Random(seed).sample of the row numbers, in file order
    for seed, want in ((7, ["q4", "q10", "q12"]), (7, ["q4", "q10", "q12"]), (8, ["q7", "q11", "q12"])):
        assert asked(get_task("jsonl_mc", path=str(f), sample=True), limit=3, seed=seed) == want, seed


def test_empty_after_limit_is_an_error(tmp_path):
    f = tmp_path / "mc.jsonl"
    f.write_text(json.dumps({"query": "q", "choices": ["a", "b"], "gold": 0}) + "\n")
    with pytest.raises(E3Error, match="no items"):
        get_task("jsonl_mc", path=str(f)).evaluate(TableBackend(), limit=0, seed=0)


# ----------------------------------------------------------------------------- JSONL errors
def test_malformed_jsonl_names_file_and_line(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"query": "a", "choices": ["x", "y"], "gold": 0}\n\n{"query": "b", "choices": [}\n')
    with pytest.raises(E3Error) as info:
        get_task("jsonl_mc", path=str(f)).evaluate(TableBackend(), limit=None, seed=0)
    assert f"{f}:3" in info.value.problem


def test_missing_field_names_file_and_line(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"query": "a", "choices": ["x", "y"], "gold": 0}\n{"query": "b", "choices": ["x", "y"]}\n')
    with pytest.raises(E3Error, match=r"bad.jsonl:2: missing field 'gold'"):
        get_task("jsonl_mc", path=str(f)).evaluate(TableBackend(), limit=None, seed=0)
    f.write_text('{"query": "a", "choices": ["x", "y"], "gold": 2}\n')
    with pytest.raises(E3Error, match=r"bad.jsonl:1: 'gold' = 2"):
        get_task("jsonl_mc", path=str(f)).evaluate(TableBackend(), limit=None, seed=0)


# ------------------------------------------------------------------------------- registry
def test_unknown_task_suggests_near_names():
    with pytest.raises(E3Error) as info:
        get_task("helaswag")
    assert "unknown task 'helaswag'" in info.value.problem and info.value.fix == "did you mean 'hellaswag'?"
    with pytest.raises(E3Error) as info:
        get_task("zzz")
    assert "mmlu" in info.value.fix and "--engine lm-eval" in info.value.fix


def test_registry_lists_builtins_and_parses_specs():
    names = task_names()
    for n in ["mmlu", "mmlu_5shot", "hellaswag", "arc_easy", "boolq", "copa", "openbookqa", "gsm8k",
              "perplexity", "squad", "jsonl_mc", "jsonl_gen"]:
        assert n in names
    assert get_task("mmlu_5shot").num_fewshot == 5
    assert get_task("mmlu", num_fewshot=2).name == "mmlu_2shot"
    assert parse_task_spec("jsonl_mc:path=a.jsonl,suffix=\\nAnswer:") == (
        "jsonl_mc", {"path": "a.jsonl", "suffix": "\nAnswer:"}
    )
    assert parse_task_spec("mmlu:num_fewshot=5") == ("mmlu", {"num_fewshot": 5})
    assert get_task("hellaswag").requires == frozenset({"loglikelihood"})
    assert get_task("gsm8k").requires == frozenset({"generate"})


def test_encoder_only_backend_gets_a_fine_tuning_explanation(tmp_path):
    f = tmp_path / "mc.jsonl"
    f.write_text(json.dumps({"query": "q", "choices": ["a", "b"], "gold": 0}) + "\n")
    with pytest.raises(E3Error) as info:
        get_task("jsonl_mc", path=str(f)).evaluate(TableBackend(architecture="encoder-only"), limit=None, seed=0)
    assert "encoder-only" in info.value.problem and "fine-tun" in info.value.problem
    assert "finetune" in info.value.fix


# -------------------------------------------------------------------------------- data dir
def test_missing_data_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("E3BENCH_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(E3Error) as info:
        get_task("hellaswag").evaluate(TableBackend(), limit=2, seed=0)
    msg = info.value.problem
    assert str(tmp_path / "hellaswag" / "validation.jsonl") in msg
    assert "Rowan/hellaswag" in msg
    assert "E3BENCH_DATA_DIR" in info.value.fix


def test_local_data_dir_layout_is_read(tmp_path):
    (tmp_path / "copa").mkdir()
    (tmp_path / "copa" / "test.jsonl").write_text(
        json.dumps({"query": "It rained, therefore", "choices": ["the ground got wet.", "x."], "gold": 0}) + "\n"
    )
    table = {("It rained, therefore", " the ground got wet."): -1.0}
    score = get_task("copa", data_dir=str(tmp_path)).evaluate(TableBackend(table), limit=None, seed=0)
    assert score.metrics["acc"] == 1.0


def _char_encode(text: str) -> list[int]:
    return [ord(c) for c in text]


def test_prompts_and_tasks_resolve_datasets_alike(tmp_path, monkeypatch):
    """``--prompts openbookqa:query`` reads the file ``--tasks openbookqa`` reads (the folder is
    ``openbook_qa``); any other name is a folder of the data directory, any split."""
    from e3bench.bench.prompts import load_prompts

    rows = [{"query": f"Which {i}?", "choices": ["a", "b"], "gold": 0} for i in range(3)]
    (tmp_path / "openbook_qa").mkdir()
    (tmp_path / "openbook_qa" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "validation.jsonl").write_text(json.dumps({"text": "hello"}) + "\n")
    monkeypatch.setenv("E3BENCH_DATA_DIR", str(tmp_path))
    ps = load_prompts(_char_encode, "openbookqa:query", 8)
    assert ps.token_ids == [_char_encode(r["query"]) for r in rows]
    assert str(tmp_path / "openbook_qa" / "test.jsonl") in ps.source and "(3 prompts)" in ps.source
    table = {("Which 0?", " a"): -1.0, ("Which 0?", " b"): -2.0}
    assert get_task("openbookqa").evaluate(TableBackend(table), limit=1, seed=0).metrics["acc"] == 1.0
    assert load_prompts(_char_encode, "mine:text", 8).token_ids == [_char_encode("hello")]
    with pytest.raises(E3Error, match="no field 'question'") as info:
        load_prompts(_char_encode, "openbookqa:question", 8)
    assert info.value.fix == "fields are: choices, gold, query"


def test_hub_is_asked_with_the_dataset_config(tmp_path, monkeypatch):
    """Prompts and tasks ask the hub the same way: gsm8k is ``openai/gsm8k`` with config ``main``."""
    from e3bench.bench.prompts import load_prompts
    from e3bench.evals.data import resolve

    calls = []

    class FakeSplit(list):
        def select(self, idx):
            return FakeSplit(self[i] for i in idx)

    def load_dataset(path, name=None, *, split, **kw):
        assert kw == {"trust_remote_code": False}  # a dataset's loading script never runs
        calls.append((path, name, split))
        return FakeSplit([{"question": "1+1?", "answer": "#### 2"}, {"question": "2+2?", "answer": "#### 4"}])

    monkeypatch.setitem(sys.modules, "datasets", type(sys)("datasets"))
    monkeypatch.setattr(sys.modules["datasets"], "load_dataset", load_dataset, raising=False)
    monkeypatch.setenv("E3BENCH_DATA_DIR", str(tmp_path))  # empty: nothing local
    ps = load_prompts(_char_encode, "gsm8k:question", 8)
    assert calls == [("openai/gsm8k", "main", "test")]
    assert ps.token_ids == [_char_encode("1+1?"), _char_encode("2+2?")]
    assert ps.source == "dataset: hub:openai/gsm8k:main split test field 'question' (2 prompts)"
    ds = resolve("gsm8k", "train")
    assert calls[-1] == ("openai/gsm8k", "main", "train") and [r["_line"] for r in ds.rows] == [1, 2]


def test_one_jsonl_reader(tmp_path):
    """The lm-eval fixtures read with e3bench's reader and write back exactly the items."""
    from e3bench.evals import data
    from fakes import lmeval_local

    assert lmeval_local.read_jsonl is data.read_jsonl
    f = tmp_path / "a.jsonl"
    f.write_text('{"query": "q", "gold": 0}\n\n{"query": "r", "gold": 1}\n')
    rows = data.read_jsonl(f)
    assert rows == [{"query": "q", "gold": 0, "_line": 1}, {"query": "r", "gold": 1, "_line": 3}]
    out = lmeval_local.write_jsonl(tmp_path / "b.jsonl", rows)
    assert out.read_text() == '{"query": "q", "gold": 0}\n{"query": "r", "gold": 1}\n'
    f.write_text('{"query": "q"}\n[1]\n')
    with pytest.raises(E3Error, match=r"a.jsonl:2: expected a JSON object"):
        data.read_jsonl(f)


def test_hub_rows_are_mapped_like_lm_eval():
    from e3bench.evals.hub_schemas import _map_arc, _map_copa, _map_hellaswag

    hs = _map_hellaswag({
        "activity_label": "Baking cookies", "ctx_a": "A woman adds flour [title] Mix well.",
        "ctx_b": "then she", "endings": ["stirs  it.", "[header] eats."], "label": "0",
    })
    # lm-eval strips before removing "[...]" artifacts, so " eats." keeps its space
    assert hs == {"query": "Baking cookies: A woman adds flour. Mix well. Then she",
                  "choices": ["stirs it.", " eats."], "gold": 0}
    try:
        from lm_eval.tasks.hellaswag.utils import preprocess
    except ImportError:
        preprocess = None
    if preprocess is not None:
        assert hs["choices"] == [preprocess("stirs  it."), preprocess("[header] eats.")]
    arc = _map_arc({"question": "Q?", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "B"})
    assert arc == {"query": "Question: Q?", "choices": ["a", "b"], "gold": 1}
    copa = _map_copa({"premise": "The man turned on the faucet.", "choice1": "The toilet filled.",
                      "choice2": "Water flowed.", "question": "effect", "label": 1})
    assert copa["query"] == "The man turned on the faucet, therefore"
    assert copa["choices"] == ["the toilet filled.", "water flowed."]


@pytest.mark.skipif(not (SHARED / "mmlu" / "dev.jsonl").exists(), reason=f"shared data not present at {SHARED}")
def test_mmlu_prompt_is_lm_eval_prompt():
    rows = [json.loads(x) for x in (SHARED / "mmlu" / "dev.jsonl").read_text().split("\n")[:6]]
    p = mmlu_prompt(rows[4], rows[:2])
    assert p.startswith("The following are multiple choice questions (with answers) about abstract algebra.\n\n")
    assert p.count("\nAnswer:") == 3
    assert "\nAnswer: B\n\n" in p  # dev answer 1 → B
    assert p.endswith("\nD. " + rows[4]["choices"][3] + "\nAnswer:")


# ------------------------------------------------------------------------------ GSM8K
@pytest.mark.parametrize(
    "text,strict,flexible",
    [
        ("She makes 9 * 2 = $18.\n#### 18", "18", "18"),
        ("The answer is 1,234.", "[invalid]", "1,234."),
        ("#### -3.5 and later 7", "-3.5", "7"),
        ("no numbers here", "[invalid]", "[invalid]"),
        ("It costs $5 then 12 more", "[invalid]", "12"),
    ],
)
def test_gsm8k_extraction(text, strict, flexible):
    assert extract_strict(text) == strict
    assert extract_flexible(text) == flexible


def test_gsm8k_extraction_matches_lm_eval_filters():
    ext = pytest.importorskip("lm_eval.filters.extraction")
    texts = ["a 12 b 1,000.\n#### 1,000", "x $3.50 y", "#### 7", "none", "-4 and 5.", "2 3 4"]
    strict = ext.RegexFilter(r"#### (\-?[0-9\.\,]+)").apply([[t] for t in texts], None)
    flex = ext.RegexFilter(r"(-?[$0-9.,]{2,})|(-?[0-9]+)", group_select=-1).apply([[t] for t in texts], None)
    assert [s[0] for s in strict] == [extract_strict(t) for t in texts]
    assert [s[0] for s in flex] == [extract_flexible(t) for t in texts]


def test_gsm8k_exact_match_normalisation():
    ref = "Janet sells 9 eggs.\n#### 1,800"
    assert gsm8k_exact_match("1800", ref) == 1.0
    assert gsm8k_exact_match("$1,800.", ref) == 1.0
    assert gsm8k_exact_match("[invalid]", ref) == 0.0
    assert gsm8k_exact_match("180", ref) == 0.0


def test_gsm8k_task_end_to_end(tmp_path):
    (tmp_path / "gsm8k").mkdir()
    rows = [{"question": "1+1?", "answer": "1+1=2\n#### 2"}, {"question": "2+3?", "answer": "#### 5"}]
    (tmp_path / "gsm8k" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    gens = {
        "Question: 1+1?\nAnswer:": " 1+1=2\n#### 2\n\nQuestion: next",
        "Question: 2+3?\nAnswer:": " It is 5 maybe 6",
    }
    score = get_task("gsm8k", data_dir=str(tmp_path)).evaluate(TableBackend(gens=gens), limit=None, seed=0)
    assert score.metrics["exact_match_strict"] == 0.5
    assert score.metrics["exact_match_flexible"] == 0.5
    assert score.samples[0]["generation"] == " 1+1=2\n#### 2\n\n"
    assert score.samples[1]["flexible"] == "6"


def test_cut_at_stop():
    assert cut_at_stop("abc\n\nQuestion: x", ["Question:", "\n\n"]) == "abc"
    assert cut_at_stop("abc", ["Question:"]) == "abc"


# ------------------------------------------------------------------------------ SQuAD
def test_squad_f1_em():
    assert squad_exact("The Eiffel Tower!", "eiffel tower") == 1.0
    # "the" is dropped: 4 predicted tokens, 1 shared → P=1/4, R=1, F1=0.4
    assert squad_f1("in the city of Paris", "Paris") == pytest.approx(0.4)
    assert squad_f1("Berlin", "Paris") == 0.0
    assert squad_f1("", "") == 1.0


def test_squad_task(tmp_path):
    f = tmp_path / "qa.jsonl"
    f.write_text(
        json.dumps({"context": "Paris is in France.", "question": "Where is Paris?", "answers": {"text": ["France", "in France"]}}) + "\n"
        + json.dumps({"context": "Bob is 3.", "question": "Age?", "answers": ["3"]}) + "\n"
    )
    gens = {
        "Context: Paris is in France.\nQuestion: Where is Paris?\nAnswer:": " France.\nMore",
        "Context: Bob is 3.\nQuestion: Age?\nAnswer:": " three years",
    }
    score = get_task("squad", path=str(f)).evaluate(TableBackend(gens=gens), limit=None, seed=0)
    assert score.metrics["exact_match"] == 0.5
    assert score.metrics["f1"] == 0.5
    assert score.samples[0]["prediction"] == "France."


def test_jsonl_generative(tmp_path):
    f = tmp_path / "gen.jsonl"
    f.write_text(json.dumps({"prompt": "Capital of France:", "answer": "Paris"}) + "\n")
    score = get_task("jsonl_gen", path=str(f)).evaluate(TableBackend(gens={"Capital of France:": " Paris\n"}), limit=None, seed=0)
    assert score.metrics == {"exact_match": 1.0, "f1": 1.0}


# ---------------------------------------------------------------------------- perplexity
class RollingBackend(TableBackend):
    def loglikelihood_rolling(self, texts, *, max_length=None):
        # -1 nat per byte
        return [LogLik(-float(len(t.encode())), False, len(t)) for t in texts]


def test_perplexity_math(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("one two three\n\nfour five six seven")
    score = get_task("perplexity", path=str(f), doc_chars=1).evaluate(RollingBackend(), limit=None, seed=0)
    nbytes = len("one two three") + len("four five six seven")
    assert score.n_items == 2
    assert score.metrics["byte_perplexity"] == pytest.approx(math.e)
    assert score.metrics["bits_per_byte"] == pytest.approx(1 / math.log(2))
    assert score.metrics["word_perplexity"] == pytest.approx(math.exp(nbytes / 7))
    assert score.stderr["bits_per_byte"] == pytest.approx(0.0)
    one = get_task("perplexity", path=str(f), doc_chars=1).evaluate(RollingBackend(), limit=1, seed=0)
    assert one.n_items == 1


@pytest.mark.parametrize(("device", "setting", "expect_batches"),
                         [("cpu", None, [5]), ("cuda:0", None, [5]), ("cpu", "auto", [5]), ("cpu", 2, [2, 2, 1]),
                          ("cuda:0", 1, [1, 1, 1, 1, 1])])  # fmt: skip
def test_generation_batches_follow_the_eval_batch_and_keep_input_order(device, setting, expect_batches):
    """Generation batches: ``--score-batch-size`` N (the eval batch setting), else the default
    (16 on every device); length-sorted batches, results in input order; a batch of 1 runs the
    prompts in input order."""
    from e3bench.evals.tasks.generative import generate_texts

    prompts = ["a", "ccc", "bb", "eeeee", "dddd"]
    back = TableBackend(gens={p: f" out-{p}\n\nQuestion: x" for p in prompts})
    back.device = device
    back.score_batch_size = setting
    sizes, lengths = [], []
    real = back.generate

    def spy(batch, params):
        sizes.append(len(batch))
        lengths.extend(len(p) for p in batch)
        return real(batch, params)

    back.generate = spy
    out, _ = generate_texts(back, prompts, max_new_tokens=8, stop=["Question:"])
    assert out == [f" out-{p}\n\n" for p in prompts]  # cut at the stop, in input order
    assert sizes == expect_batches
    if len(expect_batches) < len(prompts):
        assert lengths == sorted(lengths, reverse=True)  # longest first: least padding
    else:
        assert lengths == [len(p) for p in prompts]
    assert generate_texts(back, prompts, max_new_tokens=8, stop=[], batch_size=2)[0] == [
        f" out-{p}\n\nQuestion: x" for p in prompts
    ]
