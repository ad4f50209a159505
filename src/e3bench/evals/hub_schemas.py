"""The built-in datasets: where each lives locally and on the Hugging Face hub, and how a hub row
becomes a row of e3bench's schema (the local data directory's layout).

One :class:`DatasetSpec` per dataset in :data:`DATASETS`; the resolver (:mod:`e3bench.evals.data`)
reads them. A mapper turns one hub row into e3bench's row; the prompts it writes are
lm-evaluation-harness's ``doc_to_text`` / ``doc_to_choice`` / ``doc_to_target`` of the same task
(quoted beside each mapper), except where a local export fixed the text first (BoolQ, COPA: see
docs/effectiveness.md, "Intended differences"). A local JSONL row in the hub's schema (a
``datasets`` export: it has every field of :attr:`DatasetSpec.hub_keys`) is mapped the same way.

e3bench's row schemas:

* multiple choice ``{"query": str, "choices": [str], "gold": int}`` (the task may append a fixed
  suffix such as ``"\\nAnswer:"``); MMLU and GSM8K keep the hub schema. SuperGLUE rows carry
  what their metrics need (:mod:`e3bench.evals.tasks.metrics`): MultiRC ``question_id`` (one row
  per answer option), ReCoRD ``entities`` and ``answers``
* partial context (WinoGrande) ``{"context_options": [str], "continuation": str, "gold": int}``
* single continuation (LAMBADA) ``{"context": str, "continuation": str}``
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass


# --------------------------------------------------------------------------- multiple choice
def _hellaswag_preprocess(text: str) -> str:
    """lm-eval's ``hellaswag.utils.preprocess`` (WikiHow artifacts removed)."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    text = text.replace("  ", " ")
    return text


def _map_hellaswag(doc: dict) -> dict:
    ctx = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
    return {
        "query": _hellaswag_preprocess(doc["activity_label"] + ": " + ctx),
        "choices": [_hellaswag_preprocess(e) for e in doc["endings"]],
        "gold": int(doc["label"]),
    }


def _gold_from_key(doc: dict) -> int:
    labels = list(doc["choices"]["label"])
    key = str(doc["answerKey"]).strip()
    if key in labels:
        return labels.index(key)
    # ARC sometimes labels 1..4 while answerKey is a letter (or the reverse)
    return ["A", "B", "C", "D", "E"].index(key) if key in "ABCDE" else int(key) - 1


def _map_arc(doc: dict) -> dict:
    # lm-eval: "Question: {{question}}\nAnswer:" (the task appends "\nAnswer:", as the local export)
    return {
        "query": "Question: " + doc["question"],
        "choices": list(doc["choices"]["text"]),
        "gold": _gold_from_key(doc),
    }


def _map_openbookqa(doc: dict) -> dict:
    return {"query": doc["question_stem"], "choices": list(doc["choices"]["text"]), "gold": _gold_from_key(doc)}


def _map_boolq(doc: dict) -> dict:
    # the llm-foundry export (our local layout) writes "Passage: ...\nQuestion: ...?"
    return {
        "query": f"Passage: {doc['passage']}\nQuestion: {doc['question']}?",
        "choices": ["no", "yes"],
        "gold": int(doc["label"]),
    }


def _map_copa(doc: dict) -> dict:
    # llm-foundry's COPA: "<premise without final period>, therefore|because" + lowercased choices
    connector = {"cause": "because", "effect": "therefore"}[doc["question"]]
    premise = doc["premise"].strip()
    if premise.endswith("."):
        premise = premise[:-1]

    def low(c: str) -> str:
        return c[0].lower() + c[1:]

    return {
        "query": f"{premise}, {connector}",
        "choices": [low(doc["choice1"]), low(doc["choice2"])],
        "gold": int(doc["label"]),
    }


def _map_piqa(doc: dict) -> dict:
    # lm-eval: "Question: {{goal}}\nAnswer:", choices [sol1, sol2]; the local export stops after
    # "\n" and the task appends "Answer:"
    return {"query": f"Question: {doc['goal']}\n", "choices": [doc["sol1"], doc["sol2"]], "gold": int(doc["label"])}


def _map_siqa(doc: dict) -> dict:
    # lm-eval social_iqa: "Q: {{context}} {{question}}\nA:", target (label|int) - 1
    return {
        "query": f"Q: {doc['context']} {doc['question']}\nA:",
        "choices": [doc["answerA"], doc["answerB"], doc["answerC"]],
        "gold": int(doc["label"]) - 1,
    }


def _map_commonsense_qa(doc: dict) -> dict:
    # lm-eval: "Question: {{question.strip()}}\nA. ..\n..E. ..\nAnswer:", choices A..E, target answerKey
    letters = ["A", "B", "C", "D", "E"]
    text = doc["choices"]["text"]
    body = "".join(f"\n{letter}. {text[i]}" for i, letter in enumerate(letters))
    return {"query": f"Question: {doc['question'].strip()}{body}\nAnswer:", "choices": letters,
            "gold": letters.index(doc["answerKey"])}  # fmt: skip


