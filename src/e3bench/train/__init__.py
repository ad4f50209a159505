"""Training scenarios: ``finetune`` (LoRA / full fine-tuning on classification tasks for the
three architectures) and ``train`` (a training-efficiency suite on a small decoder trained from
scratch). Both meter energy with the same meters as inference (:mod:`e3bench.energy.meters`) and write
JSON records with units in field names (:mod:`e3bench.train.records`).

Layout: :mod:`.finetune` (config, data, model, scorer, state, loop, checkpoint, record, run),
:mod:`.suite` (spec, data, model, loop, compare, report, run), :mod:`.shared` (device, memory,
optim, step, energy: what both use, including the one gradient step), :mod:`.records`,
:mod:`.cli` (the command-line entry points) and :mod:`.bpe` (a locally trained tokenizer).

Heavy imports (torch, transformers, peft, bitsandbytes, galore-torch, matplotlib) happen inside
the functions that need them; importing this package is cheap.
"""

from __future__ import annotations

__all__ = ["finetune", "suite"]
