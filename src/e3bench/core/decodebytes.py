"""Bytes one decode step reads: the one rule behind the roofline, applied by every backend.

Decoding one token multiplies the hidden state by every weight matrix once and looks up one row
of each embedding table. So, for every backend and precision, a decode step reads:

* each weight tensor **once**, at the bytes it is **stored** in (a quantized tensor: its packed
  data plus its scales / zero points);
* an embedding **lookup** table as **one row** (the token's), not the whole table;
* a **tied** input/output embedding as the LM head (the full matrix: every logit needs it) plus
  the looked-up row — once, however many copies a file holds (an ONNX export stores the table
  for the lookup and a transposed copy for the LM head; the copy is a matrix, the table a lookup,
  so the sum is the same);
* the **KV cache is not included** (at the benchmark's context lengths it is a few percent of the
  weights; the roofline bound is the weights-only bound).

Each backend lists its tensors as :class:`WeightTensor` and :func:`decode_step_bytes` sums them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

#: how ``LoadInfo.weights_bytes`` (and the roofline's ``weights_bytes``) is counted, in words
RULE = (
    "bytes read per decode step: each weight tensor once at its stored size (quantized: packed data + "
    "scales), an embedding lookup as one row of its table, a tied input/output embedding as the LM head "
    "(full matrix) plus the looked-up row; KV cache not included"
)

Role = Literal["matrix", "lookup", "tied"]


@dataclass(frozen=True)
class WeightTensor:
    """One stored weight: its bytes, its rows (first dimension of a lookup table) and its role:
    ``matrix`` (read whole), ``lookup`` (one row per token) or ``tied`` (read whole as the LM
    head and one row as the lookup)."""

    nbytes: int
    rows: int = 1
    role: Role = "matrix"

    def step_bytes(self) -> int:
        """Bytes a decode step reads of this tensor."""
        row = self.nbytes // max(self.rows, 1)
        return {"matrix": self.nbytes, "lookup": row, "tied": self.nbytes + row}[self.role]


def decode_step_bytes(tensors: Iterable[WeightTensor]) -> int:
    """Bytes one decode step reads of ``tensors`` (see the module docstring for the rule)."""
    return sum(t.step_bytes() for t in tensors)