def _map_rte(doc: dict) -> dict:
    # lm-eval sglue_rte: "{{premise}}\nQuestion: {{hypothesis}} True or False?\nAnswer:"
    return {
        "query": f"{doc['premise']}\nQuestion: {doc['hypothesis']} True or False?\nAnswer:",
        "choices": ["True", "False"],
        "gold": int(doc["label"]),
    }


def _map_cb(doc: dict) -> dict:
    # lm-eval cb: "{{premise}}\nQuestion: {{hypothesis}}. True, False, or Neither?\nAnswer:"
    return {
        "query": f"{doc['premise']}\nQuestion: {doc['hypothesis']}. True, False, or Neither?\nAnswer:",
        "choices": ["True", "False", "Neither"],
        "gold": int(doc["label"]),
    }


def _map_wic(doc: dict) -> dict:
    # lm-eval wic: the word is sentence1[start1:end1]
    word = doc["sentence1"][doc["start1"] : doc["end1"]]
    return {
        "query": f"Sentence 1: {doc['sentence1']}\nSentence 2: {doc['sentence2']}\nQuestion: Is the word "
        f"'{word}' used in the same way in the two sentences above?\nAnswer:",
        "choices": ["no", "yes"],
        "gold": int(doc["label"]),
    }


def general_detokenize(text: str) -> str:
    """lm-eval's ``utils.general_detokenize``."""
    text = text.replace(" n't", "n't").replace(" )", ")").replace("( ", "(").replace('" ', '"').replace(' "', '"')
    return re.sub(r" (['.,])", r"\1", text)


def _map_wsc(doc: dict) -> dict:
    # lm-eval wsc (preprocess_wsc.default_doc_to_text): the pronoun marked *...* in the passage
    raw = doc["text"]
    pre = " ".join(raw.split()[: doc["span2_index"]])  # the hub's span indices count words
    post = raw[len(pre) + len(doc["span2_text"]) + 1 :]
    passage = general_detokenize(pre + f" *{doc['span2_text']}*" + post)
    return {
        "query": f"Passage: {passage}\nQuestion: In the passage above, does the pronoun "
        f"\"*{doc['span2_text']}*\" refer to \"*{doc['span1_text']}*\"?\nAnswer:",
        "choices": ["no", "yes"],
        "gold": int(doc["label"]),
    }


def _map_multirc(doc: dict) -> dict:
    # lm-eval multirc: "{{paragraph}}\nQuestion: {{question}}\nAnswer:", choices "{{answer}}\nIs the
    # answer correct? yes" then "... no" (the same requests). Intended difference: its target is
    # the label (1 = the answer is correct) used as a choice index, which points at "no" for a
    # correct answer; here gold is the index of the right choice: 0 ("yes") when label is 1.
    # question_id (paragraph-question) groups the answer options for EM.
    idx, ans = doc["idx"], doc["answer"]
    return {
        "query": f"{doc['paragraph']}\nQuestion: {doc['question']}\nAnswer:",
        "choices": [f"{ans}\nIs the answer correct? yes", f"{ans}\nIs the answer correct? no"],
        "gold": 0 if int(doc["label"]) == 1 else 1,
        "question_id": f"{idx['paragraph']}-{idx['question']}",
    }


def record_passage(passage: str) -> str:
    """lm-eval's ReCoRD ``doc_to_text``: the passage, then its "@highlight" lines as a list."""
    initial, *highlights = passage.strip().split("\n@highlight\n")
    return initial + "\n\n" + "".join(f"  - {h}.\n" for h in highlights)


def _map_record(doc: dict) -> dict:
    # lm-eval record: unique entities and answers sorted (process_docs); each choice is the query
    # with @placeholder filled, "  - " in front, no delimiter; gold is the first answer
    entities, answers = sorted(set(doc["entities"])), sorted(set(doc["answers"]))
    return {
        "query": record_passage(doc["passage"]),
        "choices": [f"  - {doc['query']}".replace("@placeholder", e) for e in entities],
        "gold": entities.index(answers[0]) if answers and answers[0] in entities else -1,
        "entities": entities,
        "answers": answers,
    }


# --------------------------------------------------------------------------- other shapes
def _map_winogrande(doc: dict) -> dict:
    # lm-eval: one context per option (the sentence up to "_" + the option), one continuation
    # (the rest of the sentence, stripped), gold from answer "1"/"2"
    idx = doc["sentence"].index("_")
    return {
        "context_options": [doc["sentence"][:idx] + doc["option1"], doc["sentence"][:idx] + doc["option2"]],
        "continuation": doc["sentence"][idx + 1 :].strip(),
        "gold": {"1": 0, "2": 1}[str(doc["answer"])],
    }


