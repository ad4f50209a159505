"""lm-evaluation-harness task YAMLs over e3bench's local data files (the ``E3BENCH_DATA_DIR``
layout of ``../shared/data``), so lm-eval scores the very items e3bench scores, fully offline
(``dataset_path: json``), with lm-eval's own prompt templates for each task.

Used by the agreement test (``tests/test_lmeval_agreement.py``) and ``benchmarks/eval_speed.py``;
pass the directory the YAMLs are written to as lm-eval's ``include_path``.
"""

from __future__ import annotations

import json
from pathlib import Path

from e3bench.evals.data import LINE_KEY, local_relpath, read_jsonl

__all__ = ["MC_TASKS", "read_jsonl", "write_jsonl", "mmlu_subject_rows", "mmlu_subject_split", "write_mc_task",
           "write_mmlu_task"]  # fmt: skip

#: e3bench multiple-choice task → (the file it reads under the data directory, lm-eval ``doc_to_text``)
MC_TASKS: dict[str, tuple[str, str]] = {
    "hellaswag": (str(local_relpath("hellaswag", "validation")), "{{query}}"),
    "arc_easy": (str(local_relpath("arc_easy", "test")), "{{query}}\\nAnswer:"),
    "boolq": (str(local_relpath("boolq", "test")), "{{query}}\\nAnswer:"),
    "copa": (str(local_relpath("copa", "test")), "{{query}}"),
    "openbookqa": (str(local_relpath("openbookqa", "test")), "{{query}}"),
}

_MC_YAML = """\
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {file}
test_split: test
output_type: multiple_choice
doc_to_text: "{text}"
doc_to_choice: choices
doc_to_target: gold
metric_list:
  - metric: acc
  - metric: acc_norm
"""

# lm-eval's MMLU template (mmlu/default/_default_template_yaml); few-shot examples are the first
# ``shots`` dev rows, so the dev file must hold one subject's rows (lm-eval runs MMLU per subject).
_MMLU_YAML = """\
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {file}
    dev: {dev}
test_split: test
fewshot_split: dev
fewshot_config:
  sampler: first_n
num_fewshot: {shots}
output_type: multiple_choice
description: "The following are multiple choice questions (with answers) about {{{{subject.replace('_', ' ')}}}}.\\n\\n"
doc_to_text: "{{{{question.strip()}}}}\\nA. {{{{choices[0]}}}}\\nB. {{{{choices[1]}}}}\\nC. {{{{choices[2]}}}}\\nD. {{{{choices[3]}}}}\\nAnswer:"
doc_to_choice: ["A", "B", "C", "D"]
doc_to_target: answer
metric_list:
  - metric: acc
  - metric: acc_norm
"""


def write_mc_task(yaml_dir: Path, task: str, data_file: Path, e3_task: str) -> None:
    """An lm-eval task named ``task`` over ``data_file`` with ``e3_task``'s prompt."""
    text = MC_TASKS[e3_task][1]
    Path(yaml_dir, f"{task}.yaml").write_text(_MC_YAML.format(task=task, file=data_file, text=text))


def write_mmlu_task(yaml_dir: Path, task: str, test_file: Path, dev_file: Path, shots: int) -> None:
    """An lm-eval MMLU task; with ``shots`` > 0, ``dev_file`` must hold one subject only."""
    Path(yaml_dir, f"{task}.yaml").write_text(
        _MMLU_YAML.format(task=task, file=test_file, dev=dev_file, shots=shots)
    )


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    """``rows`` as JSONL (without :func:`read_jsonl`'s line numbers), so lm-eval and e3bench read
    the same items."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = (json.dumps({k: v for k, v in r.items() if k != LINE_KEY}, ensure_ascii=False) + "\n" for r in rows)
    path.write_text("".join(lines), encoding="utf-8")
    return path


def mmlu_subject_rows(test_rows: list[dict], dev_rows: list[dict], subject: str, n: int) -> tuple[list, list]:
    """The first ``n`` test rows and all dev rows of one MMLU subject."""
    return [r for r in test_rows if r["subject"] == subject][:n], [r for r in dev_rows if r["subject"] == subject]


def mmlu_subject_split(data_dir: Path, out_dir: Path, subject: str, n: int) -> tuple[Path, Path]:
    """:func:`mmlu_subject_rows` written as ``out_dir/mmlu/*.jsonl`` (a data directory both
    e3bench's ``mmlu_5shot`` and lm-eval can read)."""
    test, dev = mmlu_subject_rows(
        read_jsonl(data_dir / "mmlu" / "test.jsonl"), read_jsonl(data_dir / "mmlu" / "dev.jsonl"), subject, n
    )
    return (
        write_jsonl(out_dir / "mmlu" / "test.jsonl", test),
        write_jsonl(out_dir / "mmlu" / "dev.jsonl", dev),
    )
