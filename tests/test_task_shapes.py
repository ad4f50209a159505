"""The task shapes beyond plain multiple choice: single continuation (LAMBADA), partial context
(WinoGrande), and the named tasks that read hub schemas (PIQA, SIQA, CommonsenseQA, SuperGLUE).

Metric math on crafted items; the requests every new task sends are lm-eval's own, item by item
(lm-eval's task YAMLs build theirs, no model needed); hub-schema rows read locally are mapped.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import ClassVar

import pytest

from e3bench.core.api import Capabilities, LogLik
from e3bench.core.errors import E3Error
from e3bench.evals.tasks import get_task, task_names
from e3bench.evals.tasks.base import bootstrap_stderr, mean_stderr
from e3bench.evals.tasks.metrics import macro_f1

from conftest import SHARED_DATA  # noqa: E402

SHARED = Path(os.environ.get("E3BENCH_DATA_DIR") or SHARED_DATA)
NEW = ["lambada_openai", "winogrande", "piqa", "arc_challenge", "siqa", "commonsense_qa", "rte", "cb", "wic", "wsc"]


class Recorder:
    """Log-likelihoods from a table {(context, continuation): (logprob, is_greedy)} (default
    (-100, False)); records every request."""

    name: ClassVar[str] = "recorder"
    capabilities: ClassVar[Capabilities] = Capabilities(
        devices=frozenset({"cpu"}), precisions=frozenset({"fp32"}),
        architectures=frozenset({"decoder-only"}), loglikelihood=True,
    )  # fmt: skip
    architecture = "decoder-only"

    def __init__(self, table=None):
        self.table = table or {}
        self.requests: list[tuple[str, str]] = []

    def loglikelihood(self, requests):
        self.requests += list(requests)
        return [LogLik(*self.table.get(r, (-100.0, False)), 1) for r in requests]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_new_tasks_are_registered():
    names = set(task_names())
    assert set(NEW) | {"jsonl_cont", "jsonl_partial"} <= names
    assert get_task("social_iqa").name == "siqa" and get_task("sglue_rte").name == "rte"


def test_single_continuation_acc_is_greedy_match_and_perplexity_per_item(tmp_path):
    f = _jsonl(tmp_path / "lambada_openai" / "test.jsonl", [
        {"context": "the cat sat on the", "continuation": "mat"},
        {"context": "one two", "continuation": "three"},
        {"context": "a b", "continuation": "c"},
    ])  # fmt: skip
    be = Recorder({("the cat sat on the", " mat"): (-1.0, True), ("one two", " three"): (-2.0, False),
                   ("a b", " c"): (-6.0, True)})  # fmt: skip
    score = get_task("lambada_openai", data_dir=str(f.parent.parent)).evaluate(be)
    assert be.requests == [("the cat sat on the", " mat"), ("one two", " three"), ("a b", " c")]
    assert score.metrics["acc"] == pytest.approx(2 / 3)
    assert score.metrics["perplexity"] == pytest.approx(math.exp(3.0))  # exp(-mean(-1, -2, -6))
    assert score.stderr["perplexity"] == pytest.approx(math.exp(3.0) * mean_stderr([-1.0, -2.0, -6.0]))
    assert score.stderr["acc"] == pytest.approx(mean_stderr([1.0, 0.0, 1.0]))
    assert [s["acc"] for s in score.samples] == [1.0, 0.0, 1.0]
    assert set(score.metrics) == {"acc", "perplexity"}


def test_partial_context_scores_one_continuation_after_each_option(tmp_path):
    rows = [{"context_options": ["Sarah was better than Maria so Sarah", "Sarah was better than Maria so Maria"],
             "continuation": "got the easy cases.", "gold": 1},
            {"context_options": ["x A", "x B"], "continuation": "end.", "gold": 0}]  # fmt: skip
    f = _jsonl(tmp_path / "winogrande" / "test.jsonl", rows)
    be = Recorder({("Sarah was better than Maria so Maria", " got the easy cases."): (-3.0, False),
                   ("Sarah was better than Maria so Sarah", " got the easy cases."): (-4.0, False),
                   ("x A", " end."): (-5.0, False), ("x B", " end."): (-5.0, False)})  # fmt: skip
    score = get_task("winogrande", data_dir=str(f.parent.parent)).evaluate(be)
    assert be.requests[:2] == [(rows[0]["context_options"][0], " got the easy cases."),
                               (rows[0]["context_options"][1], " got the easy cases.")]  # fmt: skip
    assert [s["pred"] for s in score.samples] == [1, 0]  # a tie goes to the first option, as np.argmax
    assert score.metrics == {"acc": 1.0} and score.n_items == 2


def test_partial_context_bad_rows_name_file_and_line(tmp_path):
    f = _jsonl(tmp_path / "p.jsonl", [{"context_options": ["a", "b"], "continuation": "c", "gold": 0},
                                      {"context_options": ["a", "b"], "continuation": "c", "gold": 2}])  # fmt: skip
    with pytest.raises(E3Error, match=r"p.jsonl:2: 'gold' = 2 is not an index"):
        get_task("jsonl_partial", path=str(f)).evaluate(Recorder())
    g = _jsonl(tmp_path / "c.jsonl", [{"context": "a"}])
    with pytest.raises(E3Error, match=r"c.jsonl:1: missing field 'continuation'"):
        get_task("jsonl_cont", path=str(g)).evaluate(Recorder())


def test_cb_f1_is_lm_eval_macro_f1():
    pytest.importorskip("sklearn")
    pytest.importorskip("lm_eval")
    from lm_eval.tasks.super_glue.cb.aggregate import cb_multi_fi

    cases = [([0, 1, 2, 0, 1], [0, 1, 1, 0, 2]), ([0, 0, 1, 1], [0, 0, 0, 0]), ([2, 2, 2], [2, 2, 2]),
             ([0, 1, 0, 1, 0, 1, 2], [1, 1, 0, 0, 2, 2, 2])]  # fmt: skip
    for golds, preds in cases:
        assert macro_f1(golds, preds, 3) == pytest.approx(float(cb_multi_fi(list(zip(preds, golds))))), (golds, preds)


def test_cb_reports_acc_and_f1_with_a_bootstrap_stderr(tmp_path):
    rows = [{"premise": f"P{i}.", "hypothesis": f"h{i}", "label": g} for i, g in enumerate([0, 1, 2, 0])]
    f = _jsonl(tmp_path / "cb" / "test.jsonl", rows)
    prompt = "P{i}.\nQuestion: h{i}. True, False, or Neither?\nAnswer:"
    picks = [0, 1, 1, 0]  # the model's answers
    table = {(prompt.format(i=i), " " + ["True", "False", "Neither"][p]): (-1.0, False) for i, p in enumerate(picks)}
    score = get_task("cb", data_dir=str(f.parent.parent)).evaluate(Recorder(table))
    assert set(score.metrics) == {"acc", "f1"}
    assert score.metrics["acc"] == 0.75
    assert score.metrics["f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    pairs = [(0, 0), (1, 1), (2, 1), (0, 0)]
    assert score.stderr["f1"] == pytest.approx(
        bootstrap_stderr(lambda ps: macro_f1([g for g, _ in ps], [p for _, p in ps], 3), pairs)
    )
    assert 0 < score.stderr["f1"] < 1


def test_hub_schema_rows_in_the_data_dir_are_mapped(tmp_path):
    """A ``datasets`` export (hub schema) and e3bench's schema of the same item give one prompt."""
    _jsonl(tmp_path / "hub" / "piqa" / "test.jsonl", [{"goal": "Open a jar", "sol1": "twist", "sol2": "cut", "label": 0}])
    _jsonl(tmp_path / "e3" / "piqa" / "test.jsonl", [{"query": "Question: Open a jar\n", "choices": ["twist", "cut"], "gold": 0}])
    seen = []
    for d in ("hub", "e3"):
        be = Recorder()
        get_task("piqa", data_dir=str(tmp_path / d)).evaluate(be)
        seen.append(be.requests)
    assert seen[0] == seen[1] == [("Question: Open a jar\nAnswer:", " twist"), ("Question: Open a jar\nAnswer:", " cut")]


