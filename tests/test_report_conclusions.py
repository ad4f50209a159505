"""The report's conclusions when the data cannot pick a winner, and records written before
fields existed (issue 14 leftovers): ties named, not broken arbitrarily; old records grouped
with new ones, or set apart as "workload unknown", never dropped or mis-paired."""

from __future__ import annotations

import pytest

from e3bench.report.render import build_report
from fakes_report import batch, record, save

SWEEP = dict(prompt_tokens=64, max_new_tokens=16, tasks=("hellaswag",), limit=20, batch_sizes=(1,))
#: config fields records of 2026-11-22 lack (docs/records/h100-2026-11-22): added since
LATE = ("num_fewshot", "include_path", "trust_remote_code", "backend_options", "meter_timeout_s")


def _line(md: str, start: str) -> str:
    (line,) = [ln for ln in md.splitlines() if ln.startswith(start)]
    return line


def _old(rec, config_hash="f22a752acbde1db9"):
    """``rec`` as e3bench wrote it before the late fields existed, under that version's hash."""
    return rec.model_copy(update={"config": {k: v for k, v in rec.config.items() if k not in LATE},
                                  "config_hash": config_hash})  # fmt: skip


def test_most_accurate_names_every_configuration_it_cannot_tell_apart(tmp_path):
    """The example sweep: fp32, bf16 and int8 all score 0.25 on 20 items; the summary named
    fp32 'most accurate' (the first of a three-way tie)."""
    for d in ("fp32", "bf16", "int8"):
        save(tmp_path, record(dtype=d, **SWEEP, task=("hellaswag", "acc_norm", 0.25, 0.0993, 20)))
    md = (build_report(tmp_path).out_dir / "summary.md").read_text()
    line = _line(md, "- **Most accurate")
    assert "no significant difference among" in line
    for d in ("fp32", "bf16", "int8"):
        assert f"pytorch {d}" in line
    assert "0.25 [0.112, 0.469] acc_norm on hellaswag" in line  # Wilson over 20 items


def test_most_accurate_with_overlapping_intervals_is_not_a_winner(tmp_path):
    save(tmp_path, record(**SWEEP, task=("hellaswag", "acc_norm", 0.30, 0.105, 20)))
    save(tmp_path, record(dtype="int8", **SWEEP, task=("hellaswag", "acc_norm", 0.25, 0.0993, 20)))
    line = _line((build_report(tmp_path).out_dir / "summary.md").read_text(), "- **Most accurate")
    assert line.startswith("- **Most accurate:** no significant difference among smollm2-135m pytorch fp32 cpu (0.3 [")
    assert "pytorch int8 cpu (0.25 [" in line


def test_most_accurate_names_one_winner_when_the_difference_is_significant(tmp_path):
    save(tmp_path, record(**SWEEP, task=("hellaswag", "acc_norm", 0.80, 0.028, 200)))
    save(tmp_path, record(dtype="int8", **SWEEP, task=("hellaswag", "acc_norm", 0.30, 0.032, 200)))
    line = _line((build_report(tmp_path).out_dir / "summary.md").read_text(), "- **Most accurate")
    assert line.startswith("- **Most accurate:** smollm2-135m pytorch fp32 cpu — 0.8 [")
    assert "int8" not in line and "no significant" not in line


def test_fastest_and_least_energy_with_tied_means_pick_no_winner(tmp_path):
    """Two configurations with the same decode speed and energy: neither is 'fastest'."""
    for d in ("fp32", "bf16"):
        save(tmp_path, record(dtype=d, **SWEEP, batches=[batch(1, [50.0, 52.0, 51.0], 0.03)]))
    save(tmp_path, record(dtype="int8", **SWEEP, batches=[batch(1, [10.0, 10.5, 11.0], 0.03)]))
    md = (build_report(tmp_path).out_dir / "summary.md").read_text()
    fast = _line(md, "- **Fastest decode")
    assert fast.startswith("- **Fastest decode:** batch 1: no significant difference among smollm2-135m pytorch ")
    assert "fp32 cpu (51 [" in fast and "bf16 cpu (51 [" in fast and "int8" not in fast  # int8 is clearly slower
    energy = _line(md, "- **Least energy per token")
    assert "no significant difference among" in energy and energy.count("pytorch") == 3  # one reading each, equal


def test_a_single_reading_each_is_not_a_tested_win(tmp_path):
    save(tmp_path, record(**SWEEP, batches=[batch(1, [50.0, 52.0, 51.0], 0.03)]))
    save(tmp_path, record(dtype="int8", **SWEEP, batches=[batch(1, [30.0, 31.0, 32.0], 0.05)]))
    line = _line((build_report(tmp_path).out_dir / "summary.md").read_text(), "- **Least energy per token")
    assert "fp32 cpu — 0.03 J per in+out token (not tested against smollm2-135m pytorch int8 cpu: one reading each" in line


def test_retained_exactly_at_99_percent_passes():
    from e3bench.report.stats import Interval
    from e3bench.report.variants import _retained_word

    assert _retained_word(Interval(1.0, 0.99, 1.01, 400, "x")) == "PASS"  # at or above, as the docs say
    assert _retained_word(Interval(1.0, 0.985, 1.01, 400, "x")) == "INCONCLUSIVE"