def _map_lambada(doc: dict) -> dict:
    # lm-eval: context = text.split(' ')[:-1] joined by ' ', target = ' ' + the last word
    words = doc["text"].split(" ")
    return {"context": " ".join(words[:-1]), "continuation": words[-1]}


def _identity(doc: dict) -> dict:
    return dict(doc)


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset lives locally and on the hub, and how to map hub rows."""

    local_name: str  # folder under the data dir
    hub_path: str
    hub_name: str | None  # the hub config (e.g. gsm8k's "main")
    hub_splits: dict[str, str]  # our split name -> hub split name; the first is the default split
    mapper: Callable[[dict], dict]
    #: fields that mark a row as the hub's schema (a local ``datasets`` export): such rows are
    #: mapped like hub rows; empty: local rows are taken as they are
    hub_keys: tuple[str, ...] = ()

    @property
    def default_split(self) -> str:
        """The split taken when none is asked for: the dataset's public evaluation split."""
        return next(iter(self.hub_splits))

    @property
    def hub_id(self) -> str:
        """``path (config)`` as messages show it."""
        return self.hub_path + (f" ({self.hub_name})" if self.hub_name else "")

    def map_local(self, row: dict) -> dict:
        """A local row in e3bench's schema: hub-schema rows mapped (line number kept), others as they are."""
        if not self.hub_keys or not all(k in row for k in self.hub_keys):
            return row
        out = self.mapper(row)
        if "_line" in row:
            out["_line"] = row["_line"]
        return out


_EVAL = {"test": "validation", "train": "train"}  # e3bench's "test" is the hub's public validation split
_SG = "aps/super_glue"  # lm-eval's SuperGLUE source (parquet; the script-based "super_glue" no longer loads)
DATASETS: dict[str, DatasetSpec] = {
    "mmlu": DatasetSpec("mmlu", "cais/mmlu", "all", {"test": "test", "val": "validation", "dev": "dev"}, _identity),
    "hellaswag": DatasetSpec("hellaswag", "Rowan/hellaswag", None, {"validation": "validation", "train": "train"}, _map_hellaswag,
                             ("activity_label", "ctx_a", "ctx_b", "endings", "label")),
    "arc_easy": DatasetSpec("arc_easy", "allenai/ai2_arc", "ARC-Easy", {"test": "test", "train": "train", "validation": "validation"}, _map_arc,
                            ("question", "choices", "answerKey")),
    "arc_challenge": DatasetSpec("arc_challenge", "allenai/ai2_arc", "ARC-Challenge", {"test": "test", "train": "train", "validation": "validation"}, _map_arc,
                                 ("question", "choices", "answerKey")),
    "boolq": DatasetSpec("boolq", _SG, "boolq", _EVAL, _map_boolq, ("passage", "question", "label")),
    "copa": DatasetSpec("copa", _SG, "copa", _EVAL, _map_copa, ("premise", "choice1", "choice2", "question", "label")),
    "openbookqa": DatasetSpec("openbook_qa", "allenai/openbookqa", "main", {"test": "test", "train": "train", "validation": "validation"}, _map_openbookqa,
                              ("question_stem", "choices", "answerKey")),
    "piqa": DatasetSpec("piqa", "baber/piqa", None, _EVAL, _map_piqa, ("goal", "sol1", "sol2", "label")),
    "siqa": DatasetSpec("siqa", "lighteval/siqa", None, _EVAL, _map_siqa, ("context", "question", "answerA", "answerB", "answerC", "label")),
    "commonsense_qa": DatasetSpec("commonsense_qa", "tau/commonsense_qa", None, _EVAL, _map_commonsense_qa, ("question", "choices", "answerKey")),
    "rte": DatasetSpec("rte", _SG, "rte", _EVAL, _map_rte, ("premise", "hypothesis", "label")),
    "cb": DatasetSpec("cb", _SG, "cb", _EVAL, _map_cb, ("premise", "hypothesis", "label")),
    "wic": DatasetSpec("wic", _SG, "wic", _EVAL, _map_wic, ("sentence1", "sentence2", "start1", "end1", "label")),
    "wsc": DatasetSpec("wsc", _SG, "wsc.fixed", _EVAL, _map_wsc, ("text", "span1_text", "span2_text", "span2_index", "label")),
    "multirc": DatasetSpec("multirc", _SG, "multirc", _EVAL, _map_multirc, ("paragraph", "question", "answer", "idx", "label")),
    "record": DatasetSpec("record", _SG, "record", _EVAL, _map_record, ("passage", "query", "entities", "answers")),
    "winogrande": DatasetSpec("winogrande", "allenai/winogrande", "winogrande_xl", _EVAL, _map_winogrande,
                              ("sentence", "option1", "option2", "answer")),
    "lambada_openai": DatasetSpec("lambada_openai", "EleutherAI/lambada_openai", "default", {"test": "test"}, _map_lambada, ("text",)),
    "gsm8k": DatasetSpec("gsm8k", "openai/gsm8k", "main", {"test": "test", "train": "train"}, _identity),
}  # fmt: skip
