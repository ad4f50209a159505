"""The record of an architecture comparison (``kind: "architectures"``): which run records and
fine-tuning records of one sweep folder belong to it, which models are random-weights fixtures
(and how that is known), and what every architecture was given (tasks, few-shot prompts, the
held-out items). Written by :mod:`e3bench.sweep.architectures` as
``<output_dir>/<sweep>/architectures.json``; read by :mod:`e3bench.report.architecture`.

The measurements themselves stay in the records they come from (one run record per model: speed
and energy at the sweep's input length, the few-shot scores; one fine-tuning record per model
and task): this record only ties them together, so nothing is stored twice.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

#: The document kind (the store hands documents with a ``kind`` to their own readers).
KIND = "architectures"
#: The file name inside the sweep folder.
FILE_NAME = "architectures.json"
#: A file inside a model folder that marks it as a random-weights test fixture (written by the
#: tiny-model builder of the test suite): its numbers measure the code path, not a model.
FIXTURE_MARKER = "e3bench-fixture.json"


class ArchModel(BaseModel):
    """One compared model: ``model`` as the sweep file names it; ``fixture`` true when its weights
    are random (``fixture_note`` says how that is known: the marker file in its folder, or the
    sweep file's ``fixtures`` list); ``inference_hash`` the config hash of its run record (the
    record's file stem); ``finetune_hashes`` task → config hash of its fine-tuning record."""

    model: str
    fixture: bool = False
    fixture_note: str | None = None
    inference_hash: str | None = None
    finetune_hashes: dict[str, str] = {}


class ArchTask(BaseModel):
    """One task every model was fine-tuned on (and the generators evaluated few-shot on):
    ``fewshot_label`` is the task name of the few-shot scores in the run records, ``items_file``
    the JSONL of the held-out items with their ``fewshot``-shot prompts and ``items_sha256`` its
    SHA-256; ``n_eval`` / ``n_train`` the held-out and training items; ``majority_class_accuracy``
    of the held-out items; ``target_accuracy`` the fine-tuning target."""

    task: str
    fewshot_label: str
    items_file: str
    items_sha256: str
    n_eval: int
    n_train: int
    majority_class_accuracy: float
    target_accuracy: float


class ArchitecturesRecord(BaseModel):
    """An architecture comparison (see module doc). ``fewshot``: solved training items before
    each held-out item in the generators' prompts; ``prompt_tokens``: the input length of every
    inference measurement; ``finetune``: the fine-tuning settings shared by every model and task."""

    kind: Literal["architectures"] = KIND
    schema_version: int = 1
    sweep: str
    created_utc: str
    prompt_tokens: int
    fewshot: int
    tasks: list[ArchTask]
    models: list[ArchModel]
    finetune: dict = {}
    notes: list[str] = Field(default_factory=list)
