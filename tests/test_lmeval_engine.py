"""``--engine lm-eval`` inside a run: per-task windows, metrics and standard errors, options.

lm-eval runs its own task pipeline (local task YAMLs over tiny JSONL files, fully offline) on a
deterministic backend whose every log-likelihood request takes a known time, so each task's
duration is known to be its own.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

from e3bench.backends.tokenization import generation_context
from e3bench.core.api import Generation, LogLik
from e3bench.core.errors import E3Error

pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install 'e3bench[lmeval]')")

from e3bench.evals import lmeval_engine  # noqa: E402
from e3bench.evals.lmeval_engine import run_lm_eval  # noqa: E402

REQUEST_S = 0.2  # every log-likelihood request of the timed fake takes this long

_MC = """\
task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {file}
test_split: test
fewshot_split: test
output_type: multiple_choice
doc_to_text: "Q: {{{{query}}}}\\nA:"
doc_to_choice: choices
doc_to_target: gold
metric_list:
  - metric: acc
"""
_GEN = """\
task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {file}
test_split: test
output_type: generate_until
doc_to_text: "{{{{prompt}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 4
metric_list:
  - metric: exact_match
"""
_GROUP = """\
group: e3t_both
task: [e3t_a, e3t_b]
aggregate_metric_list:
  - metric: acc
    weight_by_size: true
"""


class CharTok:
    """One token per character; BOS is token 1 and is added by default."""

    bos_token = None

    def encode(self, text, add_special_tokens=True):
        return ([1] if add_special_tokens else []) + [ord(c) for c in text]


class Slow:
    """Log-likelihood = −(choice length); each request sleeps ``request_s``. Generation
    answers "4"; contexts are built by e3bench's ``generation_context`` with a 24-token limit."""

    name = "slow"
    architecture = "decoder-only"
    device = "cpu"

    def __init__(self, request_s: float = 0.0):
        self.request_s = request_s
        self.contexts: list[str] = []

    def loglikelihood(self, requests):
        out = []
        for ctx, cont in requests:
            self.contexts.append(ctx)
            time.sleep(self.request_s)
            out.append(LogLik(-float(len(cont)), False, len(cont)))
        return out

    def loglikelihood_rolling(self, texts):
        return [LogLik(-1.0, False, 1) for _ in texts]

    def encode_context(self, text, *, max_new_tokens):
        return generation_context(CharTok(), text, max_length=24, max_new_tokens=max_new_tokens)

    def generate(self, prompts, params):
        return [Generation([52], "4") for _ in prompts]

    def synchronize(self):
        return None


def _rows(n: int) -> list[dict]:
    # the shortest choice always wins; gold alternates, so acc = 1, 0, 1, 0, ...
    return [{"query": f"q{i}", "choices": ["a", "bbb"], "gold": i % 2} for i in range(n)]


@pytest.fixture(scope="module")
def yamls(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lmeval")
    files = {"e3t_a": _rows(2), "e3t_b": _rows(6)}
    for name, rows in files.items():
        f = root / f"{name}.jsonl"
        f.write_text("".join(json.dumps(r) + "\n" for r in rows))
        (root / "yamls").mkdir(exist_ok=True)
        (root / "yamls" / f"{name}.yaml").write_text(_MC.format(name=name, file=f))
    gen = root / "gen.jsonl"
    gen.write_text(json.dumps({"prompt": "2+2=", "answer": "4"}) + "\n"
                   + json.dumps({"prompt": "what is two plus two, said in words? ", "answer": "4"}) + "\n")  # fmt: skip
    (root / "yamls" / "e3t_gen.yaml").write_text(_GEN.format(name="e3t_gen", file=gen))
    (root / "yamls" / "e3t_both.yaml").write_text(_GROUP)
    return root / "yamls"


@pytest.fixture(autouse=True)
def _offline_datasets(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path_factory.getbasetemp() / "hf-datasets"))


