"""``e3bench finetune``: LoRA (peft) or full fine-tuning on classification tasks, for
encoder-only, encoder-decoder and decoder-only models, measured for speed, memory, energy and
time/energy to a target validation accuracy.

How each architecture classifies (the ``method`` block of the record says which one ran):

* **labels** mode — every item has the same answer set (BoolQ: ``["no", "yes"]``):
  - encoder-only: a sequence-classification head (``AutoModelForSequenceClassification``,
    one logit per label) on the query; with LoRA the head is trained fully (peft
    ``modules_to_save``), the encoder through adapters.
  - decoder-only: *verbalizer* — the LM head's logits for the first token of ``" " + label``
    at the last position of ``query + "\\nAnswer:"``; no new parameters, so the pretrained LM
    head's knowledge of "yes"/"no" is used from step 0.
  - encoder-decoder: the same verbalizer on the decoder's first step (encoder reads the query).
* **choices** mode — answers differ per item (COPA, ARC): each (query, choice) pair is scored and
  the scores are compared with a softmax over the item's choices:
  - encoder-only: one-logit classification head on the pair ``[CLS] query [SEP] choice``;
  - decoder-only / encoder-decoder: sum of log-probabilities of the choice's tokens (lm-eval's
    ``acc``) after ``query`` (decoder) or as the decoder target (encoder-decoder).
  Labels mode falls back to choices mode when two labels share their first token.

The loss is the cross-entropy of the gold answer over these scores; accuracy is argmax = gold.
"""

from __future__ import annotations

from e3bench.train.finetune.config import FT_TASKS, FinetuneConfig
from e3bench.train.finetune.data import TaskData, load_task_data
from e3bench.train.finetune.run import run_finetune

__all__ = ["FT_TASKS", "FinetuneConfig", "TaskData", "load_task_data", "run_finetune"]
