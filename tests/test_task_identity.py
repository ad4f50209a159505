"""Tasks over users' files keep distinct names, data provenance and samples files in one run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from e3bench.core.errors import E3Error


def _files(tmp_path: Path) -> dict[str, Path]:
    out = {}
    for sub in ("a", "b"):
        d = tmp_path / sub
        d.mkdir()
        out[f"mc_{sub}"] = d / "test.jsonl"
        out[f"mc_{sub}"].write_text(json.dumps({"query": f"Pick {sub}", "choices": ["a", "bbb"], "gold": 0}) + "\n")
    out["gen"] = tmp_path / "qa.jsonl"
    out["gen"].write_text(json.dumps({"prompt": "Q: hi\nA:", "answer": "x"}) + "\n")
    out["squad"] = tmp_path / "squad_dev.jsonl"
    out["squad"].write_text(json.dumps({"context": "c", "question": "q", "answers": ["x"]}) + "\n")
    out["gen2"] = tmp_path / "other.jsonl"
    out["gen2"].write_text(json.dumps({"prompt": "Q: ho\nA:", "answer": "y"}) + "\n")
    return out


def test_file_tasks_in_one_run_have_distinct_names_sources_and_samples(tmp_path):
    from e3bench.bench.runner import run_one
    from e3bench.config.run import build_config
    from fakes.testing import FakeBackend

    f = _files(tmp_path)
    tasks = [f"jsonl_mc:path={f['mc_a']}", f"jsonl_mc:path={f['mc_b']}", f"jsonl_gen:path={f['gen']}",
             f"jsonl_gen:path={f['gen2']},label=second", f"squad:path={f['squad']}"]  # fmt: skip
    cfg = build_config(overrides=dict(
        batch_sizes="1", max_new_tokens=2, prompt_tokens=4, warmup_iters=0, min_iters=1, min_seconds=0.0,
        meter="none", idle_seconds=0, tasks=",".join(tasks), log_samples=True, output_dir=str(tmp_path / "out"),
    ))  # fmt: skip
    rec = run_one(cfg, backend=FakeBackend())
    names = [t.task for t in rec.effectiveness]
    # same file stem twice ("test"): the second gets #2; a label wins over the stem
    assert names == ["jsonl_mc[test]", "jsonl_mc[test]#2", "jsonl_gen[qa]", "second", "squad[squad_dev]"]
    files = [t.samples_file for t in rec.effectiveness]
    assert len(set(files)) == 5 and all(Path(p).is_file() for p in files)
    queries = [json.loads(Path(p).read_text().splitlines()[0]).get("context") for p in files[:2]]
    assert queries == ["Pick a", "Pick b"]  # each file holds its own task's items
    for t, key in zip(rec.effectiveness, ("mc_a", "mc_b", "gen", "gen2", "squad"), strict=True):
        assert t.data_source == str(f[key])
        assert t.data_sha256 == hashlib.sha256(f[key].read_bytes()).hexdigest()
        assert t.details["task"] in ("jsonl_mc", "jsonl_gen", "squad")
    assert rec.effectiveness[1].details["requested_as"] == "jsonl_mc[test]"
    assert [t.truncated_items for t in rec.effectiveness] == [None, None, 0, 0, 0]


def test_an_empty_label_is_refused(tmp_path):
    from e3bench.evals.tasks import get_task

    f = _files(tmp_path)
    with pytest.raises(E3Error, match="label is empty"):
        get_task("jsonl_gen", path=str(f["gen"]), label=" ")
    assert get_task("jsonl_mc", path=str(f["mc_a"]), label=7).label == "7"