def _run(yamls, tasks, tmp_path, request_s=0.0, **kw):
    from e3bench.config.run import build_config
    from e3bench.energy.window import MeteredWindow
    from e3bench.evals.engine import run_tasks

    cfg = build_config(overrides=dict(engine="lm-eval", tasks=",".join(tasks), include_path=str(yamls), meter="none",
                                      idle_seconds=0, output_dir=str(tmp_path), **kw))  # fmt: skip
    backend = Slow(request_s)
    return run_tasks(backend, MeteredWindow.create("none"), cfg, run_id="r1"), backend


# ------------------------------------------------------------------ 10: time, metrics, stderr
def test_each_task_gets_its_own_window_time_and_rate(yamls, tmp_path):
    results, _ = _run(yamls, ["e3t_a", "e3t_b"], tmp_path, request_s=REQUEST_S)
    by = {r.task: r for r in results}
    a, b = by["e3t_a"], by["e3t_b"]
    # a: 2 items × 2 choices = 4 requests; b: 12 requests (REQUEST_S each), plus lm-eval's own
    # overhead per task (well under 4 requests). One window for both would give each ≥ 16.
    assert 4 * REQUEST_S <= a.duration_s < 8 * REQUEST_S
    assert 12 * REQUEST_S <= b.duration_s < 16 * REQUEST_S
    for r, n in ((a, 2), (b, 6)):
        assert r.n_items == n and r.duration_basis == "the task's own metered window"
        assert r.examples_per_s == pytest.approx(n / r.duration_s)
        assert "timing_note" not in r.details


def test_metrics_are_metrics_and_stderrs_are_lm_evals_closed_form(yamls, tmp_path):
    results, _ = _run(yamls, ["e3t_b"], tmp_path, log_samples=True)
    (b,) = results
    assert set(b.metrics) == {"acc"}  # no sample_len, alias or name
    accs = [json.loads(line)["acc"] for line in Path(b.samples_file).read_text().splitlines()]
    assert accs == [1.0, 0.0] * 3 and b.metrics["acc"] == pytest.approx(0.5)
    mu = sum(accs) / len(accs)
    want = math.sqrt(sum((x - mu) ** 2 for x in accs) / (len(accs) - 1)) / math.sqrt(len(accs))
    assert b.stderr == {"acc": pytest.approx(want)}  # mean_stderr, no bootstrap
    assert "no bootstrap" in b.details["stderr"]


def test_a_groups_subtasks_share_its_window_apportioned_and_labelled(yamls, tmp_path):
    results, _ = _run(yamls, ["e3t_both"], tmp_path)
    by = {r.task: r for r in results}
    group, a, b = by["e3t_both"], by["e3t_a"], by["e3t_b"]
    assert group.n_items == 8 and group.energy is not None
    assert group.duration_basis == "the task's own metered window"
    assert a.duration_s + b.duration_s == pytest.approx(group.duration_s)
    assert a.duration_s == pytest.approx(group.duration_s * 2 / 8)
    assert "apportioned" in a.duration_basis and a.energy is None
    # the pooled (size-weighted) stderr lm-eval gives a group from its subtasks' closed forms
    assert "acc" in group.stderr and group.stderr["acc"] > 0


def test_truncated_generation_contexts_are_counted(yamls, tmp_path):
    results, _ = _run(yamls, ["e3t_gen"], tmp_path)
    (g,) = results
    assert g.truncated_items == 1 and g.n_items == 2
    assert g.metrics == {"exact_match": 1.0}


# --------------------------------------------------------------------------- 17: options
def test_num_fewshot_and_include_path_reach_lm_eval(yamls, tmp_path):
    results, backend = _run(yamls, ["e3t_a"], tmp_path, num_fewshot=1)
    (a,) = results
    assert a.details["num_fewshot"] == 1
    assert all(c.count("Q: ") == 2 for c in backend.contexts)  # one solved example + the question