def test_metrics_are_the_ones_lm_eval_reports(tmp_path):
    expect = {"piqa": {"acc", "acc_norm"}, "arc_challenge": {"acc", "acc_norm"}, "siqa": {"acc"},
              "commonsense_qa": {"acc"}, "rte": {"acc"}, "wic": {"acc"}, "wsc": {"acc"}}  # fmt: skip
    from fakes.lmeval_local import HUB_FIXTURES

    for name, metrics in expect.items():
        d = HUB_FIXTURES if (HUB_FIXTURES / name).is_dir() else SHARED
        if not (d / name).is_dir():
            pytest.skip(f"no data for {name} at {d}")
        assert set(get_task(name, data_dir=str(d)).evaluate(Recorder(), limit=3).metrics) == metrics, name


@pytest.mark.skipif(not (SHARED / "winogrande" / "test.jsonl").exists(), reason=f"shared data not present at {SHARED}")
def test_requests_are_lm_eval_own_tasks_item_by_item(tmp_path, monkeypatch):
    """lm-eval's own task YAMLs (its prompts and ``!function`` helpers) build, for the first 300
    items of every local copy and every hub fixture item, exactly the requests e3bench sends."""
    pytest.importorskip("lm_eval")
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks._yaml_loader import load_yaml  # one YAML, without indexing lm-eval's catalogue

    from fakes.lmeval_local import own_task_data, write_own_task

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))
    own = own_task_data(SHARED, tmp_path / "own", 300)
    yamls = tmp_path / "yamls"
    yamls.mkdir()
    for name, (e3_dir, hub) in own.items():
        write_own_task(yamls, f"e3_{name}", hub, name)
        task = ConfigurableTask(config=load_yaml(yamls / f"e3_{name}.yaml"))
        task.build_all_requests(rank=0, world_size=1)
        theirs = [tuple(i.arguments) for i in sorted(task.instances, key=lambda i: (i.doc_id, i.idx))]
        be = Recorder()
        get_task(name, data_dir=str(e3_dir)).evaluate(be)
        assert len(be.requests) == len(theirs), name
        diff = [k for k, (a, b) in enumerate(zip(be.requests, theirs)) if a != b]
        assert not diff, f"{name}: request {diff[0]} differs: {be.requests[diff[0]]!r} vs {theirs[diff[0]]!r}"


def test_file_tasks_of_the_new_shapes_are_recorded_under_their_file(tmp_path):
    import hashlib

    c = _jsonl(tmp_path / "cloze.jsonl", [{"context": "a b", "continuation": "c"}])
    p = _jsonl(tmp_path / "wino.jsonl", [{"context_options": ["x A", "x B"], "continuation": "end.", "gold": 0}])
    sc = get_task("jsonl_cont", path=str(c)).evaluate(Recorder())
    sp = get_task("jsonl_partial", path=str(p), label="mine").evaluate(Recorder())
    assert (sc.task, sp.task) == ("jsonl_cont[cloze]", "mine")
    assert sc.data_source == str(c) and sc.data_sha256 == hashlib.sha256(c.read_bytes()).hexdigest()
    assert sp.data_source == str(p) and sp.details["task"] == "jsonl_partial"
