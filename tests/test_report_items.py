"""One pairing rule for item-by-item comparisons: the report's variants and ``e3bench compare``
pair two runs' samples only when they scored the same items (report/items.py)."""

import json

from e3bench.report.compare import TaskScore
from e3bench.report.items import item_stats, paired_problem, read_items
from e3bench.report.variants import compare_tasks as _task


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _rows(questions, correct):
    return [{"doc_id": i, "question": q, "acc": float(c)} for i, (q, c) in enumerate(zip(questions, correct))]


def test_variants_do_not_pair_samples_of_other_items(tmp_path):
    # same doc_ids, other questions (another seed or data file): a paired test would be wrong
    ref = _write(tmp_path / "ref.jsonl", _rows([f"q{i}" for i in range(20)], [1] * 20))
    var = _write(tmp_path / "var.jsonl", _rows([f"other{i}" for i in range(20)], [1] * 10 + [0] * 10))
    a = TaskScore("t", "acc", 1.0, 0.0, 20, [ref])
    b = TaskScore("t", "acc", 0.5, 0.115, 20, [var])
    assert _task(a, b).paired is False


def test_variants_pair_samples_of_the_same_items_with_mcnemar(tmp_path):
    qs = [f"q{i}" for i in range(20)]
    ref = _write(tmp_path / "ref.jsonl", _rows(qs, [1] * 12 + [0] * 8))
    var = _write(tmp_path / "var.jsonl", _rows(qs, [1] * 2 + [0] * 10 + [1] * 2 + [0] * 6))
    c = _task(TaskScore("t", "acc", 0.6, 0.11, 20, [ref]), TaskScore("t", "acc", 0.2, 0.09, 20, [var]))
    assert c.paired is True
    assert c.discordant == (10, 2)
    assert abs(c.p_value - 0.03857) < 1e-4


def test_pairing_rule_and_item_stats(tmp_path):
    a = read_items([tmp_path / "missing.jsonl", _write(tmp_path / "a.jsonl", _rows(["x", "y"], [1, 0]))])
    assert a is not None and set(a) == {0, 1}
    assert paired_problem(a, None, "acc").startswith("no readable samples logged in B")
    assert paired_problem(a, a, "acc_norm") == "the samples have no per-item 'acc_norm'"
    assert paired_problem(a, a, "acc") is None
    s = item_stats(0.5, 0.1, 25)
    assert s is not None and abs(s.std - 0.5) < 1e-12 and s.n == 25
    assert item_stats(0.5, None, 25) is None and item_stats(0.5, 0.1, 1) is None