def test_the_task_index_is_built_once_per_process(yamls, monkeypatch):
    import lm_eval.tasks

    built = []
    real = lm_eval.tasks.TaskManager

    def counting(*args, **kwargs):
        built.append(kwargs.get("include_path"))
        return real(*args, **kwargs)

    monkeypatch.setattr(lm_eval.tasks, "TaskManager", counting)
    monkeypatch.setattr(lmeval_engine, "_TASK_MANAGERS", {})
    for _ in range(2):
        run_lm_eval(Slow(), ["e3t_a"], include_path=str(yamls), limit=1)
    assert len(built) == 1
    # an edited task folder is indexed again
    extra = yamls / "e3t_c.yaml"
    extra.write_text((yamls / "e3t_a.yaml").read_text().replace("task: e3t_a", "task: e3t_c"))
    try:
        run_lm_eval(Slow(), ["e3t_c"], include_path=str(yamls), limit=1)
    finally:
        extra.unlink()
    assert len(built) == 2


def test_options_are_checked_when_the_config_is_built(tmp_path):
    from e3bench.config.run import RunConfig, build_config
    from e3bench.config.validate import ConfigError

    with pytest.raises(ConfigError) as info:
        build_config(overrides=dict(num_fewshot=2, include_path=str(tmp_path)))
    lines = info.value.one_lines()
    assert any(line.startswith("--num-fewshot: ") and "lm-eval only" in line for line in lines)
    assert any(line.startswith("--include-path: ") for line in lines)
    with pytest.raises(ConfigError, match="is not a folder"):
        build_config(overrides=dict(engine="lm-eval", include_path=str(tmp_path / "nope")), runnable=True)
    with pytest.raises(ConfigError, match="must be ≥ 0"):
        build_config(overrides=dict(engine="lm-eval", num_fewshot=-1))
    cfg = build_config(overrides=dict(engine="lm-eval", tasks="hellaswag", num_fewshot=0, include_path=str(tmp_path)))
    assert (cfg.num_fewshot, cfg.include_path) == (0, str(tmp_path))
    # unset, they leave a run's identity (and hash) as before they existed
    assert "num_fewshot" not in RunConfig().identity() and "num_fewshot" in cfg.identity()
    assert RunConfig().config_hash() == "feb81a77eed5268d"


def test_run_flags_exist():
    from e3bench.cli.run import _field_params

    flags = {p.name: p.default.param_decls for p in _field_params()}
    assert flags["num_fewshot"][0] == "--num-fewshot" and flags["include_path"][0] == "--include-path"


def test_unknown_lm_eval_task_fails_before_the_model_loads(yamls, tmp_path):
    from e3bench.bench.runner import run_one
    from e3bench.config.run import build_config
    from fakes.testing import FakeBackend

    cfg = build_config(overrides=dict(engine="lm-eval", tasks="e3t_aa", include_path=str(yamls), meter="none",
                                      idle_seconds=0, output_dir=str(tmp_path)))  # fmt: skip
    fake = FakeBackend()
    with pytest.raises(E3Error, match="did you mean e3t_a"):
        run_one(cfg, backend=fake)
    assert fake.loaded is None


def test_to_task_scores_keeps_metrics_only():
    """lm-eval 0.4.13's per-task dict carries bookkeeping beside the metrics."""
    from e3bench.evals.lmeval_engine import to_task_scores

    res = {"results": {"t": {"name": "t", "alias": "t", "sample_len": 4, "acc,none": 0.5, "acc_stderr,none": 0.25,
                             "f1,none": 0.4, "f1_stderr,none": "N/A"}},
           "configs": {"t": {"output_type": "multiple_choice"}}, "n-samples": {}}  # fmt: skip
    (s,) = to_task_scores(res)
    assert s.metrics == {"acc": 0.5, "f1": 0.4} and s.stderr == {"acc": 0.25}
    assert s.n_items == 4 and s.truncated_items is None


