"""Issue 20.5: the log-likelihood shift of a reduced-precision variant against its reference,
per task (median and p90 of |Δ loglik| per item, nats), in the variants' quality table and CSV."""

import json

import pytest

from e3bench.report.compare import TaskScore
from e3bench.report.items import read_items
from e3bench.report.llshift import COLUMN, item_logliks, loglik_shift, shift_cell
from e3bench.report.sections import cmp_csv_rows, quality_rows
from e3bench.report.variants import compare_to_reference
from fakes_report import summary


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _mc(shifts, *, contexts=None, n=10):
    """Four-choice items; item i's every choice moved by ``shifts[i]`` nats (alternating sign)."""
    rows = []
    for i in range(n):
        base = [-1.0 - i, -2.0, -3.0, -4.0]
        d = shifts[i] if shifts else 0.0
        lls = [x + (d if j % 2 else -d) for j, x in enumerate(base)]
        rows.append({"doc_id": i, "context": (contexts or [f"c{k}" for k in range(n)])[i],
                     "choices": ["a", "b", "c", "d"], "gold": 0, "loglikelihoods": lls,
                     "acc": float(lls.index(max(lls)) == 0)})  # fmt: skip
    return rows


def test_shift_is_median_and_p90_of_per_item_mean_absolute_change(tmp_path):
    shifts = [0.1 * k for k in range(10)]  # 0.0 .. 0.9 nats per item
    ref = read_items([_write(tmp_path / "ref.jsonl", _mc(None))])
    var = read_items([_write(tmp_path / "var.jsonl", _mc(shifts))])
    s = loglik_shift(ref, var)
    assert s is not None and (s.n_items, s.n_logliks) == (10, 40)
    assert s.median_nats == pytest.approx(0.45) and s.p90_nats == pytest.approx(0.81)
    assert shift_cell(s) == "0.45 / 0.81 (10 items)"
    assert loglik_shift(ref, ref).median_nats == 0.0


def test_other_items_or_no_logliks_give_no_shift(tmp_path):
    ref = read_items([_write(tmp_path / "ref.jsonl", _mc(None))])
    other = read_items([_write(tmp_path / "o.jsonl", _mc([1.0] * 10, contexts=[f"x{k}" for k in range(10)]))])
    assert loglik_shift(ref, other) is None
    bare = read_items([_write(tmp_path / "b.jsonl", [{"doc_id": i, "context": f"c{i}", "acc": 1.0} for i in range(10)])])
    assert loglik_shift(ref, bare) is None and loglik_shift(ref, None) is None
    assert shift_cell(None) is None


def test_loglik_fields_of_every_task_shape():
    assert item_logliks({"loglikelihoods": [-1, -2.5]}) == [-1.0, -2.5]
    assert item_logliks({"loglikelihood": -3.0}) == [-3.0]  # single continuation, perplexity
    assert item_logliks({"filtered_resps": [[-1.5, False], [-0.5, True]]}) == [-1.5, -0.5]  # lm-eval
    assert item_logliks({"acc": 1.0}) is None and item_logliks({"loglikelihoods": [float("nan")]}) is None


def test_variants_table_and_csv_show_the_shift_with_units(tmp_path):
    shifts = [1.3] * 5 + [2.0] * 5
    ref_f, var_f = _write(tmp_path / "ref.jsonl", _mc(None)), _write(tmp_path / "var.jsonl", _mc(shifts))
    ref = summary("fp32", tasks={"hellaswag": TaskScore("hellaswag", "acc", 0.4, 0.16, 10, [ref_f])})
    var = summary("int8", tasks={"hellaswag": TaskScore("hellaswag", "acc", 0.4, 0.16, 10, [var_f])})
    (comp,) = compare_to_reference([ref, var])
    (row,) = quality_rows([comp])
    assert COLUMN == "|Δ loglik| median / p90 (nats)" and row[COLUMN] == "1.65 / 2 (10 items)"
    csv = {r["measure"]: r for r in cmp_csv_rows([comp]) if r["measure"].startswith("abs_loglik")}
    assert csv["abs_loglik_shift_median_nats"]["estimate"] == pytest.approx(1.65)
    assert csv["abs_loglik_shift_p90_nats"]["estimate"] == pytest.approx(2.0)
    assert csv["abs_loglik_shift_p90_nats"]["n"] == 10 and "nats" in csv["abs_loglik_shift_p90_nats"]["method"]
    # without samples on the reference side: no shift, the cell says nothing
    ref_bare = summary("fp32", tasks={"hellaswag": TaskScore("hellaswag", "acc", 0.4, 0.16, 10, [])})
    (comp,) = compare_to_reference([ref_bare, var])
    assert quality_rows([comp])[0][COLUMN] is None
