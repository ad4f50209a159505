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

__all__ = ["GSM8K_STOP", "HUB_FIXTURES", "LOCAL_COPIES", "MC_TASKS", "OWN_TASKS", "mmlu_subject_rows",
           "mmlu_subject_split", "own_task_data", "read_jsonl", "to_hub_row", "write_gsm8k_task", "write_jsonl",
           "write_mc_task", "write_mmlu_task", "write_own_task"]  # fmt: skip

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


# ------------------------------------------------------- lm-eval's own task YAMLs, local data
#: e3bench task → (lm-eval's own task YAML under ``lm_eval/tasks``, the split lm-eval scores)
OWN_TASKS: dict[str, tuple[str, str]] = {
    "arc_challenge": ("arc/arc_challenge.yaml", "test"),
    "piqa": ("piqa/piqa.yaml", "validation"),
    "winogrande": ("winogrande/default.yaml", "validation"),
    "lambada_openai": ("lambada/lambada_openai.yaml", "test"),
    "siqa": ("siqa/siqa.yaml", "validation"),
    "commonsense_qa": ("commonsense_qa/default.yaml", "validation"),
    "rte": ("super_glue/rte/default.yaml", "validation"),
    "cb": ("super_glue/cb/default.yaml", "validation"),
    "wic": ("super_glue/wic/default.yaml", "validation"),
    "wsc": ("super_glue/wsc/default.yaml", "validation"),
    "multirc": ("super_glue/multirc/default.yaml", "validation"),
}  # record: lm-eval's record/util.py imports transformers.data.metrics, gone in transformers 5
# (tests/test_superglue.py checks e3bench's ReCoRD requests against lm-eval's doc_to_text by hand)

#: the shared data's local copies (llm-foundry exports) of some of them
LOCAL_COPIES = ("arc_challenge", "piqa", "winogrande", "lambada_openai")
#: hub-schema fixtures of the others (``tests/data/hub/<task>/test.jsonl``)
HUB_FIXTURES = Path(__file__).resolve().parents[1] / "data" / "hub"

_OWN_YAML = """\
include: {include}
task: {task}
tag: []
dataset_path: json
dataset_name: null
dataset_kwargs:
  data_files:
    {split}: {file}
training_split: null
validation_split: {validation}
test_split: {test}
"""


def write_own_task(yaml_dir: Path, task: str, hub_file: Path, e3_task: str) -> None:
    """An lm-eval task named ``task``: lm-eval's own YAML of ``e3_task`` (prompts, targets,
    metrics, its ``!function`` helpers) over ``hub_file``, a JSONL file in the hub's schema."""
    import lm_eval.tasks

    rel, split = OWN_TASKS[e3_task]
    include = Path(lm_eval.tasks.__file__).parent / rel
    Path(yaml_dir, f"{task}.yaml").write_text(_OWN_YAML.format(
        include=include, task=task, split=split, file=hub_file,
        validation=split if split == "validation" else "null", test=split if split == "test" else "null",
    ))  # fmt: skip


def to_hub_row(e3_task: str, row: dict) -> dict:
    """A row of the shared data's local copy (e3bench's schema) written back in the hub's schema,
    so lm-eval's own task YAML can read the very same item (requests are identical)."""
    if e3_task == "arc_challenge":
        labels = ["A", "B", "C", "D", "E"][: len(row["choices"])]
        return {"question": row["query"].removeprefix("Question: "),
                "choices": {"text": row["choices"], "label": labels}, "answerKey": labels[row["gold"]]}  # fmt: skip
    if e3_task == "piqa":
        goal = row["query"].removeprefix("Question: ").removesuffix("\n")
        return {"goal": goal, "sol1": row["choices"][0], "sol2": row["choices"][1], "label": row["gold"]}
    if e3_task == "lambada_openai":
        return {"text": row["context"] + " " + row["continuation"]}
    if e3_task == "winogrande":
        import os

        c0, c1 = row["context_options"]
        pre = os.path.commonprefix([c0, c1])  # any cut gives lm-eval the same two contexts
        assert "_" not in pre, row
        return {"sentence": pre + "_ " + row["continuation"], "option1": c0[len(pre):], "option2": c1[len(pre):],
                "answer": str(row["gold"] + 1)}  # fmt: skip
    raise KeyError(e3_task)


def own_task_data(data_dir: Path, out_dir: Path, limit: int) -> dict[str, tuple[Path, Path]]:
    """For every task of :data:`OWN_TASKS`: (a data directory e3bench reads, the hub-schema file
    lm-eval reads) holding the same first ``limit`` items: the shared data's local copy for
    :data:`LOCAL_COPIES` (lm-eval's file converted by :func:`to_hub_row`), else the hub fixture
    (read by both)."""
    out: dict[str, tuple[Path, Path]] = {}
    for task in OWN_TASKS:
        if task in LOCAL_COPIES:
            rel = local_relpath(task, "test")
            rows = read_jsonl(data_dir / rel)[:limit]
            mine = write_jsonl(out_dir / "local" / rel, rows)
            hub = write_jsonl(out_dir / "hub" / rel, [to_hub_row(task, r) for r in rows])
            out[task] = (mine.parent.parent, hub)
        else:
            hub = write_jsonl(out_dir / "hub" / local_relpath(task, "test"),
                              read_jsonl(HUB_FIXTURES / task / "test.jsonl")[:limit])  # fmt: skip
            out[task] = (hub.parent.parent, hub)
    return out


# -------------------------------------------------- GSM8K: lm-eval's own gsm8k.yaml, local data
GSM8K_STOP = ("Question:", "</s>", "<|im_end|>")  # lm-eval's gsm8k.yaml ``until``

# lm-eval's own YAML over a local file (as _OWN_YAML), 0-shot, greedy, with gsm8k.yaml's stop strings
_GSM8K_YAML = _OWN_YAML + """\
fewshot_split: null
num_fewshot: 0
generation_kwargs:
  until: {until}
  do_sample: false
  temperature: 0.0
  max_gen_toks: {max_gen_toks}
"""


def write_gsm8k_task(yaml_dir: Path, task: str, test_file: Path, max_gen_toks: int = 256) -> None:
    """An lm-eval task named ``task``: lm-eval's own ``gsm8k.yaml`` (prompt, stop strings, strict
    and flexible filters) over ``test_file`` (the hub's schema, as the local copy is), 0-shot (e3bench
    takes few-shot examples in order, lm-eval at random), at most ``max_gen_toks`` generated tokens
    (e3bench's GSM8K ``max_new_tokens``; both default to 256)."""
    import lm_eval.tasks

    include = Path(lm_eval.tasks.__file__).parent / "gsm8k" / "gsm8k.yaml"
    Path(yaml_dir, f"{task}.yaml").write_text(_GSM8K_YAML.format(
        include=include, task=task, split="test", file=test_file, validation="null", test="test", until=json.dumps(list(GSM8K_STOP)), max_gen_toks=max_gen_toks))  # fmt: skip