@pytest.mark.parametrize("kind", ["function_tag", "py_file"])
def test_an_include_path_with_code_needs_trust_remote_code(tmp_path, kind):
    """lm-eval imports ``!function`` modules (and a folder's .py files) from --include-path: that
    code must not run unless the user says --trust-remote-code (it ran, writing a marker)."""
    from e3bench.config.run import build_config
    from e3bench.config.validate import ConfigError

    inc = tmp_path / "inc"
    inc.mkdir()
    yaml = "task: evil_task\ndataset_path: json\noutput_type: multiple_choice\n"
    if kind == "function_tag":
        yaml += "process_docs: !function evil.process\n"
    (inc / "evil.yaml").write_text(yaml)
    (inc / ("evil.py" if kind == "py_file" else "README")).write_text("open('marker','w')\n")
    over = dict(engine="lm-eval", tasks="hellaswag", include_path=str(inc))
    with pytest.raises(ConfigError, match="Python code that lm-eval would run") as info:
        build_config(overrides=over, runnable=True)
    want = "evil.py" if kind == "py_file" else "evil.yaml: !function"
    assert any(line.startswith("--include-path: ") and want in line and "--trust-remote-code" in line
               for line in info.value.one_lines())
    cfg = build_config(overrides={**over, "trust_remote_code": True}, runnable=True)
    assert cfg.include_path == str(inc)


def test_lm_evals_own_progress_bars_do_not_leak(yamls, tmp_path, capfd):
    """lm-eval draws tqdm bars ("Building contexts ...: 100%|####| 6/6") and datasets' "Map"/
    "Generating split" bars on stderr, between and over e3bench's; ours count the requests."""
    from fakes.progress import RecordingReporter

    from e3bench.config.run import build_config
    from e3bench.energy.window import MeteredWindow
    from e3bench.evals.engine import run_tasks

    cfg = build_config(overrides=dict(engine="lm-eval", tasks="e3t_b", include_path=str(yamls), meter="none",
                                      idle_seconds=0, output_dir=str(tmp_path)))  # fmt: skip
    capfd.readouterr()
    rec = RecordingReporter()
    (res,) = run_tasks(Slow(0.0), MeteredWindow.create("none"), cfg, run_id="r1", progress=rec)
    err = capfd.readouterr().err
    assert res.n_items == 6
    assert "%|" not in err and "it/s" not in err, err  # no tqdm bar
    (st,) = rec.named("lm-eval task e3t_b")
    assert st.completed == st.total == 12 and st.unit == "requests"  # ours: 6 items x 2 choices


# ------------------------------------------------------------------ 18: batched generate_until
class Batches(Slow):
    """Records each generate call's prompts and parameters; answers each prompt's length."""

    score_batch_size = 4

    def __init__(self):
        super().__init__()
        self.calls = []

    def generate(self, prompts, params):
        self.calls.append(([len(p) for p in prompts], params.do_sample, params.stop))
        return [Generation([52], f"len{len(p)}\nrest") for p in prompts]


def test_greedy_generate_until_requests_go_to_the_backend_in_batches():
    """lm-eval's generate_until sent one prompt per backend call; greedy requests with the same
    stop strings and token limit now go in length-sorted batches of the eval batch setting, sampled
    ones alone, and every answer comes back at its request's place, cut at its stop."""
    from lm_eval.api.instance import Instance

    back = Batches()
    lm = lmeval_engine.make_lm(back)
    greedy = {"until": ["\n"], "max_gen_toks": 4}
    prompts = ["a", "bbbbb", "cc", "dddd", "eee"]
    reqs = [Instance("generate_until", {}, (p, greedy), i) for i, p in enumerate(prompts)]
    reqs.insert(2, Instance("generate_until", {}, ("sampled", {"until": ["\n"], "do_sample": True, "temperature": 0.7, "max_gen_toks": 4}), 9))
    reqs.append(Instance("generate_until", {}, ("zz", {"until": ["r"], "max_gen_toks": 4}), 10))
    out = lm.generate_until(reqs)
    lengths = [len(CharTok().encode(r.args[0])) for r in reqs]
    assert out == [f"len{n}" if r.args[1]["until"] == ["\n"] else f"len{n}\n" for n, r in zip(lengths, reqs)]
    assert [c[0] for c in back.calls] == [[6, 5, 4, 3], [2], [3], [8]]  # longest first; "zz" alone (other stop)
    assert [c[1] for c in back.calls] == [False, False, False, True]
    assert back.calls[1][2] == ("\n",) and back.calls[2][2] == ("r",)