def test_old_records_aggregate_with_new_repeats_of_their_configuration(tmp_path):
    """A run recorded before num_fewshot/include_path/backend_options existed (its stored hash
    is that version's) and a new run of the same configuration are repeats: one row, 2 runs."""
    save(tmp_path, _old(record(**SWEEP, batches=[batch(1, [50.0, 51.0, 52.0], 0.030)], created="2026-11-22T10:00:00Z")))
    save(tmp_path, record(**SWEEP, batches=[batch(1, [54.0, 55.0, 56.0], 0.032)]))
    rep = build_report(tmp_path)
    (c,) = rep.configs
    assert c.runs == 2 and c.batches[1].decode_tokens_per_s.mean == pytest.approx(53.0)


def test_an_old_reference_is_found_for_a_new_variant(tmp_path):
    save(tmp_path, _old(record(**SWEEP, task=("hellaswag", "acc_norm", 0.35, 0.076, 40))))
    save(tmp_path, record(dtype="int8", **SWEEP, task=("hellaswag", "acc_norm", 0.35, 0.076, 40)))
    rep = build_report(tmp_path)
    assert [(v.variant.split()[2], v.reference.split()[2]) for v in rep.comparisons] == [("int8", "fp32")]
    assert len({c.workload for c in rep.configs}) == 1


def test_compare_groups_old_and_new_repeats_and_drops_nothing(tmp_path):
    """compare grouped records by stored hash: the old and the new fp32 run were two
    configurations with one pairing key, and one of them was silently left out."""
    from e3bench.report import diff

    save(tmp_path, _old(record(**SWEEP)), sweep="a")
    save(tmp_path, record(**SWEEP), sweep="a")
    save(tmp_path, record(dtype="int8", **SWEEP), sweep="a")
    save(tmp_path, record(**SWEEP), sweep="b")
    save(tmp_path, record(dtype="int8", **SWEEP), sweep="b")
    side = diff.resolve(str(tmp_path / "a"))
    configs = diff.configurations(side)
    assert sorted(len(c.records) for c in configs) == [1, 2]
    pairing = diff.pair(side, diff.resolve(str(tmp_path / "b")))
    assert sorted(len(p.a.records) for p in pairing.pairs) == [1, 2] and pairing.unpaired == []
    assert all(p.differs == [] for p in pairing.pairs)  # no 'trust_remote_code (none) → False'


def test_a_record_without_its_workload_is_set_apart_and_named(tmp_path):
    """A record that lacks prompt_tokens cannot be placed in a workload: it is its own group,
    labelled 'workload unknown', warned about, and no reference or variant of anything."""
    save(tmp_path, record(**SWEEP))
    rec = record(dtype="int8", **SWEEP)
    save(tmp_path, rec.model_copy(update={"config": {k: v for k, v in rec.config.items() if k != "prompt_tokens"}}))
    rep = build_report(tmp_path)
    assert rep.comparisons == []
    (odd,) = [c for c in rep.configs if c.workload.unknown]
    assert odd.workload.label == "workload unknown (the record lacks prompt_tokens)"
    md = (rep.out_dir / "summary.md").read_text()
    assert "workload unknown (the record lacks prompt_tokens): compared with no other configuration" in md
    assert "records in the workload unknown (the record lacks prompt_tokens) are compared with nothing" in md


def test_accuracy_over_several_tasks_stays_inside_0_1():
    """Two tasks scored 0.02 and 0.04 (±0.03 each): the mean ± 1.96 combined SEs went to -0.011."""
    from e3bench.report.compare import TaskScore
    from e3bench.report.figures import accuracy
    from fakes_report import summary

    c = summary("fp32", tasks={t: TaskScore(t, "acc", v, 0.03, 50) for t, v in (("arc_easy", 0.02), ("piqa", 0.04))})
    iv = accuracy(c)
    assert iv.estimate == pytest.approx(0.03) and iv.low == 0.0
    assert iv.high == pytest.approx(0.03 + 1.96 * (2 * 0.03**2) ** 0.5 / 2) and "clipped" in iv.method


def test_most_accurate_over_several_tasks_uses_the_se_of_each_mean(tmp_path):
    """Means over two tasks, 0.60 against 0.50: with a standard error of 0.05 per task the SE of
    each mean is 0.0354 and of the difference 0.05, half-width 0.098 < 0.10: one winner; at
    0.06 per task the half-width is 0.1176: tied."""
    from e3bench.report.compare import TaskScore
    from e3bench.report.sections import _accuracy_tied
    from fakes_report import summary

    def two(dtype, v, se):
        return summary(dtype, tasks={t: TaskScore(t, "acc", v, se, 200) for t in ("arc_easy", "piqa")})

    assert not _accuracy_tied(two("fp32", 0.60, 0.05), two("int8", 0.50, 0.05))
    assert _accuracy_tied(two("fp32", 0.60, 0.06), two("int8", 0.50, 0.06))
