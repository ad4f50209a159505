"""``e3bench train``: a training-efficiency suite on a small decoder trained from scratch.

Each named configuration is a TOML file (see ``configs/train/``); a file states only what it
changes from the defaults (:class:`~e3bench.train.suite.spec.TrainSpec`). All configurations
of a suite share the corpus, tokenizer, seeds and — unless a file says otherwise — model and
batch shape, so their loss curves compare at equal tokens. A configuration that diverges
(non-finite or exploding loss) is stopped and recorded; a configuration whose library is
missing or unsupported on the device is skipped with the reason; the suite always continues.

Modules: :mod:`.spec` (TOML configurations), :mod:`.data` (corpus, tokenizer, batches),
:mod:`.model` (the Llama-style decoder with optional multi-token-prediction heads),
:mod:`.loop` (training one configuration), :mod:`.compare` (against the baseline),
:mod:`.report` (REPORT.md and the plot), :mod:`.run` (the whole suite).
"""

from __future__ import annotations

from e3bench.train.suite.compare import compare
from e3bench.train.suite.run import run_suite
from e3bench.train.suite.spec import TrainSpec, expand_paths, load_spec

__all__ = ["TrainSpec", "compare", "expand_paths", "load_spec", "run_suite"]
